"""The spec's documents and its worker-prompt.md: one reader, one symlink rule, every format.

A link that stays inside the project is followed; one that leads out is skipped with a warning
naming the file and the target (before, Task Master and Agent OS tasks.md followed such links out
of the project, so any file of the machine could end up in an agent's prompt).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks_lib.formats import load_spec
from tasks_lib.formats.documents import MAX_DOCUMENT_BYTES, TEMPLATE_FILE, spec_project
from tasks_lib.prompt import TEMPLATE_FILE as PROMPT_TEMPLATE_FILE
from tasks_lib.store import display_path

ROOT = Path(__file__).resolve().parents[2]
SECRET = "SECRET-FROM-OUTSIDE-THE-PROJECT"


@dataclass
class Case:
    """One format's minimal project: where its spec folder is and which document it reads."""

    format: str
    spec_folder: str  # relative to the project
    plan: dict[str, str]  # file (relative to the project) -> text
    document: str  # the document's path relative to the project
    key: str  # its name in spec.documents

    def build(self, project: Path) -> Path:
        for rel, text in self.plan.items():
            put(project / rel, text)
        return project / self.spec_folder


def put(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


AOS_JSON = json.dumps({"tasks": [{"id": "1", "description": "a", "status": "pending"}]})
TM_JSON = json.dumps(
    {
        "master": {
            "tasks": [
                {
                    "id": 1,
                    "title": "a",
                    "description": "",
                    "status": "pending",
                    "dependencies": [],
                    "priority": "low",
                    "details": "",
                    "testStrategy": "",
                }
            ]
        }
    }
)
AOS_SPEC = ".agent-os/specs/2025-01-01-s"

CASES = [
    Case(
        "agent-os", AOS_SPEC, {f"{AOS_SPEC}/tasks.json": AOS_JSON}, f"{AOS_SPEC}/spec.md", "spec.md"
    ),
    Case(
        "agent-os-md",
        AOS_SPEC,
        {f"{AOS_SPEC}/tasks.md": "## Tasks\n- [ ] 1. a\n"},
        f"{AOS_SPEC}/spec.md",
        "spec.md",
    ),
    Case(
        "spec-kit",
        "specs/001-a",
        {"specs/001-a/tasks.md": "- [ ] T001 a\n"},
        "specs/001-a/plan.md",
        "plan.md",
    ),
    Case(
        "taskmaster",
        ".taskmaster/tasks",
        {".taskmaster/tasks/tasks.json": TM_JSON},
        ".taskmaster/docs/prd.txt",
        "../docs/prd.txt",
    ),
]
IDS = [c.format for c in CASES]


@pytest.fixture(params=CASES, ids=IDS)
def case(request) -> Case:
    return request.param


def test_the_template_name_is_the_prompts():
    assert TEMPLATE_FILE == PROMPT_TEMPLATE_FILE == "worker-prompt.md"


def test_a_plain_document_is_read(tmp_path, case):
    folder = case.build(tmp_path / "p")
    put(tmp_path / "p" / case.document, "# the document\n")
    spec = load_spec(folder)
    assert spec.format == case.format
    assert spec.documents == {case.key: "# the document\n"}
    assert spec.warnings == [] and spec.prompt_template is None


def test_a_document_linked_from_outside_the_project_is_skipped_with_a_warning(tmp_path, case):
    project = tmp_path / "p"
    folder = case.build(project)
    secret = put(tmp_path / "outside" / "secret.md", SECRET)
    link = project / case.document
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)
    spec = load_spec(folder)
    assert spec.format == case.format
    assert spec.documents == {}
    assert not any(SECRET in text for text in spec.documents.values())
    [warning] = spec.warnings
    assert warning.severity == "warning"
    assert warning.file == display_path(link)
    assert warning.message == (
        f"is a symlink to {secret.resolve()}, outside the project "
        f"({display_path(project.resolve())}), so it is not read"
    )
    assert warning.hint == "copy the file into the project, or link to a file inside it"


def test_a_relative_link_out_of_the_project_is_skipped_too(tmp_path, case):
    project = tmp_path / "p"
    folder = case.build(project)
    put(tmp_path / "outside.md", SECRET)
    link = project / case.document
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(tmp_path / "outside.md", link.parent))
    spec = load_spec(folder)
    assert spec.documents == {}
    assert [w.file for w in spec.warnings] == [display_path(link)]


@pytest.mark.parametrize(
    "case, document, key",
    [
        (CASES[1], f"{AOS_SPEC}/sub-specs/technical-spec.md", "sub-specs/technical-spec.md"),
        (CASES[3], ".taskmaster/docs/prd.txt", "../docs/prd.txt"),
    ],
    ids=["agent-os-md", "taskmaster"],
)
def test_a_folder_linked_from_outside_is_the_same_as_a_file(tmp_path, case, document, key):
    # the formats that read documents from a subfolder: the subfolder itself is the link
    project = tmp_path / "p"
    folder = case.build(project)
    doc = project / document
    put(tmp_path / "elsewhere" / doc.name, SECRET)
    doc.parent.parent.mkdir(parents=True, exist_ok=True)
    doc.parent.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    spec = load_spec(folder)
    assert spec.documents == {}
    [warning] = spec.warnings
    assert warning.file == display_path(doc)
    assert warning.message.startswith(
        f"goes through a symlink to {(tmp_path / 'elsewhere' / doc.name).resolve()}, outside"
    )
    # the same folder inside the project is followed
    doc.parent.unlink()
    put(project / "shared" / doc.name, "# shared\n")
    doc.parent.symlink_to(project / "shared", target_is_directory=True)
    assert load_spec(folder).documents == {key: "# shared\n"}


def test_a_link_inside_the_project_is_followed(tmp_path, case):
    project = tmp_path / "p"
    folder = case.build(project)
    # outside the spec folder, inside the project: the project is the boundary
    shared = put(project / "docs" / "shared.md", "# shared design\n")
    link = project / case.document
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(shared, link.parent))
    spec = load_spec(folder)
    assert spec.documents == {case.key: "# shared design\n"}
    assert spec.warnings == []


def test_the_spec_folders_worker_prompt_is_its_template(tmp_path, case):
    folder = case.build(tmp_path / "p")
    template = "Do $task_id: $description\n$sections\n"
    put(folder / "worker-prompt.md", template)
    spec = load_spec(folder)
    assert spec.prompt_template == template
    assert TEMPLATE_FILE not in spec.documents and spec.documents == {}
    assert spec.warnings == []


def test_no_worker_prompt_is_none(tmp_path, case):
    spec = load_spec(case.build(tmp_path / "p"))
    assert spec.prompt_template is None


def test_a_worker_prompt_linked_from_outside_is_skipped_with_a_warning(tmp_path, case):
    folder = case.build(tmp_path / "p")
    secret = put(tmp_path / "outside" / "prompt.md", SECRET)
    (folder / "worker-prompt.md").symlink_to(secret)
    spec = load_spec(folder)
    assert spec.prompt_template is None
    [warning] = spec.warnings
    assert warning.file == display_path(folder / "worker-prompt.md")
    assert str(secret.resolve()) in warning.message


def test_a_worker_prompt_linked_inside_the_project_is_followed(tmp_path, case):
    project = tmp_path / "p"
    folder = case.build(project)
    put(project / "prompts" / "team.md", "Team prompt for $task_id\n")
    (folder / "worker-prompt.md").symlink_to(project / "prompts" / "team.md")
    assert load_spec(folder).prompt_template == "Team prompt for $task_id\n"


def test_the_size_cap_is_the_same_for_every_format(tmp_path, case):
    project = tmp_path / "p"
    folder = case.build(project)
    put(project / case.document, "x" * MAX_DOCUMENT_BYTES)
    assert len(load_spec(folder).documents[case.key]) == MAX_DOCUMENT_BYTES
    put(project / case.document, "x" * (MAX_DOCUMENT_BYTES + 1))
    spec = load_spec(folder)
    assert spec.documents == {}
    assert [w.message for w in spec.warnings] == [
        "is larger than the 1,000,000 bytes a spec document may be, so it is not read"
    ]


def test_a_document_that_is_not_utf8_is_skipped_with_a_warning(tmp_path, case):
    project = tmp_path / "p"
    folder = case.build(project)
    (project / case.document).parent.mkdir(parents=True, exist_ok=True)
    (project / case.document).write_bytes(b"# caf\xe9\n")
    spec = load_spec(folder)
    assert spec.documents == {}
    assert [w.message for w in spec.warnings] == [
        "is not UTF-8 text (byte 5, line 1), so it is not read"
    ]


def test_a_dangling_link_is_no_document(tmp_path, case):
    project = tmp_path / "p"
    folder = case.build(project)
    link = project / case.document
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tmp_path / "missing.md")
    spec = load_spec(folder)
    assert spec.documents == {} and spec.warnings == []


# ------------------------------------------------------------------------------ the project


@pytest.mark.parametrize(
    "folder, project",
    [
        ("p/.agent-os/specs/s", "p"),
        ("p/agent-os/specs/s", "p"),
        ("p/specs/001-a", "p"),
        ("p/s", "p/s"),
        ("p/specs", "p/specs"),
    ],
)
def test_the_project_of_a_spec_folder(tmp_path, folder, project):
    (tmp_path / folder).mkdir(parents=True)
    assert spec_project(tmp_path / folder) == (tmp_path / project).resolve()


def test_a_spec_folder_outside_any_layout_is_its_own_project(tmp_path):
    folder = put(tmp_path / "spec" / "tasks.json", AOS_JSON).parent
    put(tmp_path / "design.md", "# beside the spec folder\n")
    (folder / "spec.md").symlink_to(tmp_path / "design.md")
    spec = load_spec(folder)
    assert spec.documents == {}
    assert [w.file for w in spec.warnings] == [display_path(folder / "spec.md")]


def test_a_tasks_md_pointer_is_looked_up_no_higher_than_the_project(tmp_path):
    # the pointer names a file that exists only above the project root: not read, and the
    # folder's own spec.md is used as when the pointer names nothing
    folder = put(
        tmp_path / "p" / AOS_SPEC / "tasks.md", "See @notes/spec.md\n## Tasks\n- [ ] 1. a\n"
    ).parent
    put(tmp_path / "notes" / "spec.md", SECRET)
    put(folder / "spec.md", "# own spec\n")
    spec = load_spec(folder)
    assert spec.documents == {"spec.md": "# own spec\n"}
    put(tmp_path / "p" / "notes" / "spec.md", "# project notes\n")
    assert load_spec(folder).documents == {"../../../notes/spec.md": "# project notes\n"}


def test_a_tasks_md_pointer_linked_out_is_skipped_not_replaced(tmp_path):
    folder = put(
        tmp_path / "p" / AOS_SPEC / "tasks.md",
        "See @.agent-os/specs/2025-01-01-s/spec.md\n## Tasks\n- [ ] 1. a\n",
    ).parent
    (folder / "spec.md").symlink_to(put(tmp_path / "outside.md", SECRET))
    put(folder / "spec-lite.md", "# lite\n")
    spec = load_spec(folder)
    assert spec.documents == {}  # the pointer was found: no fall-back to spec-lite.md
    assert [w.file for w in spec.warnings] == [display_path(folder / "spec.md")]


# ------------------------------------------------------------------------------ the CLI


def test_validate_prints_the_warning(tmp_path):
    project = tmp_path / "p"
    put(project / "specs" / "001-a" / "tasks.md", "- [ ] T001 a\n")
    (project / "specs" / "001-a" / "plan.md").symlink_to(put(tmp_path / "secret.md", SECRET))
    result = subprocess.run(
        [sys.executable, "-c", "from flows.cli import main; main()", "validate", "specs/001-a"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: specs/001-a/plan.md: is a symlink to {(tmp_path / 'secret.md').resolve()}, "
        "outside the project (.), so it is not read — copy the file into the project, or "
        "link to a file inside it"
    ]
    assert SECRET not in result.stdout + result.stderr
