"""Which format a path holds, which file is the plan, and how bad input reaches the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks_lib.errors import SpecError
from tasks_lib.formats import FORMATS, detect_format, document_format, load_spec
from tasks_lib.formats.agentos import AgentOsJson
from tasks_lib.formats.agentos_md import AgentOsMarkdown
from tasks_lib.formats.speckit import SpecKitMarkdown
from tasks_lib.formats.taskmaster import TaskMasterJson

from .conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SPECKIT_MD = "## Phase 1\n- [ ] T001 [P] Create a.py\n"
AGENTOS_MD = "## Tasks\n- [ ] 1. First\n  - [ ] 1.1 step\n"


def tm_task(i, **kw):
    return {
        "id": i,
        "title": f"t{i}",
        "description": "",
        "status": "pending",
        "dependencies": [],
        "priority": "low",
        "details": "",
        "testStrategy": "",
        **kw,
    }


def put(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rel(result, base: Path):
    name, folder, plan = result
    return name, folder.relative_to(base).as_posix(), plan.relative_to(base).as_posix()


# ------------------------------------------------------------------------------ detection


def test_an_agent_os_folder_with_json_and_md_is_read_from_the_json(tmp_path):
    shutil.copytree(EXAMPLES / "small-feature", tmp_path / "sf")
    assert rel(detect_format(tmp_path / "sf"), tmp_path) == ("agent-os", "sf", "sf/tasks.json")
    # --format picks the other file of the same folder
    assert rel(detect_format(tmp_path / "sf", "agent-os-md"), tmp_path) == (
        "agent-os-md",
        "sf",
        "sf/tasks.md",
    )
    spec = load_spec(tmp_path / "sf", format="agent-os-md")
    assert [u.id for u in spec.units] == ["1", "2", "3"]
    assert [u.deps for u in spec.units] == [[], ["1"], ["2"]]  # the wave prose is not read


@pytest.mark.parametrize("text, fmt", [(SPECKIT_MD, "spec-kit"), (AGENTOS_MD, "agent-os-md")])
def test_a_tasks_md_is_told_apart_by_its_ids(tmp_path, text, fmt):
    put(tmp_path / "f" / "tasks.md", text)
    assert rel(detect_format(tmp_path / "f"), tmp_path) == (fmt, "f", "f/tasks.md")
    assert rel(detect_format(tmp_path / "f" / "tasks.md"), tmp_path) == (fmt, "f", "f/tasks.md")


@pytest.mark.parametrize(
    "start", [".", ".taskmaster", ".taskmaster/tasks", ".taskmaster/tasks/tasks.json"]
)
def test_task_master_projects(tmp_path, start):
    shutil.copytree(FIXTURES / "taskmaster" / "tagged", tmp_path / "p")
    assert rel(detect_format(tmp_path / "p" / start), tmp_path / "p") == (
        "taskmaster",
        ".taskmaster/tasks",
        ".taskmaster/tasks/tasks.json",
    )


@pytest.mark.parametrize("start", [".", "tasks", "tasks/tasks.json"])
def test_legacy_task_master_projects(tmp_path, start):
    shutil.copytree(FIXTURES / "taskmaster" / "legacy", tmp_path / "p")
    assert rel(detect_format(tmp_path / "p" / start), tmp_path / "p") == (
        "taskmaster",
        "tasks",
        "tasks/tasks.json",
    )


@pytest.mark.parametrize(
    "data, fmt",
    [
        ({"master": {"tasks": []}}, "taskmaster"),  # tagged
        ({"tasks": [tm_task(1)], "metadata": {}}, "taskmaster"),  # legacy, by its tasks
        (
            {"tasks": [{"id": 1, "description": "x", "status": "pending"}], "metadata": {}},
            "taskmaster",
        ),  # a tie: Task Master's "metadata" decides
        ({"tasks": [{"id": "1", "description": "x", "status": "pending"}]}, "agent-os"),  # tie
        ({"version": "2.0", "tasks": [tm_task(1)]}, "agent-os"),  # Agent OS top-level keys
        (
            {"tasks": [{"id": "1", "type": "parent", "description": "x", "parallelization": {}}]},
            "agent-os",
        ),
        (
            {"tasks": [{"id": "1", "description": "x", "depends_on": []}], "metadata": {}},
            "agent-os",
        ),
        ([1, 2], "agent-os"),  # not a plan at all: the Agent OS reader explains
    ],
)
def test_a_tasks_json_is_told_apart_by_its_shape(tmp_path, data, fmt):
    put(tmp_path / "s" / "tasks.json", json.dumps(data))
    assert detect_format(tmp_path / "s")[0] == fmt


def test_broken_json_under_taskmaster_is_read_as_task_master(tmp_path):
    put(tmp_path / ".taskmaster" / "tasks" / "tasks.json", '{"master": ')
    assert detect_format(tmp_path)[0] == "taskmaster"
    with pytest.raises(SpecError) as exc:
        load_spec(tmp_path)
    assert exc.value.problems[0].message.startswith("invalid JSON")


def test_a_repository_with_one_spec_kit_feature(tmp_path):
    put(tmp_path / "specs" / "001-a" / "tasks.md", SPECKIT_MD)
    assert rel(detect_format(tmp_path), tmp_path) == (
        "spec-kit",
        "specs/001-a",
        "specs/001-a/tasks.md",
    )


def test_a_repository_with_several_features_asks_for_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    put(tmp_path / "specs" / "001-a" / "tasks.md", SPECKIT_MD)
    put(tmp_path / "specs" / "002-b" / "tasks.md", SPECKIT_MD)
    with pytest.raises(SpecError) as exc:
        detect_format(Path("."))
    assert str(exc.value) == (
        ". : holds 2 spec-kit features (specs/001-a, specs/002-b) — pass one feature folder"
    ).replace(". :", ".:")


@pytest.mark.parametrize(
    "setup, message",
    [
        (
            lambda p: None,
            (
                "x: has no tasks.json or tasks.md — pass an Agent OS or spec-kit spec "
                "folder, or a Task Master project (.taskmaster/tasks/tasks.json)"
            ),
        ),
        (
            lambda p: (p / ".taskmaster" / "docs").mkdir(parents=True),
            (
                "x: has a .taskmaster folder but no .taskmaster/tasks/tasks.json — "
                "create the tasks first (task-master parse-prd)"
            ),
        ),
        (
            lambda p: put(p / "notes.txt", "x"),
            (
                "x: has no tasks.json or tasks.md — pass an Agent "
                "OS or spec-kit spec folder, or a Task Master project "
                "(.taskmaster/tasks/tasks.json)"
            ),
        ),
    ],
)
def test_folders_without_a_plan(tmp_path, monkeypatch, setup, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    setup(tmp_path / "x")
    with pytest.raises(SpecError) as exc:
        detect_format(Path("x"))
    assert str(exc.value) == message


def test_format_names_and_aliases(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    put(tmp_path / "f" / "tasks.md", SPECKIT_MD)
    assert detect_format(Path("f"), "speckit")[0] == "spec-kit"
    assert detect_format(Path("f"), "Agent-OS-MD")[0] == "agent-os-md"
    with pytest.raises(SpecError) as exc:
        detect_format(Path("f"), "jira")
    assert str(exc.value) == ('--format: unknown format "jira" — use one of: ' + ", ".join(FORMATS))
    with pytest.raises(SpecError) as exc:
        detect_format(Path("f"), "task-master")
    assert str(exc.value) == (
        "f: has no tasks.json for format taskmaster — point at the "
        "folder (or file) that holds the plan"
    )


def test_tag_on_another_format_is_a_warning(tmp_path):
    put(tmp_path / "f" / "tasks.md", SPECKIT_MD)
    spec = load_spec(tmp_path / "f", tag="feature")
    assert spec.warnings[0].message == "--tag has no effect on format spec-kit"


def test_document_formats(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "fx")
    fx = tmp_path / "fx"
    cases = {
        fx / "taskmaster" / "tagged": TaskMasterJson,
        fx / "speckit" / "specs" / "001-photo-albums": SpecKitMarkdown,
        fx / "agentos_md" / "headings": AgentOsMarkdown,
        EXAMPLES / "small-feature": AgentOsJson,
    }
    for path, cls in cases.items():
        assert isinstance(document_format(load_spec(path)), cls)
    spec = load_spec(fx / "taskmaster" / "tagged", tag="feature-checkout")
    assert document_format(spec).tag == "feature-checkout"


def test_attempts_are_counted_from_the_run_records(tmp_path):
    folder = put(tmp_path / "f" / "tasks.md", SPECKIT_MD).parent
    runs = folder / ".specwave" / "runs"
    for run, spec_name, n in (("r1", "f", 2), ("r2", "f", 1), ("r3", "other", 5)):
        (runs / run / "tasks" / "T001").mkdir(parents=True)
        (runs / run / "run.json").write_text(json.dumps({"spec": spec_name}))
        for k in range(1, n + 1):
            (runs / run / "tasks" / "T001" / f"attempt-{k}.json").write_text("{}")
    assert load_spec(folder).units[0].attempts == 3


# ------------------------------------------------------------------------------ the CLI


def specwave(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from flows.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize(
    "files, args, lines",
    [
        (
            {
                ".taskmaster/tasks/tasks.json": json.dumps(
                    {"master": {"tasks": [tm_task(1, dependencies=[9])]}}
                )
            },
            ["validate", "."],
            [
                (
                    '.taskmaster/tasks/tasks.json: task "1": depends on unknown task "9" — '
                    "fix the id or remove it (task-master fix-dependencies)"
                )
            ],
        ),
        (
            {"specs/001-a/tasks.md": "- [ ] T001 a\n- [ ] T001 b\n"},
            ["plan", "specs/001-a"],
            [
                (
                    'specs/001-a/tasks.md:2: task "T001": two tasks have this id (lines 1 and 2) — '
                    "renumber one of them"
                )
            ],
        ),
        (
            {"s/tasks.md": "## Tasks\n"},
            ["status", "s"],
            [
                (
                    's/tasks.md: has no tasks — write them as "- [ ] 1. Title" with indented '
                    '"  - [ ] 1.1 Step" lines under a "## Tasks" heading'
                )
            ],
        ),
        (
            {"s/tasks.md": AGENTOS_MD},
            ["validate", "s", "--format", "jira"],
            ['--format: unknown format "jira" — use one of: ' + ", ".join(FORMATS)],
        ),
        (
            {".taskmaster/tasks/tasks.json": json.dumps({"master": {"tasks": [tm_task(1)]}})},
            ["run", ".", "--tag", "nope", "--dry-run"],
            ['.taskmaster/tasks/tasks.json: has no tag "nope" — use one of: master'],
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_each(tmp_path, files, args, lines):
    for name, text in files.items():
        put(tmp_path / name, text)
    result = specwave(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == lines


def test_validate_each_fixture(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "fx")
    out = {}
    for path in (
        "fx/taskmaster/tagged",
        "fx/taskmaster/legacy",
        "fx/speckit/specs/001-photo-albums",
        "fx/agentos_md/headings",
        "fx/agentos_md/project/.agent-os/specs/2025-01-29-password-reset",
    ):
        result = specwave("validate", path, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        out[path] = result.stdout.strip()
    assert out["fx/taskmaster/tagged"] == (
        "fx/taskmaster/tagged/.taskmaster/tasks/tasks.json: "
        "valid — 7 tasks (+6 subtasks), 4 waves (computed), "
        "0 file conflicts, 2 warnings"
    )
    assert out["fx/speckit/specs/001-photo-albums"].startswith(
        "fx/speckit/specs/001-photo-albums/tasks.md: valid — 16 tasks, 12 waves (computed)"
    )
