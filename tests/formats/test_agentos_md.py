"""Agent OS tasks.md (no tasks.json): both layouts, the quirks of real files, run order,
the spec the file points to, byte-exact write-back."""

from __future__ import annotations

import pytest

from tasks_lib.errors import SpecError
from tasks_lib.formats import document_format, load_spec
from tasks_lib.planner import plan_spec
from tasks_lib.prompt import build_prompt
from tasks_lib.spec import TaskStatus
from tasks_lib.store import PlanStore, TaskUpdate

from .conftest import changed_lines

SPEC = "agentos_md/project/.agent-os/specs/2025-01-29-password-reset"


def write(tmp_path, text: str):
    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "tasks.md").write_text(text)
    return folder


def shape(spec):
    return [(u.id, u.description, u.status.value, [s.id for s in u.subtasks]) for u in spec.units]


def test_the_checklist_fixture(fixture_copy):
    root = fixture_copy("agentos_md/project")
    spec = load_spec(root / ".agent-os/specs/2025-01-29-password-reset")
    assert spec.format == "agent-os-md" and spec.name == "2025-01-29-password-reset"
    # "## Acceptance" checkboxes are outside "## Tasks"; the Execution Strategy prose is not read
    assert shape(spec) == [
        ("1", "Create the PasswordResetToken model and migration", "pass", ["1.1", "1.2", "1.3"]),
        ("2", "Build the password reset email", "pending", ["2.1", "2.2", "2.3"]),
        ("3", "Add the POST /auth/password-reset endpoint", "pass", ["3.1", "3.2", "3.3"]),
        ("4", "Add the confirm endpoint", "pending", ["4.1", "4.2", "4.3"]),
    ]
    three = spec.unit("3")
    assert [s.status for s in three.subtasks] == [
        TaskStatus.PASS,
        TaskStatus.PENDING,
        TaskStatus.PENDING,
    ]
    assert [(w.task_id, w.message, w.where) for w in spec.warnings] == [
        ("3", "is ticked but subtasks 3.2, 3.3 are not — treated as done", "22")
    ]
    two = spec.unit("2")
    assert two.subtasks[0].details == (
        "- use the FakeEmailClient fixture from tests/conftest.py\n- assert one message per request"
    )
    assert spec.unit("4").details == "- Note: depends on tasks 2 and 3 (stated only here, in prose)"
    assert two.files == ["app/templates/reset.html"]
    # the @.agent-os/... pointer is resolved from the project root; sub-specs come along
    assert list(spec.documents) == ["spec.md", "sub-specs/technical-spec.md"]


def test_parents_run_in_order_unless_parallel(fixture_copy):
    folder = fixture_copy(SPEC)
    spec = load_spec(folder)
    # 1 and 3 are ticked: 4 waits for 3 and, through the done 3, for 2 — file order holds
    assert [u.deps for u in spec.units] == [[], ["1"], ["2"], ["3", "2"]]
    assert [w.tasks for w in plan_spec(spec).waves] == [["1"], ["2"], ["3"], ["4"]]
    spec = load_spec(folder, parallel=True)
    assert [u.deps for u in spec.units] == [[], [], [], []]
    assert [w.tasks for w in plan_spec(spec).waves] == [["1", "2", "3", "4"]]


def test_the_prompt_has_subtasks_details_and_the_spec(fixture_copy):
    spec = load_spec(fixture_copy(SPEC))
    prompt = build_prompt(spec, spec.unit("2"), wave=2)
    assert "- [ ] 2.1 Write tests for send_password_reset_email" in prompt
    assert "  - use the FakeEmailClient fixture" in prompt
    assert "spec.md, sub-specs/technical-spec.md" in prompt


def test_the_heading_fixture(fixture_copy):
    spec = load_spec(fixture_copy("agentos_md/headings"))
    assert shape(spec) == [
        ("14", "Search index", "pass", ["14.1", "14.2"]),
        ("15", "Search API", "pending", ["15.1", "15.2", "15.3"]),
        ("17", "Search UI", "pending", ["17.1", "17.2"]),
    ]
    assert [u.deps for u in spec.units] == [[], ["14"], ["15"]]
    assert spec.unit("15").details == "The endpoint returns at most 50 hits."
    assert spec.unit("15").subtasks[1].details == "- paginate with a cursor"
    assert spec.warnings == [] and spec.documents == {}


@pytest.mark.parametrize(
    "text, expected",
    [
        # no "## Tasks" heading: every top-level checkbox; unnumbered parents take free numbers
        (
            "- [ ] Set up\n  - [ ] a\n- [ ] 1. First\n- [ ] Last\n",
            [
                ("2", "Set up", "pending", ["2.1"]),
                ("1", "First", "pending", []),
                ("3", "Last", "pending", []),
            ],
        ),
        # "1.0" parents and flat subtasks at the parent's indent
        (
            "## Tasks\n- [ ] 1.0 Parent\n- [ ] 1.1 Child\n- [x] 2.0 Next\n- [x] 2.1 Child\n",
            [("1", "Parent", "pending", ["1.1"]), ("2", "Next", "pass", ["2.1"])],
        ),
        # bold numbers, "Task N:" inside the box, decorations
        (
            "## Tasks\n- [ ] **1. Model**\n- [ ] Task 2: **API** ✅ COMPLETED\n",
            [("1", "Model", "pending", []), ("2", "API", "pass", [])],
        ),
        # "### Task Group N" headings
        (
            "### Task Group 1: Database\n- [ ] 1.1 tests\n### Task Group 2: API\n- [x] 2.1 tests\n",
            [("1", "Database", "pending", ["1.1"]), ("2", "API", "pass", ["2.1"])],
        ),
        # fenced examples and comments are not tasks
        (
            "## Tasks\n```\n- [ ] 9. example\n```\n<!-- - [ ] 8. hidden -->\n- [ ] 1. Real\n",
            [("1", "Real", "pending", [])],
        ),
    ],
)
def test_layout_quirks(tmp_path, text, expected):
    assert shape(load_spec(write(tmp_path, text))) == expected


def test_an_unticked_parent_decorated_as_completed_warns(tmp_path):
    spec = load_spec(write(tmp_path, "## Tasks\n- [ ] 1. Done already ✅\n"))
    assert spec.units[0].status == TaskStatus.PASS
    assert spec.warnings[0].message == (
        "says it is completed but its box is not ticked — treated as done"
    )


def test_a_heading_task_without_checkboxes_warns(tmp_path):
    spec = load_spec(write(tmp_path, "## Task 1: Lonely\n\nsome text\n"))
    assert spec.warnings[0].message == ("has no checkbox, so its progress cannot be written back")


def test_duplicate_numbers(tmp_path):
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, "## Tasks\n- [ ] 1. a\n- [ ] 1. b\n"))
    assert [(p.task_id, p.message) for p in exc.value.problems] == [
        ("1", "two tasks have this number (lines 2 and 3)")
    ]


def test_no_tasks(tmp_path):
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, "# Spec Tasks\n\nNothing yet.\n"))
    assert exc.value.problems[0].message == "has no tasks"


def test_spec_documents_fall_back_to_the_folder(tmp_path):
    folder = write(tmp_path, "See @.agent-os/specs/missing/spec.md\n## Tasks\n- [ ] 1. a\n")
    (folder / "spec-lite.md").write_text("# lite\n")
    assert list(load_spec(folder).documents) == ["spec-lite.md"]


# ------------------------------------------------------------------------------ write-back


def test_write_back_is_byte_exact(fixture_copy):
    spec = load_spec(fixture_copy(SPEC))
    path = spec.tasks_path
    before = path.read_bytes()
    store = PlanStore(path, document_format(spec))
    store.apply(TaskUpdate("2", status="in_progress"))
    store.apply(
        TaskUpdate("2", status="pass", subtasks_status="pass", clear_blocker=True),
        TaskUpdate("4", status="fail", blocker="3 tests fail"),
    )
    diff = changed_lines(before, path.read_bytes())
    assert diff == {
        15: (
            b"- [ ] 2. **Build the password reset email**",
            b"- [x] 2. **Build the password reset email**",
        ),
        16: (
            b"  - [ ] 2.1 Write tests for send_password_reset_email",
            b"  - [x] 2.1 Write tests for send_password_reset_email",
        ),
        19: (
            b"  - [ ] 2.2 Implement the template in app/templates/reset.html",
            b"  - [x] 2.2 Implement the template in app/templates/reset.html",
        ),
        20: (b"  - [ ] 2.3 Verify all tests pass", b"  - [x] 2.3 Verify all tests pass"),
        27: (
            b"- [ ] 4. Add the confirm endpoint",
            "- [ ] 4. Add the confirm endpoint — specwave: failed: 3 tests fail".encode(),
        ),
    }
    assert load_spec(path.parent).unit("4").status == TaskStatus.FAIL


def test_heading_layout_write_back(fixture_copy):
    spec = load_spec(fixture_copy("agentos_md/headings"))
    path = spec.tasks_path
    before = path.read_bytes()
    store = PlanStore(path, document_format(spec))
    store.apply(TaskUpdate("17", status="blocked", blocker="needs a design"))
    store.apply(TaskUpdate("15", status="pass", subtasks_status="pass"))
    diff = changed_lines(before, path.read_bytes())
    assert {n: new for n, (_, new) in diff.items()} == {
        12: b"- [X] 15.1 Write tests for GET /search",  # the file ticks with X
        13: b"- [X] 15.2 Implement GET /search in search/api.py",
        15: b"- [X] 15.3 Verify all tests pass",
        17: "## Task 17: Search UI — specwave: blocked: needs a design".encode(),
    }
    again = load_spec(path.parent)
    assert again.unit("15").status == TaskStatus.PASS
    assert again.unit("17").status == TaskStatus.BLOCKED
    assert again.unit("17").description == "Search UI"
    store.apply(TaskUpdate("17", status="pass", subtasks_status="pass", clear_blocker=True))
    assert b"specwave" not in path.read_bytes()
