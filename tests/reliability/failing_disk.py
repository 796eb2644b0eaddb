"""``specwave`` with a plan-file write that fails (tests/reliability only).

    SPECWAVE_FAIL_PASS_OF=2 SPECWAVE_FAIL_TIMES=1 python failing_disk.py run SPEC ...

Every write of tasks.json that would record task ``SPECWAVE_FAIL_PASS_OF`` as ``pass`` fails
with ENOSPC, ``SPECWAVE_FAIL_TIMES`` times (default: always) — the agent succeeded, its status
could not be written. Import :func:`install` to do the same inside a test process.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def install(task_id: str, times: int | None = None) -> dict[str, int]:
    """Make PlanStore writes that record ``task_id`` as pass fail. Returns a counter."""
    from tasks_lib import store

    real = store.PlanStore._atomic_write
    count = {"failed": 0}

    def failing(self, text: str) -> None:
        if times is None or count["failed"] < times:
            try:
                doc = json.loads(text.lstrip("\ufeff"))
                task = next((t for t in doc.get("tasks", []) if str(t.get("id")) == task_id), None)
            except ValueError:
                task = None
            if task is not None and task.get("status") == "pass":
                count["failed"] += 1
                exc = OSError(errno.ENOSPC, "No space left on device")
                raise store.WriteFailed(
                    f"{store.display_path(self.path)}: could not write "
                    f"({exc}) — the file is unchanged; free space or fix "
                    "permissions"
                ) from exc
        return real(self, text)

    store.PlanStore._atomic_write = failing
    return count


def main() -> None:
    times = os.environ.get("SPECWAVE_FAIL_TIMES")
    install(os.environ["SPECWAVE_FAIL_PASS_OF"], int(times) if times else None)
    from flows.cli import main as cli_main

    sys.argv[0] = "specwave"
    cli_main()


if __name__ == "__main__":
    main()
