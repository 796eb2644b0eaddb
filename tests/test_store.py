"""The store: locked, atomic, lossless writes of the user's tasks.json
(real files, real processes)."""

from __future__ import annotations

import copy
import difflib
import errno
import hashlib
import json
import multiprocessing
import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks_lib import jsondoc
from tasks_lib import store as store_mod
from tasks_lib.formats.agentos import AgentOsJson
from tasks_lib.jsondoc import JsonStyle, RawFloat
from tasks_lib.store import PlanStore, TaskUpdate, WriteFailed, stray_temp_files

NOW = "2030-01-02T03:04:05Z"


def make_store(path: Path) -> PlanStore:
    return PlanStore(path, AgentOsJson(), now=lambda: NOW)


def fingerprint(path: Path) -> tuple:
    st_ = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st_.st_ino, st_.st_mtime_ns


def base_doc() -> dict:
    """A small v2 tasks.json with unknown fields at every level."""
    return {
        "$schema": "https://example.invalid/tasks.schema.json",
        "version": "2.0",
        "spec": "store-test",
        "x_top": {"keep": [1, RawFloat("2.50"), "three"]},
        "created": "2025-01-01T00:00:00Z",
        "updated": "2025-01-01T00:00:00Z",
        "execution_strategy": {
            "mode": "parallel_waves",
            "x_strategy": True,
            "waves": [
                {"wave_id": 1, "tasks": ["1", "2"], "rationale": "independent", "x_wave": "w1"},
                {"wave_id": 2, "tasks": ["3"], "rationale": "after 1"},
            ],
        },
        "tasks": [
            {
                "id": "1",
                "type": "parent",
                "subtasks": ["1.1", "1.2"],
                "progress_percent": 0,
                "description": "first",
                "status": "pending",
                "x_task": {"nested": {"deep": None}},
                "parallelization": {
                    "wave": 1,
                    "blocked_by": [],
                    "blocks": ["3"],
                    "shared_files": ["a.py"],
                    "x_par": 7,
                },
                "artifacts": {"files_modified": ["old.py"], "x_art": "kept"},
            },
            {
                "id": "1.1",
                "type": "subtask",
                "parent": "1",
                "description": "first a",
                "status": "pending",
                "x_sub": 1.0,
            },
            {
                "id": "1.2",
                "type": "subtask",
                "parent": "1",
                "description": "first b",
                "status": "pending",
            },
            {
                "id": "2",
                "type": "parent",
                "subtasks": [],
                "description": "second",
                "status": "pending",
                "parallelization": {
                    "wave": 1,
                    "blocked_by": [],
                    "blocks": [],
                    "shared_files": ["b.py"],
                },
            },
            {
                "id": "3",
                "type": "parent",
                "subtasks": [],
                "description": "third",
                "status": "pending",
                "parallelization": {
                    "wave": 2,
                    "blocked_by": ["1"],
                    "blocks": [],
                    "shared_files": ["a.py"],
                },
            },
        ],
        "summary": {
            "total_tasks": 5,
            "parent_tasks": 3,
            "subtasks": 2,
            "completed": 0,
            "in_progress": 0,
            "blocked": 0,
            "pending": 5,
            "overall_percent": 0,
            "parallel_waves": 2,
            "max_parallelism": 2,
            "x_summary": "kept",
        },
        "x_tail": [],
    }


def write(folder: Path, doc, style: JsonStyle | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tasks.json"
    path.write_bytes(jsondoc.dumps(doc, style or JsonStyle()).encode("utf-8"))
    return path


def key_paths(obj, prefix: str = "") -> list[str]:
    """Every key path in document order (dict keys and list positions)."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(f"{prefix}.{k}")
            out.extend(key_paths(v, f"{prefix}.{k}"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(key_paths(v, f"{prefix}[{i}]"))
    return out


def task(doc: dict, tid) -> dict:
    return next(t for t in doc["tasks"] if str(t["id"]) == str(tid))


# ------------------------------------------------------------------ no change, no write


@pytest.mark.parametrize("name", ["small-feature", "checkout-api"])
def test_an_edit_that_changes_nothing_writes_nothing(example, name: str):
    path = example(name) / "tasks.json"
    before = fingerprint(path)
    store = make_store(path)
    with store.edit():
        pass
    first = json.loads(path.read_text(encoding="utf-8"))["tasks"][0]
    # re-recording a value the file already holds is no change either
    store.apply(TaskUpdate(str(first["id"]), status=first["status"]))
    assert fingerprint(path) == before
    assert stray_temp_files(path.parent, path.name) == []


def test_a_file_the_renderer_cannot_reproduce_is_not_rewritten_by_a_no_op(tmp_path: Path):
    # regression: edit() compared the re-rendered text with the file, so a hand-formatted file
    # (odd spacing) was reformatted, and its "updated" bumped, by an edit that changed nothing
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "tasks.json"
    path.write_text(
        '{ "version" : "2.0", "updated": "2025-01-01T00:00:00Z",\n'
        '  "tasks" : [ {"id": "1",   "status": "pending"} ] }\n',
        encoding="utf-8",
    )
    before = fingerprint(path)
    make_store(path).apply(TaskUpdate("1", status="pending"))
    assert fingerprint(path) == before


# ------------------------------------------------------------------ a change is surgical


def test_a_change_keeps_unknown_fields_and_key_order_at_every_level(tmp_path: Path):
    doc = base_doc()
    path = write(tmp_path, doc)
    make_store(path).apply(
        TaskUpdate(
            "2", status="pass", attempts=1, notes="done", artifacts={"files_modified": ["b.py"]}
        )
    )
    after = jsondoc.loads(path.read_text(encoding="utf-8"))

    expected = copy.deepcopy(doc)
    t2 = task(expected, "2")
    t2.update(status="pass", attempts=1, notes="done", artifacts={"files_modified": ["b.py"]})
    expected["updated"] = NOW
    expected["summary"].update(completed=1, pending=4, overall_percent=20)
    assert after == expected
    # old keys keep their place; new keys come after them
    old_paths = key_paths(doc)
    new_paths = key_paths(after)
    assert [p for p in new_paths if p in old_paths] == old_paths
    assert after["x_top"]["keep"][1].raw == "2.50"
    assert list(after)[-1] == "x_tail"


def test_artifacts_merge_into_an_existing_block_and_keep_its_unknown_fields(tmp_path: Path):
    path = write(tmp_path, base_doc())
    make_store(path).apply(
        TaskUpdate("1", artifacts={"files_modified": ["old.py", "new.py"], "test_files": ["t.py"]})
    )
    arts = task(json.loads(path.read_text(encoding="utf-8")), "1")["artifacts"]
    assert arts == {"files_modified": ["old.py", "new.py"], "x_art": "kept", "test_files": ["t.py"]}


def test_integer_ids_stay_integers(tmp_path: Path):
    doc = base_doc()
    id_map = {"1": 1, "1.1": 11, "1.2": 12, "2": 2, "3": 3}
    for t in doc["tasks"]:
        t["id"] = id_map[t["id"]]
        if "parent" in t:
            t["parent"] = id_map[t["parent"]]
        t["subtasks"] = [id_map[s] for s in t.get("subtasks", [])]
        par = t.get("parallelization")
        if par:
            par["blocked_by"] = [id_map[x] for x in par["blocked_by"]]
            par["blocks"] = [id_map[x] for x in par["blocks"]]
    for w in doc["execution_strategy"]["waves"]:
        w["tasks"] = [id_map[x] for x in w["tasks"]]
    path = write(tmp_path, doc)
    make_store(path).apply(TaskUpdate("1", status="pass", subtasks_status="pass"))
    text = path.read_text(encoding="utf-8")
    after = json.loads(text)
    assert [t["id"] for t in after["tasks"]] == [1, 11, 12, 2, 3]
    assert all(type(t["id"]) is int for t in after["tasks"])
    assert task(after, 1)["subtasks"] == [11, 12]
    assert task(after, 3)["parallelization"]["blocked_by"] == [1]
    assert after["execution_strategy"]["waves"][0]["tasks"] == [1, 2]
    assert [task(after, i)["status"] for i in (1, 11, 12, 2)] == ["pass", "pass", "pass", "pending"]
    assert '"id": "1"' not in text


STYLES = {
    "indent-2": JsonStyle(indent="  "),
    "indent-4": JsonStyle(indent="    "),
    "tab": JsonStyle(indent="\t"),
    "indent-2-inline-arrays": JsonStyle(indent="  ", inline_scalar_arrays=True),
    "indent-4-inline-crlf-bom": JsonStyle(
        indent="    ", inline_scalar_arrays=True, newline="\r\n", bom=True
    ),
    "tab-ascii-no-final-newline": JsonStyle(indent="\t", ensure_ascii=True, final_newline=False),
    "one-line": JsonStyle(indent=None),
    "compact": JsonStyle(indent=None, compact_separators=True),
}


@pytest.mark.parametrize("style_name", STYLES, ids=str)
def test_a_change_keeps_the_file_style(tmp_path: Path, style_name: str):
    style = STYLES[style_name]
    doc = base_doc()
    task(doc, "2")["description"] = "zweite Aufgabe — ünïcode"
    path = write(tmp_path, doc, style)
    make_store(path).apply(TaskUpdate("2", status="in_progress", started_at=NOW))
    text = path.read_bytes().decode("utf-8")

    expected = copy.deepcopy(doc)
    task(expected, "2").update(status="in_progress", started_at=NOW)
    expected["updated"] = NOW
    expected["summary"].update(in_progress=1, pending=4)
    # byte-identical to writing the expected document in the original style
    assert text == jsondoc.dumps(expected, style)
    assert jsondoc.detect_style(text) == jsondoc.detect_style(jsondoc.dumps(doc, style))


def test_a_file_restyled_between_two_writes_keeps_its_new_style(tmp_path: Path):
    """The store remembers the style of the text it wrote (detecting it again costs a pass
    over the file on every write), but only for that exact text: a file someone reformatted
    in the meantime is written back in the new style."""
    doc = base_doc()
    path = write(tmp_path, doc, STYLES["tab-ascii-no-final-newline"])
    store = make_store(path)
    store.apply(TaskUpdate("1", status="in_progress"))
    store.apply(TaskUpdate("1", status="pass"))
    assert path.read_text().startswith('{\n\t"')
    restyled = json.loads(path.read_text())
    path.write_text(json.dumps(restyled, indent=4) + "\n")  # someone reformats it
    store.apply(TaskUpdate("2", status="in_progress"))
    text = path.read_text()
    assert text.startswith('{\n    "') and text.endswith("}\n")
    task(restyled, "2")["status"] = "in_progress"
    restyled["summary"].update(in_progress=1, pending=restyled["summary"]["pending"] - 1)
    assert json.loads(text) == restyled


def test_only_the_changed_lines_differ(tmp_path: Path):
    path = write(tmp_path, base_doc(), JsonStyle(indent="    ", inline_scalar_arrays=True))
    before = path.read_text(encoding="utf-8").splitlines()
    make_store(path).apply(TaskUpdate("3", status="blocked", blocker="needs a key"))
    after = path.read_text(encoding="utf-8").splitlines()
    diff = [
        line
        for line in difflib.unified_diff(before, after, lineterm="", n=0)
        if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert diff == [
        '-    "updated": "2025-01-01T00:00:00Z",',
        '+    "updated": "2030-01-02T03:04:05Z",',
        '-            "status": "pending",',
        '+            "status": "blocked",',
        "-            }",
        "+            },",
        '+            "blocker": "needs a key"',  # a new key goes after the existing ones
        '-        "blocked": 0,',
        '-        "pending": 5,',
        '+        "blocked": 1,',
        '+        "pending": 4,',
    ]


def test_summary_updated_and_progress_are_recomputed(tmp_path: Path):
    path = write(tmp_path, base_doc())
    store = make_store(path)
    store.apply(TaskUpdate("1.1", status="pass"))
    after = json.loads(path.read_text(encoding="utf-8"))
    assert after["updated"] == NOW
    assert task(after, "1")["progress_percent"] == 50
    assert after["summary"]["completed"] == 1 and after["summary"]["pending"] == 4

    store.apply(
        TaskUpdate("1", status="pass", subtasks_status="pass"),
        TaskUpdate("2", status="fail", blocker="tests failed"),
        TaskUpdate("3", status="skipped"),
        run_state={"run_id": "r-1"},
    )
    after = json.loads(path.read_text(encoding="utf-8"))
    s = after["summary"]
    assert task(after, "1")["progress_percent"] == 100
    assert (s["total_tasks"], s["parent_tasks"], s["subtasks"]) == (5, 3, 2)
    assert (s["completed"], s["blocked"], s["pending"], s["in_progress"]) == (4, 1, 0, 0)
    assert s["overall_percent"] == 80
    assert (s["parallel_waves"], s["max_parallelism"]) == (2, 2)
    assert s["x_summary"] == "kept"
    assert after["orchestrator_state"] == {"run_id": "r-1"}


def test_an_update_for_an_unknown_task_raises_and_writes_nothing(tmp_path: Path):
    path = write(tmp_path, base_doc())
    before = fingerprint(path)
    with pytest.raises(KeyError, match='"9"'):
        make_store(path).apply(TaskUpdate("2", status="pass"), TaskUpdate("9", status="pass"))
    assert fingerprint(path) == before


# ---------------------------------------------------- generated files full of unknown fields

unknown_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
unknown_fields = st.dictionaries(
    st.text(min_size=1, max_size=8).map(lambda s: "x_" + s), unknown_values, max_size=4
)


@st.composite
def noisy_docs(draw) -> dict:
    """base_doc() with random unknown fields spliced in at every level, at random positions."""
    doc = base_doc()

    def splice(obj: dict) -> dict:
        extra = draw(unknown_fields)
        items = list(obj.items())
        for k, v in extra.items():
            if k not in obj:
                items.insert(draw(st.integers(0, len(items))), (k, v))
        return dict(items)

    doc["execution_strategy"]["waves"] = [splice(w) for w in doc["execution_strategy"]["waves"]]
    doc["execution_strategy"] = splice(doc["execution_strategy"])
    new_tasks = []
    for t in doc["tasks"]:
        for sub in ("parallelization", "artifacts"):
            if sub in t:
                t[sub] = splice(t[sub])
        new_tasks.append(splice(t))
    doc["tasks"] = new_tasks
    doc["summary"] = splice(doc["summary"])
    return splice(doc)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    doc=noisy_docs(),
    style=st.sampled_from(list(STYLES.values())),
    status=st.sampled_from(["pass", "fail", "in_progress", "blocked"]),
)
def test_generated_files_full_of_unknown_fields_survive_an_update(doc, style, status):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), doc, style)
        make_store(path).apply(TaskUpdate("3", status=status, notes="n"))
        text = path.read_bytes().decode("utf-8")
    after = jsondoc.loads(text)
    expected = copy.deepcopy(doc)
    task(expected, "3").update(status=status, notes="n")
    AgentOsJson().finalize(expected, NOW)
    assert after == expected
    assert key_paths(after) == key_paths(expected)
    assert text == jsondoc.dumps(expected, style)


# ----------------------------------------------------------------------- concurrent writers

WORKERS = 8
UPDATES_PER_WORKER = 25


def _concurrent_writer(path: str, worker: int, barrier) -> None:
    """Child process: 25 updates, each to its own task, through the real store."""
    store = PlanStore(Path(path), AgentOsJson())
    barrier.wait()
    for k in range(UPDATES_PER_WORKER):
        store.apply(
            TaskUpdate(
                f"w{worker}-{k}", status="pass", attempts=k + 1, notes=f"worker {worker} update {k}"
            ),
            run_state={f"worker_{worker}": k},
        )


def test_concurrent_writers_lose_no_update(tmp_path: Path):
    tasks = [
        {
            "id": f"w{w}-{k}",
            "type": "parent",
            "description": f"task {w}/{k}",
            "status": "pending",
            "attempts": 0,
            "notes": None,
        }
        for w in range(WORKERS)
        for k in range(UPDATES_PER_WORKER)
    ]
    doc = {
        "version": "2.0",
        "spec": "concurrency",
        "updated": "2025-01-01T00:00:00Z",
        "tasks": tasks,
        "summary": {"total_tasks": len(tasks), "completed": 0},
    }
    style = JsonStyle(indent="\t", inline_scalar_arrays=True)
    path = write(tmp_path, doc, style)

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    procs = [
        ctx.Process(target=_concurrent_writer, args=(str(path), w, barrier)) for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert [p.exitcode for p in procs] == [0] * WORKERS

    text = path.read_text(encoding="utf-8")
    after = json.loads(text)  # valid JSON, whole
    for w in range(WORKERS):
        for k in range(UPDATES_PER_WORKER):
            t = task(after, f"w{w}-{k}")
            assert (t["status"], t["attempts"], t["notes"]) == (
                "pass",
                k + 1,
                f"worker {w} update {k}",
            ), t
    assert after["orchestrator_state"] == {
        f"worker_{w}": UPDATES_PER_WORKER - 1 for w in range(WORKERS)
    }
    assert after["summary"] == {
        "total_tasks": len(tasks),
        "completed": len(tasks),
        **{k: v for k, v in after["summary"].items() if k not in ("total_tasks", "completed")},
    }
    assert after["summary"]["pending"] == 0
    assert jsondoc.detect_style(text).indent == "\t"
    assert stray_temp_files(path.parent, path.name) == []


# ----------------------------------------------------------------------- failed writes


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("failing_call", ["os.replace", "os.fsync", "tempfile.mkstemp"])
def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch, failing_call: str
):
    path = write(tmp_path, base_doc())
    before = fingerprint(path)
    module, name = failing_call.split(".")
    monkeypatch.setattr(getattr(store_mod, module), name, _disk_full)
    with pytest.raises(WriteFailed, match="No space left on device"):
        make_store(path).apply(TaskUpdate("1", status="pass"))
    monkeypatch.undo()
    assert fingerprint(path) == before
    assert stray_temp_files(path.parent, path.name) == []
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    # the store still works afterwards (the lock was released)
    make_store(path).apply(TaskUpdate("1", status="pass"))
    assert task(json.loads(path.read_text(encoding="utf-8")), "1")["status"] == "pass"


def test_a_lock_folder_that_cannot_be_created_raises_write_failed(tmp_path: Path):
    path = write(tmp_path, base_doc())
    (tmp_path / ".specwave").write_text("a file where the state folder should be")
    before = fingerprint(path)
    with pytest.raises(WriteFailed, match="lock"):
        make_store(path).apply(TaskUpdate("1", status="pass"))
    assert fingerprint(path) == before


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664, 0o444])
def test_file_mode_is_preserved(tmp_path: Path, mode: int):
    path = write(tmp_path, base_doc())
    os.chmod(path, mode)
    make_store(path).apply(TaskUpdate("2", status="pass"))
    assert task(json.loads(path.read_text(encoding="utf-8")), "2")["status"] == "pass"
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_symlinked_plan_file_stays_a_symlink(tmp_path: Path):
    real = write(tmp_path / "real", base_doc())
    link = tmp_path / "real" / "link.json"
    link.symlink_to(real.name)
    make_store(link).apply(TaskUpdate("2", status="pass"))
    assert link.is_symlink()
    assert task(json.loads(real.read_text(encoding="utf-8")), "2")["status"] == "pass"
