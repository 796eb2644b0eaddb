"""The format registry: every format declared once, its module imported only when needed."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks_lib.formats import ALIASES, FORMATS, REGISTRY, canonical_format, load_spec

ROOT = Path(__file__).resolve().parents[2]
MARKDOWN_MODULES = {
    "tasks_lib.formats.markdown",
    "tasks_lib.formats.agentos_md",
    "tasks_lib.formats.speckit",
}


def test_the_names_are_the_registrys():
    assert FORMATS == ("agent-os", "agent-os-md", "taskmaster", "spec-kit")
    assert all(REGISTRY[name].name == name for name in FORMATS)
    assert ALIASES == {
        "agentos": "agent-os",
        "agent-os-json": "agent-os",
        "agentos-md": "agent-os-md",
        "agent-os-markdown": "agent-os-md",
        "task-master": "taskmaster",
        "speckit": "spec-kit",
    }
    for alias, name in ALIASES.items():
        assert canonical_format(alias.upper()) == name
    assert not set(ALIASES) & set(FORMATS)


@pytest.mark.parametrize("name", FORMATS)
def test_each_entry_names_a_reader_and_a_write_back_that_exist(name):
    fmt = REGISTRY[name]
    module = importlib.import_module(fmt.module)
    assert callable(getattr(module, fmt.reader))
    document = getattr(module, fmt.document)
    assert document.name == name  # the DocumentFormat is the format's own
    assert callable(document.for_spec)
    assert fmt.plan_files and all(not Path(p).is_absolute() for p in fmt.plan_files)


def _modules_after_loading(path: Path) -> set[str]:
    code = (
        "import json, sys\n"
        "from tasks_lib.formats import load_spec\n"
        f"load_spec({str(path)!r})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tasks_lib'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return set(json.loads(out.stdout))


def test_reading_an_agent_os_tasks_json_does_not_import_the_markdown_formats(tmp_path):
    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "tasks.json").write_text(
        json.dumps({"tasks": [{"id": "1", "description": "a", "status": "pending"}]})
    )
    (folder / "spec.md").write_text("# spec\n")
    (folder / "worker-prompt.md").write_text("Do $task_id\n")
    loaded = _modules_after_loading(folder)
    assert "tasks_lib.formats.agentos" in loaded
    assert not MARKDOWN_MODULES & loaded


def test_reading_a_spec_kit_tasks_md_does_not_import_the_other_formats(tmp_path):
    folder = tmp_path / "specs" / "001-a"
    folder.mkdir(parents=True)
    (folder / "tasks.md").write_text("- [ ] T001 a\n")
    loaded = _modules_after_loading(folder)
    assert "tasks_lib.formats.speckit" in loaded
    assert (
        not {
            "tasks_lib.formats.agentos_md",
            "tasks_lib.formats.taskmaster",
            "tasks_lib.formats.agentos",
        }
        & loaded
    )


def test_a_forced_format_is_looked_for_where_the_registry_says(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tasks.json").write_text(
        json.dumps(
            {
                "tasks": [
                    {
                        "id": 1,
                        "title": "a",
                        "description": "",
                        "status": "pending",
                        "dependencies": [],
                        "details": "",
                        "testStrategy": "",
                    }
                ]
            }
        )
    )
    spec = load_spec(tmp_path, format="task-master")
    assert spec.format == "taskmaster"
    assert spec.tasks_path == tmp_path / "tasks" / "tasks.json"
