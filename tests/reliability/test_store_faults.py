"""Items 4 and 5: the store under concurrent writers and crashes.

* threads and processes update different tasks of one tasks.json at once while a reader
  parses the file continuously, and some writers are SIGKILLed mid-run: no update of a
  surviving writer is lost, the file is valid at every read, no temp file stays behind;
* a writer killed at each point of the atomic write (half-way through the temp file, with
  the temp file complete but not renamed, after the rename): the file holds the old text or
  the new text, whole, and the stray temp file is removed by the next write (none
  accumulate).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks_lib.formats import load_spec
from tasks_lib.formats.agentos import AgentOsJson
from tasks_lib.store import PlanStore, TaskUpdate, stray_temp_files
from tests.reliability.conftest import write_spec

WRITER = Path(__file__).with_name("store_writer.py")


def tasks_by_id(path: Path) -> dict[str, dict]:
    return {str(t["id"]): t for t in json.loads(path.read_text())["tasks"]}


def spawn_writer(
    path: Path, tasks: list[str], rounds: int, name: str, crash_at: str | None = None
) -> subprocess.Popen:
    argv = [
        sys.executable,
        str(WRITER),
        str(path),
        "--tasks",
        ",".join(tasks),
        "--rounds",
        str(rounds),
        "--name",
        name,
    ]
    if crash_at:
        argv += ["--crash-at", crash_at]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Reader(threading.Thread):
    """Parses the file as fast as it can; records every read that is not a whole document."""

    def __init__(self, path: Path, ids: set[str]):
        super().__init__(daemon=True)
        self.path, self.ids = path, ids
        self.stop = threading.Event()
        self.reads = 0
        self.bad: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                text = self.path.read_text(encoding="utf-8")
                doc = json.loads(text)
                if {str(t["id"]) for t in doc["tasks"]} != self.ids:
                    self.bad.append("task set changed")
            except Exception as exc:  # noqa: BLE001 - any failure is a finding
                self.bad.append(repr(exc))
            self.reads += 1


def test_threads_and_processes_and_killed_writers_lose_no_surviving_update(tmp_path):
    n_proc, n_thread, n_killed, per, rounds = 4, 4, 3, 3, 12
    groups = n_proc + n_thread + n_killed
    ids = [str(i) for i in range(1, groups * per + 1)]
    spec = write_spec(tmp_path / "spec", [ids], max_workers=8)
    path = spec / "tasks.json"
    share = [ids[i * per : (i + 1) * per] for i in range(groups)]
    reader = Reader(path, set(ids))
    reader.start()
    procs = [spawn_writer(path, share[i], rounds, f"p{i}") for i in range(n_proc)]
    victims = [
        spawn_writer(path, share[n_proc + n_thread + i], 1000, f"k{i}") for i in range(n_killed)
    ]
    errors: list[BaseException] = []

    def thread_writer(i: int) -> None:
        store = PlanStore(path, AgentOsJson())
        try:
            for r in range(1, rounds + 1):
                for tid in share[n_proc + i]:
                    store.apply(
                        TaskUpdate(
                            tid,
                            attempts=r,
                            notes=f"t{i} round {r}",
                            status="in_progress" if r % 2 else "pending",
                        )
                    )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=thread_writer, args=(i,)) for i in range(n_thread)]
    for t in threads:
        t.start()
    rng = random.Random(7)
    for v in victims:  # SIGKILL the victims at random moments while the others write
        time.sleep(rng.uniform(0.2, 1.0))
        v.send_signal(signal.SIGKILL)
    for t in threads:
        t.join(300)
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "done" in out, err
    for v in victims:
        v.wait(30)
        assert v.returncode == -signal.SIGKILL
    reader.stop.set()
    reader.join(30)
    assert errors == []
    assert reader.bad == [] and reader.reads > 50, (reader.reads, reader.bad[:5])

    tasks = tasks_by_id(path)
    for i in range(n_proc + n_thread):  # every surviving writer's last update is there
        for tid in share[i]:
            assert tasks[tid]["attempts"] == rounds, (tid, tasks[tid])
            assert tasks[tid]["notes"].endswith(f"round {rounds}")
    for i in range(n_killed):  # a killed writer's tasks hold one of its whole updates
        for tid in share[n_proc + n_thread + i]:
            t = tasks[tid]
            assert t["attempts"] == 0 or t["notes"] == f"k{i} round {t['attempts']}", t
    load_spec(spec)  # still a valid spec
    # a victim killed between its temp file and the rename may have left one; the next write
    # removes it
    PlanStore(path, AgentOsJson()).apply(TaskUpdate(ids[0], notes="final"))
    assert stray_temp_files(spec, "tasks.json") == []


@pytest.mark.parametrize("point", ["mid-write", "before-replace", "after-replace"])
def test_a_crash_inside_the_atomic_write_leaves_a_whole_file_and_no_accumulating_temp(
    tmp_path, point
):
    spec = write_spec(tmp_path / "spec", [["1", "2", "3"]])
    path = spec / "tasks.json"
    for cycle in range(1, 4):
        before = path.read_bytes()
        p = spawn_writer(path, ["1"], 1, f"crash{cycle}", crash_at=point)
        p.communicate(timeout=120)
        assert p.returncode == -signal.SIGKILL, point
        after = path.read_bytes()
        doc = json.loads(after)  # whole, valid
        t1 = {str(t["id"]): t for t in doc["tasks"]}["1"]
        if point == "after-replace":
            assert t1["notes"] == f"crash{cycle} round 1"  # the new file, whole
        else:
            assert after == before  # the old file, byte for byte
        strays = stray_temp_files(spec, "tasks.json")
        assert len(strays) == (1 if point != "after-replace" else 0), strays
        # the next write (any writer) removes the stray: they never pile up
        PlanStore(path, AgentOsJson()).apply(TaskUpdate("2", attempts=cycle))
        assert stray_temp_files(spec, "tasks.json") == []
        assert tasks_by_id(path)["2"]["attempts"] == cycle
    load_spec(spec)
