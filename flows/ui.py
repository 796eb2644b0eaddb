"""What a run shows in the Prefect UI: a progress artifact, a task table, a final summary.

Artifact keys are stable per spec (``<spec>-progress``, ``<spec>-tasks``, ``<spec>-summary``),
so the Artifacts page keeps one history per spec. The run's Artifacts tab stays readable:
live state goes into the one progress artifact (updated in place: its bar and a line of
counts) and into the task runs themselves; the task table is published when someone is meant
to read it — at an approval pause and at the end — so a run of N tasks shows three cards
(progress, table, summary), not one table per finished task.

Publishing progress never sits on the scheduling path: ``progress()`` only records the latest
state and returns; a background publisher sends it at most once per ``interval`` seconds
(every HTTP call — 0.1–2 s when a SQLite-backed server is busy or answers 503 and the client
backs off — would otherwise delay the next worker's start). A progress of ``total`` and
``table()`` publish now and wait for it; one lock orders publications, so a later one is
never overtaken by an older one. Table cells are markdown in the UI: their text is escaped
(a file named ``__init__.py`` stays ``__init__.py``). A failed publication is logged and
never stops a run. ``close()`` stops the publisher (call it when the run ends, also when it
fails).
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from prefect import get_run_logger

from tasks_lib.report import md_escape

#: table columns holding free text (task ids, descriptions, file names, blockers): escaped
TEXT_COLUMNS = frozenset({"id", "description", "files", "blocker", "branch", "worktree"})


class RunUI:
    def __init__(self, keys: dict[str, str], spec_name: str, *, interval: float = 1.0):
        self.keys = keys
        self.spec_name = spec_name
        self.interval = interval  # the progress publisher's minimum interval
        self._progress_id: UUID | None = None
        self._progress_created = False
        self._progress: tuple[int, int, str] | None = None  # latest (done, total, detail)
        self._progress_sent: tuple[int, int, str] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._publisher: asyncio.Task | None = None
        self._warned: set[str] = set()

    async def start(self) -> None:
        """Start the background publisher (it creates the progress artifact first)."""
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._run(), name="specwave-ui-publisher")
            self._wake.set()

    async def progress(self, done: int, total: int, detail: str = "") -> None:
        """``done`` of ``total`` tasks finished; ``detail``: counts by state, for the
        artifact's description."""
        if total == 0:
            return
        self._progress = (done, total, detail)
        if done >= total:
            async with self._lock:
                await self._send_progress()
        else:
            self._wake.set()

    async def table(self, rows: list[dict[str, Any]]) -> None:
        """Publish the task table now (one new version of ``<spec>-tasks``)."""
        from prefect.artifacts import acreate_table_artifact

        cells = [
            {
                k: md_escape(v) if k in TEXT_COLUMNS and isinstance(v, str) else v
                for k, v in r.items()
            }
            for r in rows
        ]
        async with self._lock:
            try:
                await acreate_table_artifact(
                    table=cells,
                    key=self.keys["table"],
                    description=f"specwave: every task of {self.spec_name}",
                )
            except Exception as exc:  # noqa: BLE001 - the UI must never stop a run
                self._warn("table", f"could not publish the task table: {exc}")

    async def summary(self, markdown: str) -> None:
        from prefect.artifacts import acreate_markdown_artifact

        try:
            await acreate_markdown_artifact(
                markdown=markdown,
                key=self.keys["summary"],
                description=f"specwave: summary of the run of {self.spec_name}",
            )
        except Exception as exc:  # noqa: BLE001 - the UI must never stop a run
            self._warn("summary", f"could not publish the summary: {exc}")

    async def close(self) -> None:
        """Stop the publisher; progress recorded but not yet published is dropped (a final
        progress of ``total`` is published before it returns)."""
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
            await asyncio.sleep(self.interval)

    @staticmethod
    def _describe(current: tuple[int, int, str] | None) -> str:
        done, total, detail = current or (0, 0, "")
        return f"{done}/{total} tasks finished" + (f" ({detail})" if detail else "")

    async def _ensure_progress_artifact(self) -> None:
        from prefect.artifacts import acreate_progress_artifact

        if self._progress_created:
            return
        self._progress_created = True  # one attempt: a failure is logged, not retried
        try:
            done, total, _ = self._progress or (0, 0, "")
            self._progress_id = await acreate_progress_artifact(
                progress=100.0 * done / total if total else 0.0,
                key=self.keys["progress"],
                description=f"specwave: tasks of {self.spec_name} finished",
            )
            self._progress_sent = self._progress
        except Exception as exc:  # noqa: BLE001
            self._warn("progress-create", f"could not create the progress artifact: {exc}")

    async def _send_progress(self) -> None:
        from prefect.artifacts import aupdate_progress_artifact

        await self._ensure_progress_artifact()
        current = self._progress
        if self._progress_id is None or current is None or current == self._progress_sent:
            return
        done, total, _ = current
        try:
            await aupdate_progress_artifact(
                self._progress_id,
                progress=100.0 * done / total,
                description=self._describe(current),
            )
            self._progress_sent = current
        except Exception as exc:  # noqa: BLE001
            self._warn("progress", f"could not update the progress artifact: {exc}")

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:  # once per kind: a down API must not flood the log
            self._warned.add(kind)
            get_run_logger().warning(message)


__all__ = ["RunUI"]
