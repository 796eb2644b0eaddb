"""What a run shows in the Prefect UI: a progress artifact, a task table, a final summary.

Artifact keys are stable per spec (``<spec>-progress``, ``<spec>-tasks``, ``<spec>-summary``),
so the Artifacts page keeps one history per spec.

Publishing never sits on the scheduling path. ``progress()`` and ``table()`` only record the
latest state and return; a background publisher sends it at most once per ``interval``
seconds (a 500-task run would otherwise write 500 versions of a 500-row table, and every
HTTP call — 0.1–2 s when a SQLite-backed server is busy or answers 503 and the client backs
off — would delay the next worker's start). The table may be given as a zero-argument
callable: its rows are built only when they are published. ``force=True`` (and a progress of
``total``) publishes now and waits for it; a forced publication is never overtaken by an
older background one (one lock orders them). A failed publication is logged and never stops
a run. ``close()`` stops the publisher (call it when the run ends, also when it fails).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect import get_run_logger

Rows = list[dict[str, Any]] | Callable[[], list[dict[str, Any]]]


class RunUI:
    def __init__(self, keys: dict[str, str], spec_name: str, *, table_interval: float = 1.0):
        self.keys = keys
        self.spec_name = spec_name
        self.table_interval = table_interval  # the publisher's minimum interval
        self._progress_id: UUID | None = None
        self._progress_created = False
        self._progress: tuple[int, int] | None = None  # latest (done, total)
        self._progress_sent: tuple[int, int] | None = None
        self._pending_rows: Rows | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._publisher: asyncio.Task | None = None
        self._warned: set[str] = set()

    async def start(self) -> None:
        """Start the background publisher (it creates the progress artifact first)."""
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._run(), name="specwave-ui-publisher")
            self._wake.set()

    async def progress(self, done: int, total: int, *, force: bool = False) -> None:
        if total == 0:
            return
        self._progress = (done, total)
        if force or done >= total:
            async with self._lock:
                await self._send_progress()
        else:
            self._wake.set()

    async def table(self, rows: Rows, *, force: bool = False) -> None:
        self._pending_rows = rows
        if force:
            async with self._lock:
                await self._send_table()
        else:
            self._wake.set()

    async def summary(self, markdown: str) -> None:
        from prefect.artifacts import acreate_markdown_artifact

        try:
            await acreate_markdown_artifact(
                markdown=markdown, key=self.keys["summary"],
                description=f"specwave: summary of the run of {self.spec_name}")
        except Exception as exc:  # noqa: BLE001 - the UI must never stop a run
            self._warn("summary", f"could not publish the summary: {exc}")

    async def close(self) -> None:
        """Stop the publisher; state recorded but not yet published is dropped (force the
        final state before closing)."""
        task, self._publisher = self._publisher, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # ------------------------------------------------------------------ internals

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            async with self._lock:
                await self._send_progress()
                await self._send_table()
            await asyncio.sleep(self.table_interval)

    async def _ensure_progress_artifact(self) -> None:
        from prefect.artifacts import acreate_progress_artifact

        if self._progress_created:
            return
        self._progress_created = True  # one attempt: a failure is logged, not retried
        try:
            done, total = self._progress or (0, 0)
            self._progress_id = await acreate_progress_artifact(
                progress=100.0 * done / total if total else 0.0, key=self.keys["progress"],
                description=f"specwave: tasks of {self.spec_name} finished")
            self._progress_sent = self._progress
        except Exception as exc:  # noqa: BLE001
            self._warn("progress-create", f"could not create the progress artifact: {exc}")

    async def _send_progress(self) -> None:
        from prefect.artifacts import aupdate_progress_artifact

        await self._ensure_progress_artifact()
        current = self._progress
        if self._progress_id is None or current is None or current == self._progress_sent:
            return
        done, total = current
        try:
            await aupdate_progress_artifact(self._progress_id, progress=100.0 * done / total,
                                            description=f"{done}/{total} tasks finished")
            self._progress_sent = current
        except Exception as exc:  # noqa: BLE001
            self._warn("progress", f"could not update the progress artifact: {exc}")

    async def _send_table(self) -> None:
        from prefect.artifacts import acreate_table_artifact

        rows, self._pending_rows = self._pending_rows, None
        if rows is None:
            return
        if callable(rows):
            rows = rows()
        try:
            await acreate_table_artifact(
                table=rows, key=self.keys["table"],
                description=f"specwave: every task of {self.spec_name}")
        except Exception as exc:  # noqa: BLE001
            self._warn("table", f"could not publish the task table: {exc}")

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:  # once per kind: a down API must not flood the log
            self._warned.add(kind)
            get_run_logger().warning(message)


__all__ = ["RunUI"]
