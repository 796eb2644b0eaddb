"""Prefect task definitions: one task run per worker attempt series.

``run_worker`` launches one agent for one spec task, streams its output into the task run's
log (prefixed with the task id), parses the result and records the attempt in the run folder.
Every non-pass outcome ends the task run in a ``Failed`` state carrying its attempt records;
Prefect retries it only when the outcome is retryable (crashed, timeout, parse_error) — an
agent's own ``fail`` / ``blocked`` is final. A timed-out attempt's retry gets double the
timeout (the original design's rule).

Kills are ours: Prefect's ``timeout_seconds`` does not kill subprocesses, so the agent runs
under agents.process, which kills the whole process tree on timeout, on cancellation of this
coroutine (flow cancelled, SIGTERM) and after a normal exit (no daemons left behind).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled, Failed, State
from pydantic import BaseModel, Field

from tasks_lib.agents import make_agent, parse_agent_config
from tasks_lib.agents.base import AgentRequest, aload_secrets, redact
from tasks_lib.agents.process import AgentLaunchError
from tasks_lib.records import AttemptRecord
from tasks_lib.results import RETRYABLE_OUTCOMES, Outcome, parse_worker_output, tail
from tasks_lib.runfolder import RunFolder
from tasks_lib.slots import run_slots
from tasks_lib.workspaces import SetupFailed, WorkspaceSpec, open_workspace


def agent_task(fn: Callable | None = None, **kwargs: Any):
    """``prefect.task`` with the defaults every agent task wants: no caching (an agent run is
    never a pure function of its inputs), results kept in memory, logs from print captured."""
    defaults: dict[str, Any] = dict(cache_policy=NO_CACHE, persist_result=False, log_prints=False)
    defaults.update(kwargs)
    if fn is None:
        return lambda f: task(f, **defaults)
    return task(fn, **defaults)


class WorkerInput(BaseModel):
    """Everything one worker needs; plain values, so it can run anywhere."""

    task_id: str = Field(description="Spec task id.")
    title: str = Field("", description="The task's one-line description.")
    prompt: str = Field(description="Worker prompt.")
    agent: dict[str, Any] = Field(description="Agent config ({'kind': ..., ...}).")
    workspace: WorkspaceSpec = Field(
        description="Where the agent works (see tasks_lib.workspaces)."
    )
    spec_dir: str = Field(description="Spec folder.")
    run_id: str = Field(description="Run folder id.")
    timeout_seconds: float = Field(description="Timeout of the first attempt.")
    concurrency_limit: str | None = Field(
        None,
        description="Prefect global concurrency "
        "limit each agent launch occupies "
        "(shared across flow runs).",
    )
    tags: list[str] = Field(
        default_factory=list,
        description="Tags of the worker's task run (spec, wave-N, agent kind); see label_task_run.",
    )
    agent_slots: int | None = Field(
        None,
        ge=1,
        description="At most this many of the run's agents at once in this process (worktree "
        "isolation starts workers ahead, so their worktrees are ready when a slot frees); "
        "None: the scheduler's bound alone.",
    )
    slot_key: list[float] = Field(
        default_factory=list,
        description="The scheduler's rank of the task (smaller first): which waiting worker "
        "gets a freed agent slot.",
    )


class PoolAttempt(BaseModel):
    """One attempt at one task, sent to a pool worker (the ``run-task`` flow): plain values
    only, no secret (agents load theirs from Prefect Secret blocks, ``env_secrets``)."""

    worker: WorkerInput = Field(
        description="The worker's input; its workspace is completed on the worker (the "
        "clone's path) and its spec_dir is a scratch folder there."
    )
    git_url: str = Field(description="The git remote to clone, fetch and push.")
    start: str = Field(description="The integration commit the attempt starts from.")
    previous: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The task's earlier attempt records in this run (attempt numbers, "
        "timeouts doubled after a timeout).",
    )


ATTEMPT_ARTIFACT = "specwave-attempt"
"""Key prefix of the artifact a task run hands its attempt record back in."""


def _last_record(state: Any) -> dict[str, Any] | None:
    """The last attempt record a worker's state carries (its data: every attempt so far)."""
    data = state.data if isinstance(getattr(state, "data", None), list) else None
    return data[-1] if data and isinstance(data[-1], dict) else None


def _retry_condition(task_obj: Any, task_run: Any, state: Any) -> bool:
    record = _last_record(state)
    if record is None:  # an exception in our own code: retrying will not help
        return False
    return record.get("outcome") in {o.value for o in RETRYABLE_OUTCOMES} and not record.get(
        "final"
    )


def attempt_timeout(base: float, previous: list[AttemptRecord]) -> float:
    """Double the timeout for every earlier attempt that timed out."""
    n = sum(1 for a in previous if a.outcome == Outcome.TIMEOUT)
    return base * (2**n)


@agent_task(retries=1, retry_condition_fn=_retry_condition)
async def run_worker(inp: WorkerInput) -> list[dict[str, Any]] | State:
    """Run one agent attempt for one spec task.

    Returns (and, for a non-pass, carries as its Failed state's data) every attempt record
    of this task in this run so far, the latest last, as plain dicts
    (:class:`~tasks_lib.records.AttemptRecord`). A cancelled worker returns Cancelled."""
    from prefect import get_run_logger

    logger = get_run_logger()
    label_task_run(inp.tags)
    folder = RunFolder(inp.spec_dir, inp.run_id)
    previous = folder.attempts(inp.task_id)
    attempt = len(previous) + 1
    timeout = attempt_timeout(inp.timeout_seconds, previous)
    prompt_file = folder.prompt_path(inp.task_id)
    # a merge retry's prompt says what went wrong: the file holds this attempt's prompt
    if not prompt_file.exists() or prompt_file.read_text(encoding="utf-8") != inp.prompt:
        folder.write_prompt(inp.task_id, inp.prompt)
    log_path = folder.log_path(inp.task_id, attempt)
    log_path.parent.mkdir(parents=True, exist_ok=True)

    config = parse_agent_config(inp.agent)
    agent = make_agent(config)
    # values from env_secrets are secrets whatever their names: redact them too (resolved
    # once, here, and handed to the agent for its environment)
    loaded = await aload_secrets(config)
    secrets = secret_values_for(inp.agent) + [v for v in loaded.values() if v]

    def attempt_record(started: float, ended: float, **fields: Any) -> AttemptRecord:
        return AttemptRecord(
            task_id=inp.task_id,
            attempt=attempt,
            timeout_seconds=timeout,
            started=started,
            ended=ended,
            duration_s=round(ended - started, 3),
            log_path=str(log_path),
            **fields,
        )

    workspace = open_workspace(inp.workspace)
    try:
        workdir = await workspace.enter(inp.task_id, attempt, title=inp.title)
    except SetupFailed as exc:  # the worktree's setup command: the attempt crashed
        now = time.time()
        record = attempt_record(
            now,
            now,
            outcome=Outcome.CRASHED,
            reason=redact(str(exc), secrets),
            output_tail=redact(exc.tail, secrets),
        )
        record = await workspace.leave(inp.task_id, attempt, record)
        folder.write_attempt(record)
        logger.error(f"[{inp.task_id}] {record.reason}\n{record.output_tail}")
        return Failed(
            message=f"{inp.task_id}: crashed: {record.reason}",
            data=[r.plain() for r in [*previous, record]],
        )
    request = AgentRequest(
        task_id=inp.task_id,
        prompt=inp.prompt,
        prompt_file=str(prompt_file),
        workdir=workdir,
        spec_dir=inp.spec_dir,
        timeout_seconds=timeout,
        attempt=attempt,
        log_path=str(log_path),
    )
    logger.info(
        f"[{inp.task_id}] attempt {attempt}: starting {agent.kind} agent "
        f"(timeout {timeout:g} s) in {workdir}"
    )

    log_fh = open(log_path, "a", encoding="utf-8")  # noqa: ASYNC230 - a local append, once
    lines = AgentOutputLog(logger, inp.task_id, log_fh)

    def on_line(stream: str, line: str) -> None:
        lines.add(stream, redact_edges(redact(line, secrets), secrets))

    def on_start(info: Any) -> None:
        # Off the event loop: the record is fsynced (milliseconds, more on a busy disk) and
        # every other worker's start and completion would wait for it. It is only read by a
        # later run reaping orphans, which also finds them by the run's marker.
        record = {**info.to_dict(), "task_id": inp.task_id, "attempt": attempt}
        fut = asyncio.get_running_loop().run_in_executor(None, folder.record_agent, record)
        fut.add_done_callback(
            lambda f: (
                f.cancelled()
                or f.exception() is None
                or logger.warning(
                    f"[{inp.task_id}] could not record the agent's process group for orphan "
                    f"reaping ({f.exception()}); a later run still finds it by the run's marker"
                )
            )
        )

    started = time.time()
    try:
        async with _run_slot(inp), _shared_slot(inp.concurrency_limit):
            started = time.time()  # the attempt's time starts when the agent does
            run = await agent.run(request, on_line=on_line, on_start=on_start, secrets=loaded)
    except asyncio.CancelledError:
        # The run is stopping (cancelled from Prefect or the UI, SIGTERM/SIGINT): agents.process
        # has killed the agent's whole tree before this is raised. End the task run Cancelled,
        # not Crashed (what Prefect records for a coroutine cancelled under it), so the UI
        # says what happened. The flow re-raises the cancellation (see flows.dispatch).
        logger.warning(f"[{inp.task_id}] stopped: the run was cancelled; the agent was killed")
        return Cancelled(message=f"{inp.task_id}: stopped: the run was cancelled")
    except AgentLaunchError as exc:
        lines.flush()
        record = attempt_record(
            started,
            time.time(),
            outcome=Outcome.CRASHED,
            reason=redact(str(exc), secrets),
            final=True,
        )
        record = await workspace.leave(inp.task_id, attempt, record)
        folder.write_attempt(record)
        logger.error(f"[{inp.task_id}] {record.reason}")
        return Failed(
            message=f"{inp.task_id}: crashed: {record.reason}",
            data=[r.plain() for r in [*previous, record]],
        )
    finally:
        lines.flush()
        log_fh.close()
    ended = time.time()

    parsed = parse_worker_output(
        run.output, exit_code=run.exit_code, timed_out=run.timed_out, signals=run.signals
    )
    record = attempt_record(
        started,
        ended,
        outcome=parsed.outcome,
        reason=redact(parsed.reason, secrets),
        result=parsed.result,
        exit_code=run.exit_code,
        info=run.info,
        killed_pids=run.killed_pids,
        final=run.final,
        output_tail=redact(
            tail(run.output + ("\n" + run.stderr_tail if run.stderr_tail else ""), 40, 4000),
            secrets,
        ),
        retry_after_s=run.retry_after_s,
        rate_limit=run.rate_limit,
    )
    record = await workspace.leave(inp.task_id, attempt, record)
    folder.write_attempt(record)
    history = [r.plain() for r in [*previous, record]]
    if run.killed_pids and not run.timed_out:
        logger.warning(
            f"[{inp.task_id}] the agent left {len(run.killed_pids)} processes "
            "running; they were killed"
        )
    if parsed.outcome == Outcome.PASS:
        logger.info(f"[{inp.task_id}] pass in {ended - started:.1f} s")
        return history
    logger.error(f"[{inp.task_id}] {parsed.outcome.value}: {record.reason}")
    if record.retry_after_s and parsed.outcome in RETRYABLE_OUTCOMES:
        await asyncio.sleep(min(float(record.retry_after_s), 60.0))
    return Failed(message=f"{inp.task_id}: {parsed.outcome.value}: {record.reason}", data=history)


class AgentOutputLog:
    """An agent's output lines → the attempt's log file and the task run's log, batched.

    Every line is written to the file at once (flushed with each batch); in the run log the
    lines of one stream arriving within ``interval`` seconds become one record, each line
    still prefixed with ``[task id]`` (stderr at warning level). One log record costs about
    130 µs of the event loop's time (measured: benchmarks/probe_latency.py and docs/
    benchmarks.md), so per-line records made a chatty agent slow every other worker; a
    batch of 50 lines costs about what one line did. Must be used from the event loop
    (the agents.process line callbacks run there); call ``flush()`` when the agent ends.
    """

    def __init__(
        self, logger: Any, task_id: str, fh: Any, *, interval: float = 0.2, max_lines: int = 200
    ):
        self.logger = logger
        self.prefix = f"[{task_id}] "
        self.fh = fh
        self.interval = interval
        self.max_lines = max_lines
        self._stream = "stdout"
        self._lines: list[str] = []
        self._timer: Any = None

    def add(self, stream: str, line: str) -> None:
        self.fh.write(line + "\n")
        if self._lines and stream != self._stream:
            self.flush()
        self._stream = stream
        self._lines.append(line)
        if len(self._lines) >= self.max_lines:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        text = "\n".join(self.prefix + line for line in self._lines)
        self._lines = []
        try:
            self.fh.flush()
        except (OSError, ValueError):  # closed or failing file: the run log still gets it
            pass
        (self.logger.warning if self._stream == "stderr" else self.logger.info)(text)


def label_task_run(tags: list[str]) -> None:
    """Give the current task run its tags from inside (spec name, ``wave-N``, agent kind).

    Not at creation, on purpose: a task run created with tags makes Prefect's task engine
    acquire a tag concurrency limit before the run starts (an ``increment-with-lease`` API
    write per tag set, cached 5 s). On a SQLite-backed server that write collides with the
    other workers' task-run writes; the server answers 503 and the client backs off 2 s —
    measured as a 2 s delay between the scheduler starting a task and its agent starting
    (benchmarks/probe_latency.py). Set here, the tags reach the API with the task run's next
    state (its final state, or AwaitingRetry) and show in the UI from then on; the flow's
    task table shows each task's wave meanwhile. Tag concurrency limits therefore do not
    apply to workers: use the flow's ``concurrency_limit`` (a global concurrency limit).
    """
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    if ctx is not None and tags:
        ctx.task_run.tags = sorted(set(ctx.task_run.tags) | set(tags))


def _run_slot(inp: WorkerInput) -> Any:
    """One of the run's ``agent_slots`` in this process (its workers share the flow's event
    loop), for the agent's lifetime, handed out best ``slot_key`` first; a no-op without
    ``agent_slots``."""
    import contextlib

    if not inp.agent_slots:
        return contextlib.nullcontext()
    return run_slots(inp.run_id, inp.agent_slots).slot(inp.slot_key)


def _shared_slot(name: str | None):
    """One slot of the shared global concurrency limit ``name`` for the agent's lifetime
    (waiting for a free slot does not count against the attempt's timeout); a no-op without
    a name. strict: a limit deleted mid-run fails this attempt instead of running unlimited.
    The slot is released when the agent ends, is killed, or this coroutine is cancelled."""
    import contextlib

    if not name:
        return contextlib.nullcontext()
    from prefect.concurrency.asyncio import concurrency

    return concurrency(name, occupy=1, strict=True)


def secret_values_for(agent_config: dict[str, Any]) -> list[str]:
    """Values to redact from everything we write: API keys and tokens from our environment
    and the agent's env additions."""
    import os

    from tasks_lib.agents.base import secret_values

    env = dict(os.environ)
    env.update({k: str(v) for k, v in (agent_config.get("env") or {}).items()})
    return secret_values(env)


#: A piece of a line that starts or ends with at least this much of a secret is masked there.
_MIN_SECRET_EDGE = 4


def redact_edges(text: str, secrets: list[str]) -> str:
    """Mask the part of a secret cut off at either end of ``text``.

    A line longer than the process runner's piece size (1 MiB) reaches ``on_line`` in pieces;
    a secret that straddles two pieces is whole in neither, so :func:`redact` misses it. Mask
    a piece's tail that is the start of a secret and a piece's head that is the end of one
    (at least _MIN_SECRET_EDGE characters: shorter ends reveal nothing useful).

    Example:
        >>> redact_edges("key: sk-ant-ab", ["sk-ant-abcdef"])
        'key: ***'
        >>> redact_edges("cdef and more", ["sk-ant-abcdef"])
        '*** and more'
    """
    for s in secrets:
        for n in range(min(len(s) - 1, len(text)), _MIN_SECRET_EDGE - 1, -1):
            if text.endswith(s[:n]):
                text = text[:-n] + "***"
                break
        for n in range(min(len(s) - 1, len(text)), _MIN_SECRET_EDGE - 1, -1):
            if text.startswith(s[-n:]):
                text = "***" + text[n:]
                break
    return text


__all__ = ["WorkerInput", "agent_task", "attempt_timeout", "label_task_run", "run_worker"]
