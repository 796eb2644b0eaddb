"""The agent slot gate: best rank first, cancellation never loses a slot."""

from __future__ import annotations

import asyncio

import pytest

from tasks_lib.slots import PrioritySlots, run_slots


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    """Pure asyncio: no Prefect API to start (overrides tests/conftest.py)."""
    yield


async def test_a_freed_slot_goes_to_the_best_ranked_waiter_not_the_first():
    gate, order = PrioritySlots(2), []
    hold = asyncio.Event()

    async def worker(name: str, key: list[float]) -> None:
        async with gate.slot(key):
            order.append(name)
            await hold.wait()

    first = [asyncio.create_task(worker(n, [0])) for n in ("a", "b")]
    await asyncio.sleep(0)
    assert gate.busy == 2
    waiting = [
        asyncio.create_task(worker(name, key))
        for name, key in (("late-low", [5.0]), ("later-high", [-3.0, 1]), ("tie-1", [1]))
    ]
    await asyncio.sleep(0)
    waiting.append(asyncio.create_task(worker("tie-2", [1])))
    await asyncio.sleep(0)
    assert order == ["a", "b"]
    hold.set()
    await asyncio.gather(*first, *waiting)
    assert order == ["a", "b", "later-high", "tie-1", "tie-2", "late-low"]
    assert gate.busy == 0


async def test_cancelled_waiters_and_holders_never_lose_a_slot():
    gate = PrioritySlots(1)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    cancelled_waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    cancelled_waiter.cancel()
    # handed the slot and cancelled before it could run: the slot passes on
    second = asyncio.create_task(hold())
    third = asyncio.create_task(hold())
    await asyncio.sleep(0)
    release.set()
    await asyncio.sleep(0)
    second.cancel()
    await asyncio.gather(holder, cancelled_waiter, second, third, return_exceptions=True)
    assert third.done() and not third.cancelled()
    assert gate.busy == 0 and not gate._waiting
    async with gate.slot():
        assert gate.busy == 1


async def test_one_gate_per_run_while_it_is_used():
    a = run_slots("run-a", 2)
    assert run_slots("run-a", 5) is a and a.size == 2
    assert run_slots("run-b", 1) is not a
    with pytest.raises(ValueError):
        PrioritySlots(0)
