"""Cancelling from Prefect a flow run that nobody else would stop.

A flow run that this process runs itself (``specwave run``, a script, a test; no worker, no
runner) is not stopped by ``prefect flow-run cancel`` or the UI's Cancel: the API marks it
CANCELLING and nothing else happens. :func:`watch_for_cancellation` polls the run's own state
and cancels the flow's task on CANCELLING or CANCELLED — the same path as SIGTERM: every agent
tree is killed, the running tasks go back to ``pending``.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

#: How often a running flow asks the Prefect API whether its flow run was cancelled.
CANCEL_POLL_SECONDS = 1.0


async def watch_for_cancellation(
    flow_run_id: str, target: asyncio.Task, seen: dict[str, str]
) -> None:
    """Cancel ``target`` when flow run ``flow_run_id`` is cancelled from Prefect; record the
    state's name in ``seen["state"]`` first (so the flow can end Cancelled, not Crashed). API
    errors (a busy SQLite server answers 503s; a restart) are retried at the next poll."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    async with get_client() as client:
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            try:
                run = await client.read_flow_run(UUID(flow_run_id))
            except Exception:  # noqa: BLE001 - try again at the next poll
                continue
            if run.state is not None and run.state.type in (
                StateType.CANCELLING,
                StateType.CANCELLED,
            ):
                seen["state"] = run.state.name or run.state.type.value
                target.cancel()
                return


__all__ = ["CANCEL_POLL_SECONDS", "watch_for_cancellation"]
