"""The baseline for the engine-overhead benchmark: launch N agents with plain asyncio.

    python benchmarks/plain_launcher.py N [-j 16] [--trace FILE] [--durations FILE]

Runs ``sh benchmarks/sim_agent.sh DURATIONS TRACE`` N times, at most ``-j`` at once, each with
the environment specwave gives an agent (SPECWAVE_TASK_ID, ...), a ~2 KB prompt on stdin, its
stdout and stderr read line by line — the least any orchestrator must do — and nothing else
(no plan file, no Prefect, no process-tree sweep). Prints the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PROMPT = ("You are a worker. Implement the task described below.\n" * 40).encode()


async def one(tid: str, argv: list[str], sem: asyncio.Semaphore) -> int:
    async with sem:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        env.update({"SPECWAVE_TASK_ID": tid, "SPECWAVE_ATTEMPT": "1"})
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        out, _ = await proc.communicate(PROMPT)
        lines = out.decode().splitlines()
        assert lines and lines[-1] == "TASK COMPLETE", lines
        return proc.returncode


async def main_async(n: int, j: int, argv: list[str]) -> float:
    sem = asyncio.Semaphore(j)
    t = time.perf_counter()
    codes = await asyncio.gather(*(one(str(i + 1), argv, sem) for i in range(n)))
    assert set(codes) == {0}, codes
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("-j", type=int, default=16)
    ap.add_argument("--trace", default="")
    ap.add_argument("--durations", default="-")
    a = ap.parse_args()
    argv = ["sh", str(BENCH / "sim_agent.sh"), a.durations] + ([a.trace] if a.trace else [])
    wall = asyncio.run(main_async(a.n, a.j, argv))
    print(f"{a.n} agents, concurrency {a.j}: {wall:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
