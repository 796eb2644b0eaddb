"""What a run keeps on disk about itself: typed records of an attempt and of a run.

``attempt-N.json`` holds one :class:`AttemptRecord`, ``run.json`` one :class:`RunRecord` (see
:mod:`tasks_lib.runfolder` for where they live). Both are validated when read, so a damaged
file is one clear line naming it (:class:`RecordError`), never a ``KeyError`` three modules
away. Unknown fields are kept (a newer specwave may write more). The JSON keys are the ones
earlier versions wrote, so old run folders read as they are.

An attempt record is also what crosses the worker seam (a worker hands it back to the flow as
a plain dict: ``record.model_dump(mode="json")``), so it holds only plain values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks_lib.errors import SpecError
from tasks_lib.results import Outcome, RateLimit, WorkerResult
from tasks_lib.state import RunStatus


class RecordError(SpecError):
    """A run record on disk that cannot be used (not JSON, or not the expected shape)."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")

    @classmethod
    def read(cls, path: Path, text: str):
        """Validate a file's text; raise RecordError naming the file and what to do."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "the file"
            detail = first.get("msg", "invalid")
            raise RecordError.single(
                str(path),
                f"is not a valid {cls.__name__} ({where}: {detail})",
                hint="it was damaged outside specwave: move it out of the run folder "
                "(the task then runs again)",
            ) from None


class WorkInfo(BaseModel):
    """What an attempt did in its own worktree (``--isolation worktree``)."""

    branch: str = Field(description="The task branch.")
    integration: str = Field("", description="The integration branch it is merged into.")
    worktree: str = Field(description="The worktree the agent worked in.")
    base: str = Field(description="The integration commit the attempt started from.")
    commit: str = Field(description="The task branch's head after the attempt.")
    changed: bool = Field(description="The attempt left at least one commit.")
    agent_commits: int = Field(0, description="Commits the agent made itself.")
    committed_leftovers: bool = Field(
        False, description="specwave committed changes the agent left uncommitted."
    )
    host: str = Field(
        "", description="Pool dispatch: the machine (container) the task run worked on."
    )


class MergeInfo(BaseModel):
    """What the merge queue did with a passed attempt's branch."""

    status: str = Field(description="merged, up_to_date, conflict or verify_failed.")
    commit: str | None = Field(None, description="The integration branch's head after it.")
    files: list[str] = Field(default_factory=list, description="Conflicted files.")
    verify_tail: str = Field("", description="Last lines of a failed verify run.")
    seconds: float = Field(0.0, description="How long merge and verify took.")

    @property
    def ok(self) -> bool:
        return self.status in ("merged", "up_to_date")

    def reason(self) -> str:
        if self.status == "conflict":
            return f"merge conflict in {', '.join(self.files) or 'the branch'}"
        if self.status == "verify_failed":
            last = self.verify_tail.strip().splitlines()[-1:] or ["(no output)"]
            return f"verify failed after the merge: {last[0][:200]}"
        return self.status


class AttemptRecord(_Record):
    """One agent attempt at one task (``attempt-N.json``)."""

    task_id: str = Field(description="The spec task id.")
    attempt: int = Field(ge=1, description="1-based attempt number within this run.")
    outcome: Outcome = Field(description="What the attempt amounted to.")
    reason: str = Field("", description="One line saying why (redacted).")
    started: float = Field(description="When the agent started (Unix time, seconds).")
    ended: float = Field(description="When it ended (Unix time, seconds).")
    duration_s: float = Field(0.0, description="ended - started, rounded to ms.")
    timeout_seconds: float | None = Field(None, description="This attempt's timeout.")
    result: WorkerResult | None = Field(None, description="The worker's json block, parsed.")
    exit_code: int | None = Field(None, description="The agent's exit code; None if killed.")
    info: dict[str, Any] = Field(
        default_factory=dict, description="Agent-specific facts (cost, turns, session)."
    )
    killed_pids: list[int] = Field(
        default_factory=list, description="Leftover processes specwave killed."
    )
    final: bool = Field(False, description="Retrying cannot help (e.g. an auth failure).")
    output_tail: str = Field("", description="Last lines of the agent's output (redacted).")
    log_path: str | None = Field(None, description="The attempt's full output log.")
    retry_after_s: float | None = Field(None, description="Back-off the agent asked for.")
    rate_limit: RateLimit | None = Field(
        None, description="The rate or usage limit the attempt hit (when until, if known)."
    )
    work: WorkInfo | None = Field(None, description="Its worktree, branch and commit.")
    merge: MergeInfo | None = Field(None, description="What the merge queue did with it.")

    @property
    def passed(self) -> bool:
        """The agent's attempt passed (worktree isolation: its merge may still fail)."""
        return self.outcome == Outcome.PASS

    @property
    def merge_failed(self) -> bool:
        """It passed, but its work could not be merged (a conflict, a failed verify)."""
        return self.merge is not None and not self.merge.ok

    @property
    def cost_usd(self) -> float | None:
        """The cost the agent reported for this attempt (None when it reports none)."""
        cost = self.info.get("total_cost_usd")
        return float(cost) if isinstance(cost, (int, float)) else None

    @property
    def tokens(self) -> dict[str, int] | None:
        """The tokens the agent reported, in one vocabulary for every agent kind: ``input``
        (cached included), ``cached``, ``output`` (reasoning included), ``reasoning``; None
        when it reported none. From ``info["tokens"]`` (codex) or ``info["usage"]`` (claude:
        its input excludes the cache reads and writes, added here)."""
        counts = self.info.get("tokens")
        if isinstance(counts, dict):
            return {k: int(v) for k, v in counts.items() if isinstance(v, (int, float))}
        usage = self.info.get("usage")
        if not isinstance(usage, dict) or "input_tokens" not in usage:
            return None
        n = {k: int(v) for k, v in usage.items() if isinstance(v, (int, float))}
        cached = n.get("cache_read_input_tokens", 0)
        return {
            "input": n.get("input_tokens", 0) + cached + n.get("cache_creation_input_tokens", 0),
            "cached": cached,
            "output": n.get("output_tokens", 0),
            "reasoning": 0,
        }

    def plain(self) -> dict[str, Any]:
        """The record as plain JSON values (what a worker hands back, what the file holds);
        ``work``, ``merge`` and ``rate_limit`` only when there are."""
        unset = {k for k in ("work", "merge", "rate_limit") if getattr(self, k) is None}
        return self.model_dump(mode="json", exclude=unset)


class RunRecord(_Record):
    """One run of a spec (``run.json``): written when it starts, rewritten when it ends."""

    status: RunStatus = Field(
        description="running, success, partial, blocked, stopped, cancelled, failed or died."
    )
    spec: str | None = Field(None, description="The spec's name.")
    run_id: str | None = Field(None, description="The run id (the Prefect flow run id).")
    started_at: str | None = Field(None, description="ISO 8601 start time.")
    ended_at: str | None = Field(None, description="ISO 8601 end time.")
    scheduler: str | None = Field(None, description="eager or waves.")
    agent: str | None = Field(None, description="The agent kind.")
    max_concurrency: int | None = Field(None, description="Worker slots.")
    retries: int | None = Field(None, description="Extra attempts allowed per task.")
    timeout_seconds: float | None = Field(None, description="First attempt's timeout.")
    fail_fast: bool | None = Field(None, description="Whether fail-fast was on.")
    workdir: str | None = Field(None, description="Where the agents worked.")
    plan: dict[str, Any] | None = Field(None, description="The plan (waves, critical path).")
    metrics: dict[str, Any] | None = Field(None, description="Measured metrics (at the end).")
    tasks: dict[str, Any] | None = Field(
        None, description="Per-task status, outcome, attempts and blocker (at the end)."
    )
    interrupted: list[str] | None = Field(
        None, description="Tasks running when it stopped (put back to pending)."
    )
    error: str | None = Field(None, description="What made it fail.")
    note: str | None = Field(None, description="What a later run found (a dead orchestrator).")

    def plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


__all__ = ["AttemptRecord", "MergeInfo", "RecordError", "RunRecord", "WorkInfo"]
