"""The run's plan-file writer: every task update reaches the user's plan file, in order,
without stalling the run loop.

Used by the run loop (flows/run_loop.py); the store (tasks_lib/store.py) does the locked,
atomic write itself.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from tasks_lib.store import PlanStore, TaskUpdate


class PlanWriter:
    """Records task updates in the plan file off the event loop, coalesced.

    One write of a plan file is a locked read-parse-render-fsync of the whole file: ~13 ms for
    500 tasks on a quiet core, several times that under load (measured; it was ~40 ms quiet and
    130–350 ms loaded before the renderer used json's C string encoder). Done inline, every
    start and every finish stalled every other worker's start and completion. Here updates
    are queued and written by one dedicated thread: while a write runs the next updates
    gather, and go together in the next write. Between two writes the writer rests
    ``min_interval`` or twice the last write's duration, whichever is longer, so the writing
    thread (pure-Python rendering: it holds the GIL) takes at most a third of the
    orchestrator's time however large the file.

    Failure semantics: updates reach the file in the order submitted (one writer, one lock),
    so the file always shows a prefix of the run's history. A failed write is raised by the
    next ``submit``/``flush`` (the run fails as before, instead of going on with a plan file
    that does not say what happened). If the orchestrator dies, updates not yet written are
    lost: those tasks keep their previous status (pending / in_progress) and run again on the
    next run — never a ``pass`` that did not happen. ``close()`` writes everything queued and
    waits for a write in flight even when the caller is being cancelled.
    """

    def __init__(self, store: PlanStore, *, min_interval: float = 0.2):
        self.store = store
        self.min_interval = min_interval
        self.writes = 0
        self._last_write = 0.0
        self._pending: list[TaskUpdate] = []
        self._run_state: dict[str, Any] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="specwave-plan-writer")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._inflight: asyncio.Future | None = None  # the write in progress
        self._started = 0.0
        self._error: BaseException | None = None

    def submit(self, *updates: TaskUpdate, run_state: dict[str, Any] | None = None) -> None:
        if self._error is not None:
            raise self._error
        self._pending.extend(updates)
        if run_state is not None:
            self._run_state = run_state
        self._wake.set()
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name="specwave-plan-writer")

    async def flush(self) -> None:
        """Return when everything submitted so far is in the file."""
        async with self._lock:
            await self._write_pending()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Stop the background loop, then write what is queued."""
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        inflight = self._inflight
        if inflight is not None:  # a thread write cannot be cancelled: let it land
            await asyncio.shield(asyncio.wait([inflight]))
            self._settle(inflight)
        try:
            await self.flush()
        finally:
            self._executor.shutdown(wait=False)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            async with self._lock:
                await self._write_pending()
            if self._error is not None:
                return
            await asyncio.sleep(max(self.min_interval, 2.0 * self._last_write))

    async def _write_pending(self) -> None:
        if self._error is not None or (not self._pending and self._run_state is None):
            return
        updates, self._pending = self._pending, []
        run_state, self._run_state = self._run_state, None
        self._started = time.perf_counter()
        inflight = asyncio.wrap_future(
            self._executor.submit(partial(self.store.apply, *updates, run_state=run_state))
        )
        self._inflight = inflight
        try:
            # if we are cancelled here the thread's write still lands; close() waits for it
            # and settles it. Whoever gets there first records the outcome (see _settle).
            await asyncio.wait([inflight])
        finally:
            if inflight.done():
                self._settle(inflight)

    def _settle(self, inflight: asyncio.Future) -> None:
        """Record a finished write's outcome, once: its error fails the run at the next
        ``submit``/``flush``/``close``. Settled by whichever of the writer loop and
        ``close()`` sees it done first — the loop may be cancelled after the thread finished
        but before it looked, and an error must not be lost there (it once was: a run whose
        last status write failed ended "success")."""
        if self._inflight is not inflight:
            return
        self._inflight = None
        exc = inflight.exception()
        if exc is not None:
            self._error = self._error or exc
            return
        self.writes += 1
        self._last_write = time.perf_counter() - self._started


__all__ = ["PlanWriter"]
