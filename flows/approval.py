"""Approval between waves (``approve_waves``): the run pauses until someone answers a form in
the Prefect UI (continue or stop, with an optional note)."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.input import RunInput
from pydantic import ConfigDict, Field

#: how long a paused run waits for a decision before it fails, and how often it checks
APPROVAL_TIMEOUT_SECONDS = 24 * 3600
APPROVAL_POLL_SECONDS = 1


class WaveApproval(RunInput):
    """The form the Prefect UI shows when a run pauses between waves (approve_waves)."""

    continue_: bool = Field(
        True,
        alias="continue",
        title="Continue",
        description="Start the next wave (untick to stop the run; the "
        "remaining tasks stay pending).",
    )
    note: str = Field(
        "", title="Note", description="Optional note, kept in the run's log and summary."
    )

    model_config = ConfigDict(populate_by_name=True)

    def label(self, done_wave: int) -> str:
        """How the decision reads in the log and the summary."""
        return (
            f"wave {done_wave} reviewed: "
            + ("continue" if self.continue_ else "stop")
            + (f" ({self.note})" if self.note else "")
        )


async def approve_next_wave(done_wave: int, next_wave: int, waves: int) -> WaveApproval:
    """Pause the flow run until someone answers the form (UI: "Resume"; API:
    ``resume_flow_run(id, run_input={"continue": true, "note": "..."})``). Workers are idle
    meanwhile; the task table artifact shows the finished wave. Raises
    ``prefect.exceptions.FlowPauseTimeout`` (the run fails, nothing is running) when nobody
    answers within APPROVAL_TIMEOUT_SECONDS."""
    from prefect.flow_runs import apause_flow_run

    get_run_logger().info(
        f"wave {done_wave} of {waves} finished: waiting for approval to start wave "
        f"{next_wave} (resume the flow run in the Prefect UI: continue or stop)"
    )
    return await apause_flow_run(
        wait_for_input=WaveApproval,
        timeout=APPROVAL_TIMEOUT_SECONDS,
        poll_interval=APPROVAL_POLL_SECONDS,
        key=f"approve-wave-{done_wave}",
    )


__all__ = ["WaveApproval", "approve_next_wave"]
