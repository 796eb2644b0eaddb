"""The run's plan-file writer (flows.plan_writer.PlanWriter): coalesced writes off the
event loop, in order, and a failed write is never lost — whatever moment it fails at."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from flows.plan_writer import PlanWriter
from tasks_lib.store import TaskUpdate, WriteFailed


class GatedStore:
    """A store whose writes block until the test opens the gate, then succeed or fail."""

    def __init__(self, fail_on: set[int] = frozenset()):
        self.fail_on = fail_on
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def apply(self, *updates: TaskUpdate, run_state=None) -> None:
        n = len(self.calls)
        self.calls.append([u.task_id for u in updates])
        self.entered.set()
        assert self.gate.wait(10)
        if n in self.fail_on:
            raise WriteFailed("tasks.json: could not write (disk full)")


async def wait_for(flag: threading.Event) -> None:
    for _ in range(1000):
        if flag.is_set():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the writer thread never started the write")


async def test_updates_gather_while_a_write_runs_and_land_in_order():
    store = GatedStore()
    writer = PlanWriter(store, min_interval=0.0)
    writer.submit(TaskUpdate("1", status="in_progress"))
    await wait_for(store.entered)
    writer.submit(TaskUpdate("2", status="in_progress"))
    writer.submit(TaskUpdate("1", status="pass"))
    store.gate.set()
    await writer.close()
    assert store.calls == [["1"], ["2", "1"]]
    assert writer.writes == 2


async def test_a_write_that_fails_in_the_loop_fails_the_next_submit():
    store = GatedStore(fail_on={0})
    store.gate.set()
    writer = PlanWriter(store, min_interval=0.0)
    writer.submit(TaskUpdate("1", status="pass"))
    await wait_for(store.entered)
    for _ in range(200):
        if writer._error is not None:
            break
        await asyncio.sleep(0.005)
    with pytest.raises(WriteFailed):
        writer.submit(TaskUpdate("2", status="pass"))
    with pytest.raises(WriteFailed):
        await writer.close()


async def test_a_write_that_fails_just_as_the_run_closes_the_writer_is_raised_by_close():
    """The race CI once hit: the thread's write had failed, but the writer loop was cancelled
    by close() before it looked at the result — the error was dropped and the run ended
    "success" with the last pass not in the file."""
    store = GatedStore(fail_on={0})
    writer = PlanWriter(store, min_interval=0.0)
    writer.submit(TaskUpdate("3", status="pass"))
    await wait_for(store.entered)
    store.gate.set()
    # block the event loop (time.sleep, not asyncio.sleep) while the thread's write fails:
    # its result callback is queued but the writer loop has not looked when close() cancels it
    time.sleep(0.3)
    assert writer._inflight is not None and writer._inflight.done() is False
    with pytest.raises(WriteFailed):
        await writer.close()


async def test_close_while_being_cancelled_still_waits_for_the_write_in_flight():
    store = GatedStore()
    writer = PlanWriter(store, min_interval=0.0)
    writer.submit(TaskUpdate("1", status="pass"))
    await wait_for(store.entered)
    closing = asyncio.ensure_future(writer.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # the write in flight holds close() up
    store.gate.set()
    await asyncio.wait_for(closing, 10)
    assert store.calls == [["1"]] and writer.writes == 1
