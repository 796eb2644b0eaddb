"""spec-kit tasks.md: what is a task, phases and [P] as dependencies, files, prompt context,
byte-exact write-back. The fixture (tests/fixtures/formats/speckit/specs/001-photo-albums/)
follows spec-kit's templates/tasks-template.md, plus the quirks of real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks_lib.errors import SpecError
from tasks_lib.formats import document_format, load_spec
from tasks_lib.formats.speckit import SpecKitMarkdown
from tasks_lib.planner import plan_spec
from tasks_lib.prompt import build_prompt
from tasks_lib.spec import TaskStatus
from tasks_lib.store import PlanStore, TaskUpdate

from .conftest import changed_lines

FEATURE = "speckit/specs/001-photo-albums"


def write(tmp_path, text: str, name: str = "001-x"):
    folder = tmp_path / "specs" / name
    folder.mkdir(parents=True)
    (folder / "tasks.md").write_text(text)
    return folder


def test_the_fixture_maps_to_units(fixture_copy):
    spec = load_spec(fixture_copy(FEATURE))
    assert spec.format == "spec-kit" and spec.name == "001-photo-albums"
    ids = [u.id for u in spec.units]
    # T999 (HTML comment), T006 again (code fence), legends and the Notes checkbox are not tasks
    assert ids == [f"T{n:03d}" for n in range(1, 17)]
    status = {u.id: u.status for u in spec.units}
    assert status["T001"] == status["T002"] == TaskStatus.PASS  # [X] and [x]
    assert status["T014"] == TaskStatus.PASS  # "✅" on an unticked box, with a warning
    assert [(w.task_id, w.message) for w in spec.warnings] == [
        ("T014", "says it is completed but its box is not ticked — treated as done")
    ]
    assert all(status[i] == TaskStatus.PENDING for i in ids if i not in ("T001", "T002", "T014"))
    u = {x.id: x for x in spec.units}
    assert u["T014"].description == "Implement POST /albums in src/api/albums.py"  # **T014**
    assert u["T008"].description == (
        "Contract test for POST /albums in tests/contract/test_albums_post.py"
    )
    assert u["T013"].files == ["src/services/album_service.py"]
    assert u["T015"].files == ["docs/"]
    assert u["T001"].files == []
    assert u["T006"].details.splitlines() == [
        "Phase: Phase 2: Foundational (Blocking Prerequisites)",
        "May run in parallel with the other [P] tasks of its phase",
        "- keep files under `data/photos/`",
        "- thumbnails are generated lazily",
    ]
    assert u["T010"].details.splitlines()[:2] == [
        (
            "Phase: Phase 3: User Story 1 - Create albums (Priority: P1) 🎯 MVP › "
            "Implementation for User Story 1"
        ),
        "User story: US1 (see spec.md)",
    ]
    assert list(spec.documents) == ["spec.md", "plan.md", "data-model.md"]


def test_phases_and_parallel_markers_become_dependencies(fixture_copy):
    spec = load_spec(fixture_copy(FEATURE))
    deps = {u.id: u.deps for u in spec.units}
    assert deps == {
        "T001": [],
        "T002": ["T001"],
        # [P] run; T002 is done, so they also wait for what it waited for (T001, done too)
        "T003": ["T002", "T001"],
        "T004": ["T002", "T001"],
        "T005": ["T003", "T004"],  # a new phase waits for the whole previous group
        "T006": ["T005"],
        "T007": ["T005"],
        "T008": ["T006", "T007"],
        "T009": ["T006", "T007"],  # "### Tests" is its own group
        "T010": ["T008", "T009"],
        "T011": ["T008", "T009"],
        "T012": ["T008", "T009"],
        "T013": ["T010", "T011", "T012"],
        "T014": ["T013"],
        # T014 is marked done ("✅"): T015 also waits for what T014 waited for
        "T015": ["T014", "T013"],
        "T016": ["T015"],
    }


def test_the_plan_keeps_parallel_tasks_that_share_a_file_apart(fixture_copy):
    plan = plan_spec(load_spec(fixture_copy(FEATURE)))
    assert not plan.errors
    waves = [w.tasks for w in plan.waves]
    assert ["T003", "T004"] in waves and ["T006", "T007"] in waves
    assert ["T010", "T012"] in waves and ["T011"] in waves  # both name src/models/album.py
    assert waves.index(["T010", "T012"]) < waves.index(["T011"])


def test_the_prompt_carries_the_context(fixture_copy):
    spec = load_spec(fixture_copy(FEATURE))
    prompt = build_prompt(spec, spec.unit("T010"), wave=7, concurrent=["T012"])
    assert "Create the Album model in src/models/album.py" in prompt
    assert "User story: US1" in prompt
    assert "- src/models/album.py" in prompt
    assert "spec.md, plan.md, data-model.md" in prompt


@pytest.mark.parametrize(
    "text, deps",
    [
        # only [P] tasks: all together
        (
            "## P\n- [ ] T001 [P] a\n- [ ] T002 [P] b\n- [ ] T003 [P] c\n",
            {"T001": [], "T002": [], "T003": []},
        ),
        # a non-[P] task waits for the [P] run before it; the next [P] run waits for it
        (
            "- [ ] T001 [P] a\n- [ ] T002 [P] b\n- [ ] T003 c\n"
            "- [ ] T004 [P] d\n- [ ] T005 [P] e\n",
            {"T001": [], "T002": [], "T003": ["T001", "T002"], "T004": ["T003"], "T005": ["T003"]},
        ),
        # a done task in the middle does not let the next one overtake the pending one before it
        (
            "- [ ] T001 a\n- [X] T002 b\n- [ ] T003 c\n",
            {"T001": [], "T002": ["T001"], "T003": ["T002", "T001"]},
        ),
        (
            "- [ ] T001 a\n- [X] T002 [P] b\n- [x] T003 [P] c\n- [ ] T004 d\n",
            {"T001": [], "T002": ["T001"], "T003": ["T001"], "T004": ["T002", "T001", "T003"]},
        ),
        # a heading between two [P] tasks is a phase barrier
        ("## A\n- [ ] T001 [P] a\n## B\n- [ ] T002 [P] b\n", {"T001": [], "T002": ["T001"]}),
        # markers in any case/order, bold ids, labels, numbered bullets
        ("1. [ ] **T001** [US1] [p] a\n2. [ ] T002 [Setup] [P] b\n", {"T001": [], "T002": []}),
    ],
)
def test_grouping(tmp_path, text, deps):
    spec = load_spec(write(tmp_path, text))
    assert {u.id: u.deps for u in spec.units} == deps


def test_markers_do_not_reach_the_description(tmp_path):
    spec = load_spec(write(tmp_path, "- [ ] T001 [P] [US2] [Backend] Build it in a/b.py\n"))
    u = spec.units[0]
    assert u.description == "Build it in a/b.py"
    assert "User story: US2 (see spec.md)" in u.details and "Labels: Backend" in u.details


def test_a_file_without_tasks(tmp_path):
    folder = write(
        tmp_path, "# Tasks\n\n- [ ] TXXX placeholder\n- [ ] Just a checklist\n", name="002-y"
    )
    (folder / "plan.md").write_text("# plan\n")
    with pytest.raises(SpecError) as exc:
        load_spec(folder, format="spec-kit")
    assert [str(p).split(": ", 1)[1] for p in exc.value.problems] == [
        'has no tasks — write them as "- [ ] T001 [P] [US1] Description in path/to/file.py"'
    ]


def test_duplicate_ids(tmp_path):
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, "- [ ] T001 a\n\n- [ ] T001 b\n"))
    (p,) = exc.value.problems
    assert (p.task_id, p.message, p.where) == (
        "T001",
        "two tasks have this id (lines 1 and 3)",
        "3",
    )


def test_parallel_is_ignored_with_a_warning(tmp_path):
    spec = load_spec(write(tmp_path, "- [ ] T001 a\n- [ ] T002 b\n"), parallel=True)
    assert spec.units[1].deps == ["T001"]
    assert spec.warnings[0].message.startswith("--parallel has no effect on a spec-kit")


# ------------------------------------------------------------------------------ write-back


def test_write_back_is_byte_exact(fixture_copy):
    spec = load_spec(fixture_copy(FEATURE))
    path = spec.tasks_path
    before = path.read_bytes()
    store = PlanStore(path, document_format(spec))
    store.apply(TaskUpdate("T003", status="in_progress"), run_state={"status": "running"})
    assert path.read_bytes() == before  # nothing to record for "running" in a checklist
    store.apply(
        TaskUpdate("T003", status="pass", subtasks_status="pass", clear_blocker=True),
        TaskUpdate("T004", status="fail", blocker="ci.yml: tests fail"),
        TaskUpdate("T005", status="blocked", blocker='dependency "T004" failed'),
    )
    diff = changed_lines(before, path.read_bytes())
    assert diff == {
        32: (
            b"- [ ] T003 [P] Configure ruff and pytest in pyproject.toml",
            b"- [X] T003 [P] Configure ruff and pytest in pyproject.toml",
        ),
        33: (
            b"- [ ] T004 [P] Add the CI workflow in .github/workflows/ci.yml",
            (
                b"- [ ] T004 [P] Add the CI workflow in .github/workflows/ci.yml"
                b" \xe2\x80\x94 specwave: failed: ci.yml: tests fail"
            ),
        ),
        41: (
            (b"- [ ] T005 Setup SQLite schema and migrations framework in src/db/migrations.py"),
            (
                b"- [ ] T005 Setup SQLite schema and migrations framework in "
                b'src/db/migrations.py \xe2\x80\x94 specwave: blocked: dependency "T004" failed'
            ),
        ),
    }
    again = load_spec(path.parent)
    assert again.unit("T004").status == TaskStatus.FAIL
    assert again.unit("T005").status == TaskStatus.BLOCKED
    assert again.unit("T004").description == "Add the CI workflow in .github/workflows/ci.yml"
    assert again.unit("T004").files == [".github/workflows/ci.yml"]
    store.apply(
        TaskUpdate("T004", status="pass", clear_blocker=True),
        TaskUpdate("T005", status="pass", clear_blocker=True),
    )
    diff = changed_lines(before, path.read_bytes())
    assert sorted(diff) == [32, 33, 41]
    assert all(new == old.replace(b"- [ ]", b"- [X]", 1) for old, new in diff.values())


def test_crlf_and_bom_survive(fixture_copy):
    folder = fixture_copy(FEATURE)
    path = folder / "tasks.md"
    original = "\ufeff" + path.read_text().replace("\n", "\r\n")
    path.write_bytes(original.encode())
    spec = load_spec(folder)
    PlanStore(path, document_format(spec)).apply(TaskUpdate("T016", status="pass"))
    assert path.read_bytes().decode() == original.replace(
        "- [ ] T016 Run quickstart.md", "- [X] T016 Run quickstart.md"
    )


def test_a_lowercase_file_keeps_its_lowercase_tick(tmp_path):
    folder = write(tmp_path, "- [x] T001 a\n- [x] T002 b\n- [ ] T003 c\n")
    spec = load_spec(folder)
    PlanStore(spec.tasks_path, document_format(spec)).apply(TaskUpdate("T003", status="pass"))
    assert (folder / "tasks.md").read_text() == "- [x] T001 a\n- [x] T002 b\n- [x] T003 c\n"


def _writer(path: str, tid: str, barrier) -> None:
    store = PlanStore(Path(path), SpecKitMarkdown())
    barrier.wait()
    for k in range(5):
        store.apply(TaskUpdate(tid, status="fail", blocker=f"try {k}"))
    store.apply(TaskUpdate(tid, status="pass", clear_blocker=True))


def test_concurrent_writers_lose_no_update(tmp_path):
    import multiprocessing

    text = "# Tasks\r\n" + "".join(f"- [ ] T{i:03d} [P] task {i}\r\n" for i in range(1, 5))
    path = tmp_path / "tasks.md"
    path.write_bytes(text.encode())
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(target=_writer, args=(str(path), f"T{i:03d}", barrier)) for i in range(1, 5)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert path.read_bytes().decode() == text.replace("- [ ]", "- [X]")
    assert not list(tmp_path.glob(".tasks.md.*.tmp"))
