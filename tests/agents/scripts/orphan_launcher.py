"""An orchestrator that dies badly: starts an agent tree, records it, then waits to be kill -9'ed.

Usage: orphan_launcher.py INFO_JSON LOG_PATH TAG

Starts fake_agent.py (a same-group child, a setsid child, a daemon, then sleeps) through
run_process_group, writes the ProcessInfo to INFO_JSON (as the flow records it in a run
folder) and the agent's output to LOG_PATH. The test SIGKILLs this process, so none of
run_process_group's cleanup runs, and then calls reap() with the record.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tasks_lib.agents.process import ProcessInfo, run_process_group

AGENT = Path(__file__).with_name("fake_agent.py")


async def main(info_path: Path, log_path: Path, tag: str) -> None:
    def on_start(info: ProcessInfo) -> None:
        tmp = info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps([info.to_dict()]))
        os.replace(tmp, info_path)

    argv = [
        sys.executable,
        str(AGENT),
        "--tag",
        tag,
        "child",
        "setsid-child",
        "daemon",
        "sleep",
        "120",
    ]
    await run_process_group(
        argv, cwd=info_path.parent, env=dict(os.environ), log_path=log_path, on_start=on_start
    )


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
