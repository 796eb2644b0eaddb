"""Crash recovery decided without files or processes (tasks_lib.recovery), and the typed run
records it reads (tasks_lib.records): a damaged record is one line naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tasks_lib.records import AttemptRecord, MergeInfo, RecordError, RunRecord, WorkInfo
from tasks_lib.recovery import agents_to_reap, close_dead_run, passes_to_recover
from tasks_lib.runfolder import RunFolder
from tasks_lib.spec import SpecUnit
from tasks_lib.state import RunStatus, TaskStatus

HOST = "host-a"


def rec(
    tid: str, outcome: str = "pass", attempt: int = 1, ended: float = 1_700_000_042.0, **kw
) -> AttemptRecord:
    return AttemptRecord(
        task_id=tid,
        attempt=attempt,
        outcome=outcome,
        started=ended - 42,
        ended=ended,
        duration_s=42.0,
        **kw,
    )


# --------------------------------------------------------------------------- dead runs


def test_a_run_that_still_says_running_is_closed_as_died_and_crashed():
    holder = {"flow_run_id": "dead", "pid": 41, "host": HOST}
    record = RunRecord(status=RunStatus.RUNNING, run_id="dead", spec="s")
    verdict = close_dead_run(
        holder, record, "new", known_dead=True, this_host=HOST, pid_alive=False
    )
    assert verdict is not None and verdict.flow_run_id == "dead"
    assert verdict.record is not None and verdict.record.status == RunStatus.DIED
    assert verdict.record.spec == "s"  # the rest of its record is kept
    assert verdict.note == "the orchestrator (pid 41) died; found by run new"
    assert verdict.prefect_status is None  # Crashed


def test_a_run_that_ended_before_prefect_heard_keeps_its_record_and_gets_its_state():
    holder = {"flow_run_id": "dead", "pid": 41, "host": HOST}
    record = RunRecord(status=RunStatus.PARTIAL)
    verdict = close_dead_run(
        holder, record, "new", known_dead=False, this_host=HOST, pid_alive=False
    )
    assert verdict is not None and verdict.record is None
    assert verdict.prefect_status == RunStatus.PARTIAL
    assert verdict.note.startswith("the run ended partial (run.json)")


@pytest.mark.parametrize(
    "holder, alive",
    [
        ({"flow_run_id": "dead", "pid": 41, "host": "other-host"}, False),  # not ours to judge
        ({"flow_run_id": "dead", "pid": 41, "host": HOST}, True),  # it is alive
        ({"flow_run_id": "dead", "pid": "41", "host": HOST}, False),  # no usable pid
        ({"flow_run_id": "", "pid": 41, "host": HOST}, False),  # no flow run to fix
        ({"flow_run_id": "new", "pid": 41, "host": HOST}, False),  # this run (a retry)
    ],
)
def test_a_run_that_may_be_alive_or_is_not_another_one_is_left_alone(holder, alive):
    assert (
        close_dead_run(
            holder,
            RunRecord(status=RunStatus.RUNNING),
            "new",
            known_dead=False,
            this_host=HOST,
            pid_alive=alive,
        )
        is None
    )


def test_only_other_runs_agents_are_reaped():
    recorded = [{"run_id": "old", "pid": 1}, {"run_id": "new", "pid": 2}, {"pid": 3}]
    assert agents_to_reap(recorded, "new") == [{"run_id": "old", "pid": 1}, {"pid": 3}]


# --------------------------------------------------------------------------- lost passes


UNITS = [
    SpecUnit(id="1", description="one", attempts=2),
    SpecUnit(id="2", description="two"),
    SpecUnit(id="3", description="three", status=TaskStatus.PASS),
    SpecUnit(id="4", description="four"),
]


def test_a_pass_the_file_never_saw_is_recovered_with_its_attempts_and_result():
    attempts = {
        "1": [
            rec("1", "timeout"),
            rec(
                "1",
                attempt=2,
                ended=1_700_000_100.0,
                result={"status": "pass", "notes": "ok", "files_created": ["a.py"]},
            ),
        ],
        "2": [rec("2", "fail")],
        "3": [rec("3")],
    }
    updates = passes_to_recover(
        UNITS, {"1": {"completed_at": None}}, RunRecord(status=RunStatus.DIED), attempts
    )
    assert [u.task_id for u in updates] == ["1"]  # 2 failed, 3 is done, 4 never ran
    (u,) = updates
    assert (u.status, u.attempts, u.notes, u.clear_blocker) == ("pass", 4, "ok", True)
    assert u.completed_at == "2023-11-14T22:15:00Z" and u.artifacts == {"files_created": ["a.py"]}
    assert u.duration_minutes == 1.4


def test_a_pass_that_was_written_then_set_back_by_hand_runs_again():
    attempts = {"2": [rec("2")]}
    written = {"2": {"completed_at": "2023-11-14T22:14:02Z", "status": "pending"}}
    assert passes_to_recover(UNITS, written, RunRecord(status=RunStatus.RUNNING), attempts) == []


@pytest.mark.parametrize("status", ["success", "partial", "blocked", "stopped", "cancelled"])
def test_a_run_that_ended_normally_is_never_credited(status):
    assert passes_to_recover(UNITS, {}, RunRecord(status=status), {"2": [rec("2")]}) == []


@pytest.mark.parametrize("status", ["running", "died", "failed", None])
def test_a_run_that_was_killed_or_failed_a_write_is_credited(status):
    last = RunRecord(status=status) if status else None
    assert [u.task_id for u in passes_to_recover(UNITS, {}, last, {"2": [rec("2")]})] == ["2"]


WORK = WorkInfo(
    branch="specwave/s--2",
    integration="specwave/s",
    worktree="/w",
    base="b",
    commit="c",
    changed=True,
)


@pytest.mark.parametrize(
    ("merge", "in_branch", "credited"),
    [
        (None, False, False),  # killed before its merge: it runs again, from the new head
        (None, True, True),  # killed after the merge, before the record said so
        (MergeInfo(status="merged", commit="m"), False, True),
        (MergeInfo(status="up_to_date", commit="m"), False, True),
        (MergeInfo(status="conflict", files=["a"]), True, False),
        (MergeInfo(status="verify_failed"), False, False),
    ],
)
def test_a_worktree_pass_is_credited_only_once_its_work_is_merged(merge, in_branch, credited):
    last = RunRecord(status=RunStatus.RUNNING)
    attempts = {"2": [rec("2", work=WORK, merge=merge)]}
    asked: list[str] = []

    def merged(record: AttemptRecord) -> bool:
        asked.append(record.work.commit)
        return in_branch

    got = [u.task_id for u in passes_to_recover(UNITS, {}, last, attempts, merged=merged)]
    assert got == (["2"] if credited else [])
    assert asked == (["c"] if merge is None else [])  # git is asked only when the record is silent


# --------------------------------------------------------------------------- records on disk


def test_records_round_trip_with_the_keys_earlier_versions_wrote(tmp_path):
    folder = RunFolder(tmp_path, "r1")
    r = rec("a/b", "crashed", exit_code=3, info={"total_cost_usd": 0.25, "num_turns": 2})
    folder.write_attempt(r)
    raw = json.loads(folder.attempt_path("a/b", 1).read_text())
    assert {
        "task_id",
        "attempt",
        "outcome",
        "reason",
        "started",
        "ended",
        "duration_s",
        "timeout_seconds",
        "result",
        "exit_code",
        "info",
        "killed_pids",
        "final",
        "output_tail",
    } <= set(raw)
    assert raw["outcome"] == "crashed"
    (back,) = folder.attempts("a/b")
    assert back == r and back.cost_usd == 0.25
    folder.write_run(RunRecord(status=RunStatus.SUCCESS, spec="s", tasks={"a/b": {}}))
    assert folder.read_run() == RunRecord(status=RunStatus.SUCCESS, spec="s", tasks={"a/b": {}})
    assert RunFolder(tmp_path, "none").read_run() is None


@pytest.mark.parametrize(
    "text, detail",
    [
        (
            '{"task_id": "1", "attempt": 1, "outcome": "pass", "started": 1}',
            "ended: Field required",
        ),
        (
            '{"task_id": "1", "attempt": 1, "outcome": "maybe", "started": 1, "ended": 2}',
            "outcome: Input should be",
        ),
        ("not json", "Invalid JSON"),
    ],
)
def test_a_damaged_attempt_record_is_one_line_naming_the_file(tmp_path, text, detail):
    folder = RunFolder(tmp_path, "r1")
    path = folder.attempt_path("1", 1)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(RecordError) as err:
        folder.attempts("1")
    line = str(err.value)
    assert "\n" not in line and line.startswith(str(path)) and detail in line
    assert "move it out of the run folder" in line


def test_a_damaged_run_record_is_one_line_naming_the_file(tmp_path):
    folder = RunFolder(tmp_path, "r1")
    folder.root.mkdir(parents=True)
    (folder.root / "run.json").write_text('{"status": "exploded"}')
    with pytest.raises(RecordError, match=r"run\.json: is not a valid RunRecord \(status: "):
        folder.read_run()


def test_run_folders_are_found_from_their_root(tmp_path):
    a, b = RunFolder(tmp_path, "a"), RunFolder(tmp_path, "b")
    a.write_run(RunRecord(status=RunStatus.SUCCESS))
    b.write_run(RunRecord(status=RunStatus.PARTIAL))
    os.utime(b.root / "run.json", (1_000, 1_000))  # b's record is older
    assert RunFolder.latest(tmp_path).run_id == "a"
    assert RunFolder.at(a.root).spec_folder == Path(tmp_path) and RunFolder.at(a.root).run_id == "a"
    assert RunFolder.latest(tmp_path / "nothing") is None
