"""What a run shows in the Prefect UI: a progress artifact, a task table, a final summary.

Artifact keys are stable per spec (``<spec>-progress``, ``<spec>-tasks``, ``<spec>-summary``),
so the Artifacts page keeps one history per spec. The table is re-published after each finished
task, at most once per ``table_interval`` seconds (a 500-task run would otherwise write 500
versions of a 500-row table); the last state is always published.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from prefect import get_run_logger


class RunUI:
    def __init__(self, keys: dict[str, str], spec_name: str, *, table_interval: float = 1.0):
        self.keys = keys
        self.spec_name = spec_name
        self.table_interval = table_interval
        self._progress_id: UUID | None = None
        self._last_table = 0.0
        self._pending_rows: list[dict[str, Any]] | None = None

    async def start(self) -> None:
        from prefect.artifacts import acreate_progress_artifact

        try:
            self._progress_id = await acreate_progress_artifact(
                progress=0.0, key=self.keys["progress"],
                description=f"specwave: tasks of {self.spec_name} finished")
        except Exception as exc:  # noqa: BLE001 - the UI must never stop a run
            get_run_logger().warning(f"could not create the progress artifact: {exc}")

    async def progress(self, done: int, total: int) -> None:
        from prefect.artifacts import aupdate_progress_artifact

        if self._progress_id is None or total == 0:
            return
        try:
            await aupdate_progress_artifact(self._progress_id, progress=100.0 * done / total,
                                            description=f"{done}/{total} tasks finished")
        except Exception as exc:  # noqa: BLE001
            get_run_logger().warning(f"could not update the progress artifact: {exc}")

    async def table(self, rows: list[dict[str, Any]], *, force: bool = False) -> None:
        from prefect.artifacts import acreate_table_artifact

        now = time.monotonic()
        if not force and now - self._last_table < self.table_interval:
            self._pending_rows = rows
            return
        self._last_table = now
        self._pending_rows = None
        try:
            await acreate_table_artifact(
                table=rows, key=self.keys["table"],
                description=f"specwave: every task of {self.spec_name}")
        except Exception as exc:  # noqa: BLE001
            get_run_logger().warning(f"could not publish the task table: {exc}")

    async def summary(self, markdown: str) -> None:
        from prefect.artifacts import acreate_markdown_artifact

        try:
            await acreate_markdown_artifact(
                markdown=markdown, key=self.keys["summary"],
                description=f"specwave: summary of the run of {self.spec_name}")
        except Exception as exc:  # noqa: BLE001
            get_run_logger().warning(f"could not publish the summary: {exc}")
