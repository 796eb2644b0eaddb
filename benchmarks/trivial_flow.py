"""Prefect's own trivial flow, for the first-launch benchmark: one flow, one task, which
launches the simulated agent once (the same command ``specwave run`` launches).

    python benchmarks/trivial_flow.py TRACE_FILE

Runs in whatever mode the environment selects (PREFECT_API_URL set: that server; unset: the
ephemeral API), exactly like ``specwave run``.
"""

import asyncio
import subprocess
import sys
from pathlib import Path

from prefect import flow, task

AGENT = Path(__file__).resolve().parent / "sim_agent.sh"


@task
async def launch(trace: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        "sh",
        str(AGENT),
        "-",
        trace,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={"SPECWAVE_TASK_ID": "1", "PATH": "/usr/bin:/bin"},
    )
    await proc.communicate(b"prompt")
    return proc.returncode


@flow
async def trivial(trace: str) -> int:
    return await launch(trace)


if __name__ == "__main__":
    asyncio.run(trivial(sys.argv[1]))
