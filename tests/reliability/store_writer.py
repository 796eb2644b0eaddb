"""A separate process that writes a plan file through the store (tests/reliability only).

    python store_writer.py TASKS_JSON --tasks 1,2,3 --rounds 20 [--crash-at POINT]

For each round, for each of its tasks: one locked store.apply setting ``attempts`` to the
round number (and ``notes`` to the writer's name). ``--crash-at`` makes the process SIGKILL
itself at that point of its first write — ``mid-write`` (half of the temp file written),
``before-replace`` (temp file complete and fsynced, not yet renamed), ``after-replace`` (renamed,
folder not yet fsynced) — to show what a crash there leaves behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tasks_lib.formats.agentos import AgentOsJson  # noqa: E402
from tasks_lib.store import PlanStore, TaskUpdate  # noqa: E402


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install_crash(point: str, target: Path) -> None:
    real_replace, real_fsync, real_fdopen = os.replace, os.fsync, os.fdopen

    if point == "before-replace":

        def replace(src, dst, *a, **kw):
            if Path(dst) == target:
                die()
            return real_replace(src, dst, *a, **kw)

        os.replace = replace
    elif point == "after-replace":
        state = {"replaced": False}

        def replace(src, dst, *a, **kw):
            r = real_replace(src, dst, *a, **kw)
            if Path(dst) == target:
                state["replaced"] = True
            return r

        def fsync(fd):
            if state["replaced"]:
                die()
            return real_fsync(fd)

        os.replace, os.fsync = replace, fsync
    elif point == "mid-write":

        class Half:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, data):
                self.fh.write(data[: len(data) // 2])
                self.fh.flush()
                die()

            def __getattr__(self, name):
                return getattr(self.fh, name)

        def fdopen(fd, *a, **kw):
            return Half(real_fdopen(fd, *a, **kw))

        os.fdopen = fdopen
    else:
        raise SystemExit(f"unknown crash point {point}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--name", default=f"proc-{os.getpid()}")
    ap.add_argument("--crash-at")
    args = ap.parse_args()
    path = Path(args.path)
    if args.crash_at:
        install_crash(args.crash_at, path.resolve())
    store = PlanStore(path, AgentOsJson())
    tasks = args.tasks.split(",")
    for r in range(1, args.rounds + 1):
        for tid in tasks:
            store.apply(
                TaskUpdate(
                    tid,
                    attempts=r,
                    notes=f"{args.name} round {r}",
                    status="in_progress" if r % 2 else "pending",
                )
            )
    print("done", flush=True)


if __name__ == "__main__":
    main()
