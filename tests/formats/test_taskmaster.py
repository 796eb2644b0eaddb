"""Task Master tasks.json: tags, mapping, quirks, planning and byte-exact status write-back.

The fixtures (tests/fixtures/formats/taskmaster/) follow Task Master's task-structure docs:
a tagged ``.taskmaster/tasks/tasks.json`` written like ``JSON.stringify(data, null, 2)`` (no
final newline) with a ``state.json``, and a legacy ``tasks/tasks.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks_lib.errors import SpecError
from tasks_lib.formats import document_format, load_spec
from tasks_lib.formats.taskmaster import TaskMasterJson, scan_json
from tasks_lib.planner import plan_spec
from tasks_lib.spec import TaskStatus
from tasks_lib.store import PlanStore, TaskUpdate

from .conftest import changed_lines

TM = ".taskmaster/tasks/tasks.json"


def project(
    tmp_path: Path,
    data,
    *,
    text: str | None = None,
    state: dict | None = None,
    legacy_place: bool = False,
) -> Path:
    root = tmp_path / "proj"
    path = root / ("tasks/tasks.json" if legacy_place else TM)
    path.parent.mkdir(parents=True)
    path.write_text(text if text is not None else json.dumps(data, indent=2))
    if state is not None:
        (root / ".taskmaster" / "state.json").write_text(json.dumps(state))
    return root


def task(id, title="T", status="pending", deps=(), **kw):
    t = {
        "id": id,
        "title": title,
        "description": f"about {title}",
        "status": status,
        "dependencies": list(deps),
        "priority": "medium",
        "details": "",
        "testStrategy": "",
    }
    t.update(kw)
    return t


def errors_of(exc: SpecError) -> list[str]:
    return [p.message for p in exc.problems]


# ------------------------------------------------------------------------------ mapping


def test_the_tagged_fixture_maps_to_units(fixture_copy):
    spec = load_spec(fixture_copy("taskmaster/tagged"))
    assert spec.format == "taskmaster" and spec.tag == "master"
    assert spec.tasks_path.as_posix().endswith(TM)
    assert spec.folder == spec.tasks_path.parent  # .specwave/ sits next to the file
    units = {u.id: u for u in spec.units}
    assert list(units) == ["1", "2", "3", "4", "5", "8", "9"]  # 6 deferred, 7 waits for it
    assert {k: u.status for k, u in units.items()} == {
        "1": TaskStatus.PASS,
        "2": TaskStatus.PENDING,
        "3": TaskStatus.IN_PROGRESS,
        "4": TaskStatus.PASS,
        "5": TaskStatus.PENDING,
        "8": TaskStatus.SKIPPED,
        "9": TaskStatus.BLOCKED,
    }
    assert units["4"].raw_status == "review"
    assert {k: u.deps for k, u in units.items()} == {
        "1": [],
        "2": ["1"],
        "3": ["2"],
        "4": ["3"],
        "5": ["3"],
        "8": [],
        "9": ["3"],
    }
    two = units["2"]
    assert two.description == "Set up the database layer"
    assert two.details == (
        "Prisma schema and client for users and sessions.\n\n"
        "Use Prisma with PostgreSQL. Define User and Session models."
    )
    assert two.test_strategy == "Run prisma validate and a migration against a scratch database."
    assert [(s.id, s.description, s.status) for s in two.subtasks] == [
        ("2.1", "Define the Prisma schema", TaskStatus.PASS),
        ("2.2", "Generate the client", TaskStatus.PENDING),
        ("2.3", "Write the seed script", TaskStatus.PENDING),
    ]
    assert two.subtasks[0].details == "User and Session models"
    assert units["3"].test_strategy is None  # empty testStrategy
    assert units["3"].subtasks[2].details == (
        "Create a Session row\nTest strategy: Unit test the handler"
    )
    assert units["4"].subtasks == []  # no "subtasks" key
    assert list(spec.documents) == ["../docs/prd.txt"]
    warnings = [(w.task_id, w.message) for w in spec.warnings]
    assert warnings == [("6", "is deferred: not run"), ("7", "waits for deferred task 6: not run")]


def test_the_fixture_plans(fixture_copy):
    spec = load_spec(fixture_copy("taskmaster/tagged"))
    plan = plan_spec(spec)
    assert not plan.errors
    assert [w.tasks for w in plan.waves] == [["1", "8"], ["2"], ["3"], ["4", "5", "9"]]


def test_ids_that_start_at_14_and_have_gaps(fixture_copy):
    spec = load_spec(fixture_copy("taskmaster/tagged"), tag="feature-checkout")
    assert spec.tag == "feature-checkout" and spec.name == "tagged:feature-checkout"
    assert [(u.id, u.deps) for u in spec.units] == [
        ("14", []),
        ("15", ["14"]),
        ("17", ["14", "15"]),
    ]
    assert [w.tasks for w in plan_spec(spec).waves] == [["14"], ["15"], ["17"]]


def test_the_legacy_fixture(fixture_copy):
    root = fixture_copy("taskmaster/legacy")
    spec = load_spec(root)
    assert spec.format == "taskmaster" and spec.tag is None
    assert spec.tasks_path == root / "tasks" / "tasks.json"
    assert [(u.id, u.deps) for u in spec.units] == [("1", []), ("2", ["1"]), ("3", [])]
    assert [s.id for s in spec.units[0].subtasks] == ["1.1", "1.2"]  # string subtask ids
    assert spec.units[1].details == "TOML config" and spec.units[1].test_strategy is None
    assert spec.units[2].test_strategy is None  # no testStrategy key at all


def test_subtask_dependencies(tmp_path):
    data = {
        "master": {
            "tasks": [
                task(1),
                task(20),
                task(
                    3,
                    subtasks=[
                        {"id": 1, "title": "a", "status": "pending", "dependencies": []},
                        {
                            "id": 2,
                            "title": "b",
                            "status": "pending",
                            "dependencies": [1],
                        },  # sibling
                        {
                            "id": 3,
                            "title": "c",
                            "status": "pending",
                            "dependencies": ["3.2"],
                        },  # own
                        {
                            "id": 4,
                            "title": "d",
                            "status": "pending",
                            "dependencies": ["1.1"],
                        },  # task 1
                        {
                            "id": 5,
                            "title": "e",
                            "status": "pending",
                            "dependencies": [20],
                        },  # task 20
                        {"id": 6, "title": "f", "status": "cancelled", "dependencies": []},
                        {"id": 7, "title": "g", "status": "pending", "dependencies": [9]},
                    ],
                ),
            ]
        }
    }
    spec = load_spec(project(tmp_path, data))
    three = spec.units[2]
    assert three.deps == ["1", "20"]
    assert [s.id for s in three.subtasks] == ["3.1", "3.2", "3.3", "3.4", "3.5", "3.7"]
    assert [w.message for w in spec.warnings] == [
        'subtask 3.7 depends on unknown subtask "9" (ignored)'
    ]


def test_a_dependency_on_a_subtask_depends_on_its_task(tmp_path):
    spec = load_spec(project(tmp_path, {"master": {"tasks": [task(1), task(2, deps=["1.2"])]}}))
    assert spec.units[1].deps == ["1"]


@pytest.mark.parametrize(
    "word, status",
    [
        ("pending", TaskStatus.PENDING),
        ("in-progress", TaskStatus.IN_PROGRESS),
        ("done", TaskStatus.PASS),
        ("review", TaskStatus.PASS),
        ("cancelled", TaskStatus.SKIPPED),
        ("blocked", TaskStatus.BLOCKED),
        ("Done", TaskStatus.PASS),
    ],
)
def test_statuses(tmp_path, word, status):
    spec = load_spec(project(tmp_path, {"master": {"tasks": [task(1, status=word)]}}))
    assert spec.units[0].status == status and spec.units[0].raw_status == word


def test_an_unknown_status_is_pending_with_a_warning(tmp_path):
    spec = load_spec(project(tmp_path, {"master": {"tasks": [task(1, status="wip")]}}))
    assert spec.units[0].status == TaskStatus.PENDING
    assert spec.warnings[0].message == 'unknown status "wip" is treated as pending'


def test_a_done_task_that_depends_on_a_deferred_one_stays(tmp_path):
    data = {
        "master": {
            "tasks": [
                task(1, status="deferred"),
                task(2, status="done", deps=[1]),
                task(3, deps=[2]),
            ]
        }
    }
    spec = load_spec(project(tmp_path, data))
    assert [(u.id, u.deps) for u in spec.units] == [("2", []), ("3", ["2"])]


def test_every_task_deferred_is_an_error(tmp_path):
    with pytest.raises(SpecError) as exc:
        load_spec(project(tmp_path, {"master": {"tasks": [task(1, status="deferred")]}}))
    assert errors_of(exc.value) == ["has no task to run: every task is deferred or waits for one"]


# ------------------------------------------------------------------------------ tags


def test_the_default_tag_comes_from_state_json(tmp_path):
    data = {"master": {"tasks": [task(1)]}, "feat": {"tasks": [task(5)]}}
    spec = load_spec(project(tmp_path, data, state={"currentTag": "feat"}))
    assert spec.tag == "feat" and [u.id for u in spec.units] == ["5"]
    assert document_format(spec).tag == "feat"


def test_a_single_tag_that_is_not_master_is_used(tmp_path):
    spec = load_spec(project(tmp_path, {"only": {"tasks": [task(1)]}}))
    assert spec.tag == "only"


@pytest.mark.parametrize(
    "data, tag, message",
    [
        ({"master": {"tasks": [task(1)]}}, "nope", 'has no tag "nope"'),
        (
            {"a": {"tasks": [task(1)]}, "b": {"tasks": [task(1)]}},
            None,
            'has several tags (a, b) and none is "master"',
        ),
        (
            {"tasks": [task(1)], "metadata": {}},
            "feat",
            'has no tag "feat": it uses the legacy layout {"tasks": [...]} with no tags',
        ),
        ({"master": {"tasks": []}}, None, "has no tasks in tag 'master'"),
        (
            {"master": {"nothing": []}},
            None,
            "is not a Task Master tasks.json: "
            'expected {"master": {"tasks": [...]}} or {"tasks": [...]}',
        ),
    ],
)
def test_tag_problems(tmp_path, data, tag, message):
    with pytest.raises(SpecError) as exc:
        load_spec(project(tmp_path, data), tag=tag)
    assert errors_of(exc.value) == [message]


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "tasks, messages",
    [
        ([task(1), task(1)], ["duplicate task id"]),
        ([task(1, deps=[7])], ['depends on unknown task "7"']),
        ([task(1, deps=[None])], ["dependency null is not a task id"]),
        ([{"title": "no id"}], ["has no usable id"]),
        ([task(1, dependencies="2")], ['"dependencies" must be a list']),
        ([{"id": 1, "status": "pending"}], ['has no "title"']),
        ([task(1, subtasks=[{"title": "x"}])], ["subtask 1 has no usable id"]),
        (["x"], ["is not an object"]),
    ],
)
def test_bad_tasks(tmp_path, tasks, messages):
    with pytest.raises(SpecError) as exc:
        load_spec(project(tmp_path, {"master": {"tasks": tasks}}))
    assert errors_of(exc.value) == messages


def test_a_dependency_cycle_is_a_plan_error(tmp_path):
    spec = load_spec(
        project(tmp_path, {"master": {"tasks": [task(1, deps=[2]), task(2, deps=[1])]}})
    )
    assert [e.message for e in plan_spec(spec).errors] == ['dependency cycle "1" → "2" → "1"']


def test_invalid_json_names_the_position(tmp_path):
    root = project(tmp_path, None, text='{"master": {"tasks": [}}')
    with pytest.raises(SpecError) as exc:
        load_spec(root)
    assert exc.value.problems[0].where == "1:23"


# ------------------------------------------------------------------------------ write-back


def test_status_write_back_changes_only_status_values(fixture_copy):
    spec = load_spec(fixture_copy("taskmaster/tagged"))
    path = spec.tasks_path
    before = path.read_bytes()
    store = PlanStore(path, document_format(spec))
    store.apply(TaskUpdate("2", status="in_progress"), run_state={"ignored": True})
    store.apply(
        TaskUpdate("2", status="pass", subtasks_status="pass", clear_blocker=True),
        TaskUpdate("5", status="fail", blocker="tests fail"),
        TaskUpdate("9", status="blocked", blocker="dependency 5 failed"),
    )
    after = path.read_bytes()
    assert not after.endswith(b"\n")  # JSON.stringify writes no final newline
    diff = changed_lines(before, after)

    def status_line(task_id, sub_id=None) -> int:
        text = before.decode()
        tasks = scan_json(text).member("master").member("tasks")
        node = next(t for t in tasks.items if t.value["id"] == task_id)
        if sub_id is not None:
            node = next(s for s in node.member("subtasks").items if s.value["id"] == sub_id)
        return text[: node.member("status").start].count("\n") + 1

    # 2 and its open subtasks 2.2, 2.3 (2.1 was done already) → done; 5 → blocked; 9 was
    # blocked already
    expected = {
        status_line(2): b"done",
        status_line(2, 2): b"done",
        status_line(2, 3): b"done",
        status_line(5): b"blocked",
    }
    assert set(diff) == set(expected)
    for n, (old, new) in diff.items():
        word = json.loads(b"{" + old.strip().rstrip(b",") + b"}")["status"].encode()
        assert new == old.replace(b'"' + word + b'"', b'"' + expected[n] + b'"')
    data = json.loads(after)
    by_id = {t["id"]: t for t in data["master"]["tasks"]}
    assert by_id[2]["status"] == "done"
    assert [s["status"] for s in by_id[2]["subtasks"]] == ["done", "done", "done"]
    assert by_id[5]["status"] == "blocked" and by_id[9]["status"] == "blocked"
    assert data["feature-checkout"] == json.loads(before)["feature-checkout"]
    assert load_spec(path.parents[2]).unit("2").status == TaskStatus.PASS


def test_a_cancelled_run_puts_in_progress_back_to_pending(fixture_copy):
    spec = load_spec(fixture_copy("taskmaster/tagged"))
    before = spec.tasks_path.read_bytes()
    store = PlanStore(spec.tasks_path, document_format(spec))
    store.apply(TaskUpdate("5", status="in_progress"))
    assert json.loads(spec.tasks_path.read_bytes())["master"]["tasks"][4]["status"] == "in-progress"
    store.apply(TaskUpdate("5", status="pending", completed_at=None))
    assert spec.tasks_path.read_bytes() == before


def test_writes_go_to_the_selected_tag_only(fixture_copy):
    root = fixture_copy("taskmaster/tagged")
    spec = load_spec(root, tag="feature-checkout")
    before = json.loads(spec.tasks_path.read_bytes())
    PlanStore(spec.tasks_path, document_format(spec)).apply(
        TaskUpdate("17", status="pass", subtasks_status="pass")
    )
    after = json.loads(spec.tasks_path.read_bytes())
    assert after["master"] == before["master"]
    assert after["feature-checkout"]["tasks"][2]["status"] == "done"
    assert after["feature-checkout"]["tasks"][2]["subtasks"][0]["status"] == "done"
    assert after["feature-checkout"]["metadata"] == before["feature-checkout"]["metadata"]


def test_pass_keeps_cancelled_and_deferred_subtasks(tmp_path):
    data = {
        "master": {
            "tasks": [
                task(
                    1,
                    subtasks=[
                        {"id": 1, "title": "a", "status": "cancelled"},
                        {"id": 2, "title": "b", "status": "deferred"},
                        {"id": 3, "title": "c", "status": "review"},
                        {"id": 4, "title": "d"},
                    ],
                )
            ]
        }
    }
    spec = load_spec(project(tmp_path, data))
    PlanStore(spec.tasks_path, document_format(spec)).apply(
        TaskUpdate("1", status="pass", subtasks_status="pass")
    )
    subs = json.loads(spec.tasks_path.read_text())["master"]["tasks"][0]["subtasks"]
    assert [s.get("status") for s in subs] == ["cancelled", "deferred", "done", "done"]


@pytest.mark.parametrize(
    "text, expected",
    [
        # multi-line object: a new member in the object's own layout
        (
            '{"master": {"tasks": [\n    {\n      "id": 1,\n      "title": "a"\n    }\n  ]}}',
            (
                '{"master": {"tasks": [\n    {\n      "id": 1,\n      "title": "a",\n      '
                '"status": "done"\n    }\n  ]}}'
            ),
        ),
        # one-line, compact
        ('{"tasks":[{"id":1,"title":"a"}]}', '{"tasks":[{"id":1,"title":"a","status":"done"}]}'),
        # one-line with spaces, CRLF file
        (
            '{"tasks": [{"id": 1, "title": "a"}]}\r\n',
            '{"tasks": [{"id": 1, "title": "a", "status": "done"}]}\r\n',
        ),
    ],
)
def test_a_missing_status_key_is_inserted_in_place(tmp_path, text, expected):
    root = project(tmp_path, None, text=text)
    spec = load_spec(root)
    PlanStore(spec.tasks_path, document_format(spec)).apply(TaskUpdate("1", status="pass"))
    assert spec.tasks_path.read_bytes().decode() == expected


@pytest.mark.parametrize(
    "text",
    [
        (
            '\ufeff{\n\t"tasks": [\n\t\t{"id": 1, "title": "ü €", "status": "pending", '
            '"n": 1.50, "e": 1E3}\n\t]\n}'
        ),
        '{"tasks":[{"id":"1","title":"\\u00fc","status" : "pending","dependencies":[]}]}\n\n',
        (
            '{\r\n    "tasks": [\r\n        {\r\n            "id": 1,\r\n            "status": '
            '"pending",\r\n            "title": "x"\r\n        }\r\n    ]\r\n}\r\n'
        ),
    ],
)
def test_any_layout_keeps_every_other_byte(tmp_path, text):
    root = project(tmp_path, None, text=text)
    spec = load_spec(root)
    store = PlanStore(spec.tasks_path, document_format(spec))
    store.apply(TaskUpdate("1", status="in_progress"))
    after = spec.tasks_path.read_bytes().decode("utf-8")
    assert after == text.replace('"pending"', '"in-progress"', 1)
    store.apply(TaskUpdate("1", status="pending"))
    assert spec.tasks_path.read_bytes().decode("utf-8") == text


def test_a_file_migrated_to_tags_during_a_run_is_still_written(tmp_path):
    root = project(tmp_path, {"tasks": [task(1)], "metadata": {}})
    spec = load_spec(root)
    assert spec.tag is None
    # task-master migrates the legacy file to the tagged layout on its next command
    spec.tasks_path.write_text(json.dumps({"master": {"tasks": [task(1)]}}, indent=2))
    PlanStore(spec.tasks_path, document_format(spec)).apply(TaskUpdate("1", status="pass"))
    assert json.loads(spec.tasks_path.read_text())["master"]["tasks"][0]["status"] == "done"


def test_an_update_for_a_task_that_is_gone_raises_keyerror(tmp_path):
    spec = load_spec(project(tmp_path, {"master": {"tasks": [task(1)]}}))
    fmt = TaskMasterJson("master")
    doc = fmt.parse(spec.tasks_path.read_text(), "t")
    with pytest.raises(KeyError):
        fmt.apply(doc, TaskUpdate("2", status="pass"))


def test_the_span_scanner_agrees_with_json_loads():
    text = (
        '{"a": [1, -2.5e3, true, false, null, "x\\"y", {"b": {}}, []], "a": "last", '
        '"u": "\\ud83d\\ude00"}'
    )
    root = scan_json(text)
    assert root.value == json.loads(text)
    assert root.member("a").value == "last"
    node = root.members[0][3].items[5]
    assert text[node.start : node.end] == '"x\\"y"'


_status = st.sampled_from(["pending", "in-progress", "done", "review", "blocked", None])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    statuses=st.lists(_status, min_size=1, max_size=6),
    sub_statuses=st.lists(_status, max_size=4),
    indent=st.sampled_from([None, 2, 4, "\t"]),
    compact=st.booleans(),
    ensure_ascii=st.booleans(),
    tagged=st.booleans(),
    final_newline=st.booleans(),
    update=st.sampled_from(["pending", "in_progress", "pass", "fail", "blocked"]),
    pick=st.integers(0, 5),
)
def test_random_layouts_change_only_the_status(
    tmp_path_factory,
    statuses,
    sub_statuses,
    indent,
    compact,
    ensure_ascii,
    tagged,
    final_newline,
    update,
    pick,
):
    tasks = []
    for i, s in enumerate(statuses, 1):
        t = {"id": i, "title": f"t{i} ü", "n": 1.5}
        if s is not None:
            t["status"] = s
        if i == 1:
            t["subtasks"] = [
                {"id": k, "title": "s", **({"status": x} if x else {})}
                for k, x in enumerate(sub_statuses, 1)
            ]
        tasks.append(t)
    data = (
        {"master": {"tasks": tasks}, "other": {"tasks": [{"id": 1, "status": "pending"}]}}
        if tagged
        else {"tasks": tasks, "metadata": {"x": 1}}
    )
    text = json.dumps(
        data,
        indent=indent,
        ensure_ascii=ensure_ascii,
        separators=(",", ":") if compact and indent is None else None,
    )
    text += "\n" if final_newline else ""
    root = project(tmp_path_factory.mktemp("tm"), None, text=text)
    spec = load_spec(root)
    tid = spec.units[pick % len(spec.units)].id
    PlanStore(spec.tasks_path, document_format(spec)).apply(
        TaskUpdate(tid, status=update, subtasks_status="pass" if update == "pass" else None)
    )
    after = spec.tasks_path.read_text()
    word = {
        "pending": "pending",
        "in_progress": "in-progress",
        "pass": "done",
        "fail": "blocked",
        "blocked": "blocked",
    }[update]
    expected = json.loads(text)
    holder = expected["master"] if tagged else expected
    target = next(t for t in holder["tasks"] if str(t["id"]) == tid)
    target["status"] = word
    if update == "pass":
        for s in target.get("subtasks", []):
            if s.get("status") != "done":
                s["status"] = "done"
    assert json.loads(after) == expected
    # outside the edited values, the text is the original text
    old_tokens = re.split(r'"status"\s*:\s*"[a-z-]*"', text)
    new_tokens = re.split(r'"status"\s*:\s*"[a-z-]*"', after)
    if len(old_tokens) == len(new_tokens):
        assert old_tokens == new_tokens
    else:  # a status key was inserted: only separators and the new member differ
        assert re.sub(r'[,\s]*"status"\s*:\s*"[a-z-]*"', "", after) == re.sub(
            r'[,\s]*"status"\s*:\s*"[a-z-]*"', "", text
        )
