"""The agent runner alone: ``run_process_group`` against plain asyncio, no Prefect.

    python benchmarks/process_overhead.py                 # 200 zero-work agents, one at a time
    python benchmarks/process_overhead.py --engine /tmp/base -n 100

Each round launches ``/bin/sh -c "exit 0"`` once with plain asyncio (create_subprocess_exec,
communicate) and once with ``tasks_lib.agents.process.run_process_group`` (exit detection, the
process-tree sweep, output pumps, tracker), alternately, one at a time. Reported per agent:
wall time from the call to its return (p50, p90, mean) and the CPU time of this process
(all threads: the sweep runs in one). ``--engine`` imports the runner from another checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ARGV = ["/bin/sh", "-c", "exit 0"]


async def plain() -> None:
    proc = await asyncio.create_subprocess_exec(
        *ARGV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    await proc.communicate()


async def main(n: int) -> None:
    from tasks_lib.agents.process import run_process_group

    async def ours() -> None:
        await run_process_group(ARGV, cwd="/tmp", env=dict(os.environ))

    walls: dict[str, list[float]] = {"plain asyncio": [], "run_process_group": []}
    cpu = dict.fromkeys(walls, 0.0)
    for _ in range(n):
        for name, launch in (("plain asyncio", plain), ("run_process_group", ours)):
            c0, t0 = time.process_time(), time.perf_counter()
            await launch()
            walls[name].append((time.perf_counter() - t0) * 1000)
            cpu[name] += time.process_time() - c0
    print(f"{n} zero-work agents, one at a time; load {os.getloadavg()[0]:.1f}")
    print("| launcher | p50 ms | p90 ms | mean ms | CPU ms/agent |")
    print("|---|---:|---:|---:|---:|")
    for name, values in walls.items():
        values.sort()
        print(
            f"| {name} | {values[len(values) // 2]:.2f} | {values[int(len(values) * 0.9)]:.2f}"
            f" | {statistics.mean(values):.2f} | {cpu[name] / n * 1000:.2f} |"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="agents per launcher")
    ap.add_argument(
        "--engine",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="import tasks_lib from this checkout",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(args.engine.resolve()))
    asyncio.run(main(args.n))
