"""Agent slots handed out best first (worktree isolation starts workers ahead of a free
slot; when one frees, the waiting worker the scheduler ranks best gets it, not the one that
has waited longest, so a task on the critical path never queues behind tasks started ahead).

A slot gate lives in the flow's process and event loop: :func:`run_slots` gives the run's
gate, kept while a worker holds or waits for one of its slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import weakref
from collections.abc import AsyncIterator, Sequence


class PrioritySlots:
    """``size`` slots; :meth:`slot` waits for one, best ``key`` first (ties: first come)."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError("a slot gate needs at least one slot")
        self.size = size
        self.busy = 0
        self._waiting: list[tuple[tuple[float, ...], int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, key: Sequence[float] = ()) -> AsyncIterator[None]:
        await self._acquire(tuple(key))
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, key: tuple[float, ...]) -> None:
        if self.busy < self.size and not self._waiting:
            self.busy += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (key, next(self._arrival), fut))
        try:
            await fut  # _release() handed its slot over (busy already counts it)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # handed over just as we were cancelled: pass it on
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():
                fut.set_result(None)  # the slot goes straight to the best waiter
                return
        self.busy -= 1


_gates: weakref.WeakValueDictionary[tuple[int, str], PrioritySlots] = weakref.WeakValueDictionary()


def run_slots(run_id: str, size: int) -> PrioritySlots:
    """The slot gate of run ``run_id`` in this event loop (made with ``size`` slots)."""
    key = (id(asyncio.get_running_loop()), run_id)
    gate = _gates.get(key)
    if gate is None:
        gate = _gates[key] = PrioritySlots(size)
    return gate


__all__ = ["PrioritySlots", "run_slots"]
