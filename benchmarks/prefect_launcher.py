"""The floor for any Prefect-based engine: N agents, each launched by its own Prefect task run.

    python benchmarks/prefect_launcher.py N [-j 16] [--trace FILE]

One async flow; each agent is one task run (no tags, no caching, results in memory) that
starts ``sh benchmarks/sim_agent.sh - TRACE`` with asyncio, writes a ~2 KB prompt to its
stdin and reads its output; at most ``-j`` at once. Whatever specwave costs above this is
specwave's own; what this costs above benchmarks/plain_launcher.py is Prefect's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

BENCH = Path(__file__).resolve().parent
PROMPT = ("You are a worker. Implement the task described below.\n" * 40).encode()


@task(cache_policy=NO_CACHE, persist_result=False)
async def launch(tid: str, argv: list[str]) -> int:
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
    assert out.decode().splitlines()[-1] == "TASK COMPLETE"
    return proc.returncode


@flow(persist_result=False)
async def launch_all(n: int, j: int, argv: list[str]) -> int:
    sem = asyncio.Semaphore(j)

    async def one(i: int) -> int:
        async with sem:
            return await launch(str(i + 1), argv)

    codes = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(codes)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("-j", type=int, default=16)
    ap.add_argument("--trace", default="")
    a = ap.parse_args()
    argv = ["sh", str(BENCH / "sim_agent.sh"), "-"] + ([a.trace] if a.trace else [])
    return asyncio.run(launch_all(a.n, a.j, argv))


if __name__ == "__main__":
    raise SystemExit(main())
