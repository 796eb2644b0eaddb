"""``specwave run`` and ``specwave status``.

``run`` executes the ``execute_spec`` flow in this process: against ``PREFECT_API_URL`` when it
is set, else on Prefect's ephemeral API. While it runs, a thread redraws a live table from the
plan file (the flow writes every change there), so the display works the same whatever runs
the flow. SIGTERM/SIGINT cancel the flow: every agent tree is killed, running tasks go back to
``pending``, the exit code is 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli import (
    EXIT_INCOMPLETE,
    EXIT_INVALID,
    EXIT_OK,
    FormatOpt,
    ParallelOpt,
    SpecPath,
    TagOpt,
    _err,
    _fail,
    app,
    load_and_plan,
    startup_done,
)
from tasks_lib.errors import SpecError

STATUS_STYLE = {
    "pass": "green",
    "done": "green",
    "fail": "red",
    "blocked": "yellow",
    "in_progress": "cyan",
    "pending": "dim",
    "skipped": "green",
}


def _quiet_prefect(verbose: bool) -> None:
    """Prefect's console logs would drown the live table; the API still gets every log."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


#: The agent kinds that take each setting given as a flag (``env`` goes to every kind).
AGENT_FLAGS: dict[str, tuple[str, ...]] = {
    "model": ("claude", "codex"),
    "extra_args": ("claude", "codex"),
    "permission_mode": ("claude",),
    "max_turns": ("claude",),
    "max_budget_usd": ("claude",),
    "allowed_tools": ("claude",),
    "sandbox": ("codex",),
    "reasoning_effort": ("codex",),
}


def agent_overrides(
    *,
    model: str | None = None,
    permission_mode: str | None = None,
    max_turns: int | None = None,
    max_budget_usd: float | None = None,
    allowed_tools: str | None = None,
    agent_arg: list[str] | None = None,
    agent_env: list[str] | None = None,
    sandbox: str | None = None,
    reasoning_effort: str | None = None,
) -> dict:
    """Agent config fields given as flags (``--model`` ... ``--agent-env``); unset ones omitted."""
    out: dict = {}
    for key, value in (
        ("model", model),
        ("permission_mode", permission_mode),
        ("max_turns", max_turns),
        ("max_budget_usd", max_budget_usd),
        ("sandbox", sandbox),
        ("reasoning_effort", reasoning_effort),
    ):
        if value is not None:
            out[key] = value
    if allowed_tools is not None:
        out["allowed_tools"] = [t.strip() for t in allowed_tools.split(",") if t.strip()]
    if agent_arg:
        out["extra_args"] = list(agent_arg)
    if agent_env:
        env = {}
        for item in agent_env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise SpecError.single(
                    "--agent-env",
                    f"{item!r} is not KEY=VALUE",
                    hint="e.g. --agent-env IS_SANDBOX=1",
                )
            env[key] = value
        out["env"] = env
    return out


def build_agent(
    agent: str, command: str | None, agent_json: str | None, overrides: dict | None = None
) -> dict:
    """The agent config from the flags; ``overrides`` (see :func:`agent_overrides`) are laid
    over it (``env`` merged)."""
    cfg = _base_agent(agent, command, agent_json)
    kind = cfg.get("kind")
    wrong = sorted(k for k in overrides or {} if k != "env" and kind not in AGENT_FLAGS[k])
    if wrong:
        flags = ", ".join(
            "--" + k.replace("_", "-").replace("extra-args", "agent-arg") for k in wrong
        )
        kinds = sorted({name for k in wrong for name in AGENT_FLAGS[k]})
        who = (
            f"the {kinds[0]} agent takes"
            if len(kinds) == 1
            else f"the {' and '.join(kinds)} agents take"
        )
        raise SpecError.single(
            flags,
            f'only {who} {flags} (agent kind is "{kind}")',
            hint=f"add --agent {kinds[0]}",
        )
    for key, value in (overrides or {}).items():
        if key == "env":
            cfg["env"] = {**(cfg.get("env") or {}), **value}
        else:
            cfg[key] = value
    return cfg


def _base_agent(agent: str, command: str | None, agent_json: str | None) -> dict:
    if agent_json:
        try:
            cfg = json.loads(agent_json)
        except json.JSONDecodeError as exc:
            raise SpecError.single(
                "--agent-json",
                f"invalid JSON: {exc.msg}",
                where=f"1:{exc.colno}",
                hint="pass a JSON object",
            ) from None
        if not isinstance(cfg, dict):
            raise SpecError.single(
                "--agent-json",
                "must be a JSON object",
                hint='e.g. {"kind": "command", "command": "..."}',
            )
        return cfg
    if agent == "command":
        if not command:
            raise SpecError.single(
                "--command",
                "the command agent needs --command",
                hint='e.g. --command "python my_agent.py {prompt_file}"',
            )
        return {"kind": "command", "command": command}
    base: dict = {"kind": agent}
    if command:
        base["command"] = command
    return base


def _statuses(spec) -> dict[str, dict]:
    """Re-read the plan file in the spec's own format (and Task Master tag)."""
    from tasks_lib.formats import load_spec

    try:
        fresh = load_spec(spec.tasks_path, format=spec.format, tag=getattr(spec, "tag", None))
    except Exception:  # noqa: BLE001 - a half-written view is fine to skip
        return {}
    return {u.id: {"status": u.status.value} for u in fresh.units}


class LiveView:
    """A rich Live table redrawn from the plan file twice a second."""

    def __init__(self, spec, plan, enabled: bool):
        self.spec = spec
        self.plan = plan
        self.enabled = enabled
        self.started = time.time()
        self.first_seen: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _table(self, statuses: dict[str, dict]):
        from rich.table import Table

        t = Table(
            title=f"{self.spec.name} — elapsed {time.time() - self.started:.0f} s",
            title_justify="left",
        )
        t.add_column("wave", justify="right")
        t.add_column("task")
        t.add_column("description")
        t.add_column("status")
        t.add_column("time", justify="right")
        now = time.time()
        counts: dict[str, int] = {}
        for u in self.spec.units:
            st = statuses.get(u.id, {}).get("status", u.status.value)
            counts[st] = counts.get(st, 0) + 1
            if st == "in_progress":
                self.first_seen.setdefault(u.id, now)
            elif u.id in self.first_seen:
                self.ended.setdefault(u.id, now)
            el = ""
            if u.id in self.first_seen:
                el = f"{self.ended.get(u.id, now) - self.first_seen[u.id]:.0f} s"
            style = STATUS_STYLE.get(st, "")
            label = "running" if st == "in_progress" else st
            desc = " ".join(u.description.split())
            t.add_row(
                str(self.plan.wave_of.get(u.id, "")),
                u.id,
                desc[:60] + ("…" if len(desc) > 60 else ""),
                f"[{style}]{label}[/{style}]" if style else label,
                el,
            )
        t.caption = "  ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        return t

    def _loop(self) -> None:
        from rich.live import Live

        with Live(self._table({}), refresh_per_second=4, transient=True) as live:
            while not self._stop.wait(0.5):
                live.update(self._table(_statuses(self.spec)))

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)


def print_final(result: dict, spec) -> None:
    from rich.console import Console
    from rich.table import Table

    from tasks_lib.report import TOKEN_KEYS, tokens_text

    console = Console()
    costs, tokens = _attempt_figures(result)
    merges = any("merge" in info for info in result["tasks"].values())
    t = Table(title=f"{spec.name}: {result['status']}", title_justify="left")
    for col in (
        "task",
        "status",
        "outcome",
        "attempts",
        *(("cost", "turns") if costs else ()),
        *(("tokens in/out",) if tokens else ()),
        *(("merge",) if merges else ()),
        "blocker",
    ):
        t.add_column(col)
    for tid, info in result["tasks"].items():
        st = info["status"]
        style = STATUS_STYLE.get(st, "")
        extra: tuple[str, ...] = ()
        if costs:
            cost, turns = costs.get(tid, (None, None))
            extra = (f"${cost:.4f}" if cost else "", str(turns or ""))
        if tokens:
            n = tokens.get(tid)
            extra += (f"{n['input']:,}/{n['output']:,}" if n else "",)
        t.add_row(
            tid,
            f"[{style}]{st}[/{style}]" if style else st,
            info.get("outcome") or "",
            str(info.get("attempts") or 0),
            *extra,
            *((info.get("merge") or "",) if merges else ()),
            (info.get("blocker") or "")[:90],
        )
    console.print(t)
    if costs:
        console.print(
            f"total cost ${sum(c for c, _ in costs.values()):.4f} (as reported by the agent)"
        )
    if tokens:
        total = {k: sum(n.get(k, 0) for n in tokens.values()) for k in TOKEN_KEYS}
        console.print(f"tokens {tokens_text(total)} (as reported by the agent)", highlight=False)
    m = result["metrics"]
    console.print(
        f"wall {m['wall_seconds']:.1f} s · worker time {m['worker_seconds_sum']:.1f} s"
        f" · measured speed-up {m['measured_speedup']}× · max concurrent "
        f"{m['max_concurrent_observed']} · workers {m['workers_spawned']} "
        f"(retried {m['workers_retried']})"
    )
    for e in m.get("events") or []:
        console.print(f"note: {e}")
    console.print(f"tasks file: {result['tasks_file']}")
    console.print(f"run logs:   {result['run_dir']}")
    if integ := result.get("integration"):
        console.print(_merge_log(integ), highlight=False)
    for warning in result.get("isolation_warnings") or []:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def _merge_log(integ: dict) -> str:
    """Worktree isolation: the merge log and how to take the work."""
    lines = [f"merge log ({integ['branch']}):"]
    for n, m in enumerate(integ.get("merges") or [], 1):
        what = m["status"] + (f" ({', '.join(m['files'])})" if m.get("files") else "")
        lines.append(
            f"  {n}. {m['task']}: {what}"
            + (f" -> {m['commit'][:12]}" if m["status"] == "merged" and m.get("commit") else "")
        )
    head = (integ.get("commit") or "?")[:12]
    lines.append(
        f"integration: {integ['branch']} at {head} — take it with "
        f"`{integ['take']}` (specwave did not touch your branch or working tree)"
    )
    return "\n".join(lines)


def _merge_state(run: Any, task_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Worktree runs: each task's branch, commit, merge outcome and kept worktree, from the
    last run's attempt records (empty for a shared-checkout run)."""
    from tasks_lib.report import worktree_cells

    lasts = {tid: recs[-1] for tid in task_ids if (recs := run.attempts(tid))}
    if not any(r.work is not None for r in lasts.values()):
        return {}
    return {tid: worktree_cells(rec) for tid, rec in lasts.items()}


def _attempt_figures(
    result: dict,
) -> tuple[dict[str, tuple[float, int | None]], dict[str, dict[str, int]]]:
    """From the run folder's attempt records: task id -> (cost in USD over every attempt,
    last attempt's turns), empty when the agent reports no cost (the command agent, codex
    without a price); and task id -> its tokens over every attempt, empty when none."""
    from tasks_lib.report import sum_tokens
    from tasks_lib.runfolder import RunFolder

    run = RunFolder.at(Path(result.get("run_dir") or "."))
    costs: dict[str, tuple[float, int | None]] = {}
    tokens: dict[str, dict[str, int]] = {}
    for tid in result.get("tasks") or {}:
        recs = run.attempts(tid)
        paid = [c for r in recs if (c := r.cost_usd) is not None]
        if paid:
            costs[tid] = (sum(paid), recs[-1].info.get("num_turns"))
        if counts := sum_tokens(recs):
            tokens[tid] = counts
    return costs, tokens


#: After a signal: how long to let Prefect record the flow run's end once our own records
#: (agents killed, running tasks back to pending, run.json) are written. A terminal's Ctrl-C
#: reaches the whole foreground process group, so Prefect's ephemeral API server (our child)
#: dies with it, and Prefect's client would retry for more than a minute before giving up.
PREFECT_GRACE_AFTER_SIGNAL_S = 5.0
#: After a signal, stop waiting for anything after this long.
MAX_WAIT_AFTER_SIGNAL_S = 90.0


class RunSession:
    """One ``specwave run``: the flow runs in a helper thread, the main thread handles
    SIGINT/SIGTERM.

    Why a thread: Prefect's flow engine, when it runs in the main thread, installs its own
    SIGTERM handler that raises ``TerminationSignal`` wherever the main thread happens to be —
    often inside the event loop itself, outside any task — which aborts ``asyncio.run`` before
    the flow's cleanup (kill every agent tree, put running tasks back to pending) is done and
    ends in a traceback. Off the main thread Prefect installs no handler, and ours just cancels
    the run.

    The threads share this object: the helper thread sets ``loop``/``task`` (then only the
    main thread's ``cancel`` touches them, through ``call_soon_threadsafe``), the main thread
    sets ``signal``; ``code`` and ``result`` are read after the helper thread has ended.
    """

    def __init__(self, spec, params: dict, *, as_json: bool):
        self.spec = spec
        self.params = params
        self.as_json = as_json
        self.code = EXIT_INCOMPLETE
        self.signal: int | None = None  # the first signal received
        self.cut_short = False  # the deadline after a signal fired: leave without Prefect
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._error: BaseException | None = None
        self._result: dict | None = None

    def run(self) -> dict | None:
        """Run the flow to its end; the run's result (None when it stopped early)."""
        old = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            thread = threading.Thread(target=self._thread, name="specwave-run", daemon=True)
            thread.start()
            while thread.is_alive():
                thread.join(0.2)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        if self._error is not None:
            raise self._error
        return self._result

    def on_signal(self, signum: int, frame=None) -> None:
        first = self.signal is None
        if first:
            self.signal = signum
        _err(f"specwave: {signal.Signals(signum).name}: stopping the agents…")
        self.cancel()
        if first:
            threading.Thread(
                target=self._deadline_after_signal, daemon=True, name="specwave-signal-deadline"
            ).start()

    def cancel(self) -> None:
        if self._loop is not None and self._task is not None:
            try:
                self._loop.call_soon_threadsafe(self._task.cancel)
            except RuntimeError:  # the loop already closed: nothing left to stop
                pass

    def _thread(self) -> None:
        try:
            self._result = asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            self._error = exc

    async def _main(self) -> dict | None:
        from flows.execute_spec import execute_spec

        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        if self.signal is not None:  # a signal arrived before the loop started
            self.code = 128 + self.signal
            return None
        try:
            state = await execute_spec(**self.params, return_state=True)
        except asyncio.CancelledError:
            self.code = 128 + (self.signal or signal.SIGTERM)
            return None
        except Exception as exc:  # noqa: BLE001
            if self.signal is None:
                raise
            # stopped by a signal, then Prefect could not record it (its API is gone: a
            # terminal's Ctrl-C also stops the ephemeral API server): our records are written
            _err(
                f"specwave: stopped; Prefect could not record the end of the flow run "
                f"({type(exc).__name__}) — tasks.json and the run folder are up to date"
            )
            self.code = 128 + self.signal
            return None
        # State.result is sync or async by context; mypy only sees the sync signature
        result = await state.result(raise_on_failure=False)  # type: ignore[misc]
        if isinstance(result, BaseException):
            if isinstance(result, SpecError):
                raise result
            _err(f"specwave: the run failed: {type(result).__name__}: {result}")
            return None
        self.code = EXIT_OK if result.get("status") == "success" else EXIT_INCOMPLETE
        if "metrics" not in result:  # the run stopped early (write failure, Prefect cancel)
            _err(f"specwave: {result.get('message') or result.get('status')}")
            if self.as_json:
                print(json.dumps(result, indent=2, default=str))
            return None
        return result

    def _deadline_after_signal(self) -> None:
        """Cancel the run once more (cutting Prefect's API retries short) when the run folder
        says the run is stopped and PREFECT_GRACE_AFTER_SIGNAL_S more have passed, or at
        MAX_WAIT_AFTER_SIGNAL_S. The second cancel cannot cut our own cleanup short: the
        agents' kill is shielded and the records are already written."""
        start, seen = time.monotonic(), None
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            if seen is None and self._recorded():
                seen = now
            if (seen is not None and now - seen >= PREFECT_GRACE_AFTER_SIGNAL_S) or (
                now - start >= MAX_WAIT_AFTER_SIGNAL_S
            ):
                self.cut_short = True
                self.cancel()
                return

    def _recorded(self) -> bool:
        """This process's run has written how it ended."""
        from tasks_lib.records import RecordError
        from tasks_lib.runfolder import RunFolder
        from tasks_lib.state import RunStatus
        from tasks_lib.store import RunLock

        holder = RunLock(self.spec.folder).holder() or {}
        if holder.get("pid") != os.getpid() or not holder.get("flow_run_id"):
            return False
        try:
            record = RunFolder(self.spec.folder, str(holder["flow_run_id"])).read_run()
        except RecordError:
            return False
        return record is not None and record.status != RunStatus.RUNNING


def _exit_now(code: int) -> None:
    """Exit without Prefect's at-exit drain: after a signal cut the run short because the
    Prefect API did not answer, its event and log workers would retry for minutes against
    an API that is gone. Our own records are on disk; stop the ephemeral API server (if it
    is still alive) so nothing is left running, then leave."""
    import sys

    try:
        from prefect.server.api.server import SubprocessASGIServer

        for server in list(SubprocessASGIServer._instances.values()):
            server.stop()
    except Exception:  # noqa: BLE001 - best effort: it is normally dead already
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@app.command()
def run(
    spec_dir: Path = SpecPath,
    agent: str = typer.Option("command", "--agent", help="Agent kind: command, claude or codex."),
    command: str | None = typer.Option(
        None,
        "--command",
        help="Command agent: the command line; placeholders "
        "{prompt_file} {task_id} {workdir} {spec_dir}.",
    ),
    agent_json: str | None = typer.Option(
        None, "--agent-json", help="The full agent config as JSON."
    ),
    repo: Path | None = typer.Option(
        None, "--repo", help="Repository the agents work in (default: current directory)."
    ),
    max_concurrency: int | None = typer.Option(None, "--max-concurrency", "-j", min=1),
    timeout: float = typer.Option(
        1800, "--timeout", min=0.1, help="Seconds per attempt (doubled on a retry)."
    ),
    retries: int = typer.Option(
        1, "--retries", min=0, help="Retries of crashed / timed-out / unparseable workers."
    ),
    fail_fast: bool = typer.Option(
        False, "--fail-fast", help="Start no new worker after a failure."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan and prompts; launch nothing."
    ),
    scheduler: str = typer.Option("eager", "--scheduler", help="eager or waves."),
    replan: bool = typer.Option(False, "--replan", help="Ignore the declared waves."),
    format: str | None = FormatOpt,
    tag: str | None = TagOpt,
    parallel: bool = ParallelOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
    # Annotated, so callers of run() as a function (specwave demo) get plain defaults.
    approve_waves: Annotated[
        bool,
        typer.Option(
            "--approve-waves",
            help="Pause after each wave until it is approved in the Prefect UI "
            "(needs a Prefect server: PREFECT_API_URL); implies "
            "--scheduler waves.",
        ),
    ] = False,
    concurrency_limit: Annotated[
        str | None,
        typer.Option(
            "--concurrency-limit",
            metavar="NAME",
            help="A Prefect global concurrency limit every agent launch occupies, shared with "
            "other runs (e.g. specwave-agents; create it with `specwave deploy "
            "--agent-slots N`).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="claude / codex agent: model alias or full name."),
    ] = None,
    sandbox: Annotated[
        str | None,
        typer.Option(
            "--sandbox",
            help="codex agent: workspace-write (default: writes inside the working "
            "directory only), read-only, danger-full-access (no sandbox: only inside a "
            "container or VM without secrets).",
        ),
    ] = None,
    reasoning_effort: Annotated[
        str | None,
        typer.Option(
            "--reasoning-effort",
            help="codex agent: none, minimal, low, medium, high or xhigh.",
        ),
    ] = None,
    permission_mode: Annotated[
        str | None,
        typer.Option(
            "--permission-mode",
            help="claude agent: acceptEdits (default: edits inside the "
            "repository only), plan, dontAsk, manual, auto, "
            "bypassPermissions (as root only with --agent-env "
            "IS_SANDBOX=1).",
        ),
    ] = None,
    max_turns: Annotated[
        int | None, typer.Option("--max-turns", min=1, help="claude agent: turn limit per attempt.")
    ] = None,
    max_budget_usd: Annotated[
        float | None,
        typer.Option(
            "--max-budget-usd", min=0.0001, help="claude agent: spend limit per attempt, in USD."
        ),
    ] = None,
    allowed_tools: Annotated[
        str | None,
        typer.Option(
            "--allowed-tools",
            help="claude agent: comma-separated tools allowed without a "
            "prompt (default Bash,Read,Glob,Grep,TodoWrite).",
        ),
    ] = None,
    agent_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--agent-arg",
            metavar="ARG",
            help="claude agent: one more CLI argument, e.g. --agent-arg=--fallback-model=sonnet "
            "(repeatable).",
        ),
    ] = None,
    isolation: Annotated[
        str,
        typer.Option(
            "--isolation",
            help="worktree (each task in its own git worktree and branch, merged into an "
            "integration branch in dependency order; your checkout is never changed), shared "
            "(every agent in the repository itself) or auto: worktree in a git repository with "
            "a commit, else shared.",
        ),
    ] = "auto",
    verify: Annotated[
        str | None,
        typer.Option(
            "--verify",
            metavar="COMMAND",
            help='worktree: run after each merge (e.g. "python -m pytest -q"); a failure '
            "undoes the merge and the task gets a new attempt.",
        ),
    ] = None,
    into: Annotated[
        str | None,
        typer.Option(
            "--into",
            metavar="BRANCH",
            help="worktree: the integration branch (default specwave/<spec>).",
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            metavar="REF",
            help="worktree: what a new integration branch starts from (default HEAD).",
        ),
    ] = None,
    setup: Annotated[
        str | None,
        typer.Option(
            "--setup",
            metavar="COMMAND",
            help='worktree: run in each new worktree before its agent (e.g. "npm ci"; '
            "use sh -c '...' for shell syntax); a failure is the attempt's crashed.",
        ),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            metavar="PATTERN",
            help="worktree: ignored files to copy into each worktree (gitignore syntax, "
            "e.g. .env; repeatable), besides the repository's .worktreeinclude.",
        ),
    ] = None,
    land: Annotated[
        bool,
        typer.Option(
            "--land",
            help="worktree: at the end, fast-forward your checked-out branch to the "
            "integration branch (only when it is an ancestor and the merge touches no file "
            "you have modified; else it says why and changes nothing).",
        ),
    ] = False,
    keep_branches: Annotated[
        bool, typer.Option("--keep-branches", help="worktree: keep merged tasks' branches.")
    ] = False,
    dispatch: Annotated[
        str,
        typer.Option(
            "--dispatch",
            help="local: every agent a child process here; pool: every task attempt a flow "
            "run of the run-task deployment (--task-pool) on its work pool, anywhere "
            "(needs worktree isolation and a git remote). Needs PREFECT_API_URL.",
        ),
    ] = "local",
    task_pool: Annotated[
        str,
        typer.Option(
            "--task-pool",
            metavar="DEPLOYMENT",
            help="pool: the run-task deployment whose pool runs the tasks "
            "(run-task/specwave-task: process; run-task/specwave-task-docker: docker).",
        ),
    ] = "run-task/specwave-task",
    git_url: Annotated[
        str | None,
        typer.Option(
            "--git-url",
            help="pool: the git remote the task runs clone and push to (default: origin).",
        ),
    ] = None,
    queue_timeout: Annotated[
        float | None,
        typer.Option(
            "--queue-timeout",
            min=1,
            help="pool: seconds a task run may wait for a worker before its attempt is "
            "counted as crashed (default: no bound; never counted against --timeout).",
        ),
    ] = None,
    agent_env: Annotated[
        list[str] | None,
        typer.Option(
            "--agent-env",
            metavar="KEY=VALUE",
            help="One more environment variable for the agent (repeatable; visible in the UI: "
            "no secrets).",
        ),
    ] = None,
) -> None:
    """Run every pending task of a spec through coding agents, in parallel."""
    notice: str | None = None  # --isolation auto chose shared, and why
    if scheduler not in ("eager", "waves"):
        _err(f'--scheduler: unknown scheduler "{scheduler}" — use eager or waves')
        raise typer.Exit(EXIT_INVALID)
    if isolation not in ("auto", "shared", "worktree"):
        _err(f'--isolation: unknown isolation "{isolation}" — use auto, shared or worktree')
        raise typer.Exit(EXIT_INVALID)
    if land and isolation == "shared":
        _err("--land: only with --isolation worktree (a shared run has nothing to land)")
        raise typer.Exit(EXIT_INVALID)
    if dispatch not in ("local", "pool"):
        _err(f'--dispatch: unknown dispatch "{dispatch}" — use local or pool')
        raise typer.Exit(EXIT_INVALID)
    if dispatch == "pool" and isolation == "shared":
        _err("--dispatch pool: the task runs share only a git remote — use --isolation worktree")
        raise typer.Exit(EXIT_INVALID)
    if dispatch == "pool" and not dry_run and not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():  # the profile's, when the variable is not set
            _err(
                "--dispatch pool: its workers need a Prefect server — start one (prefect "
                "server start), set PREFECT_API_URL and start a worker on the task pool"
            )
            raise typer.Exit(EXIT_INVALID)
    try:
        spec, plan = load_and_plan(
            spec_dir,
            max_concurrency=max_concurrency,
            replan=replan,
            format=format,
            tag=tag,
            parallel=parallel,
        )
        agent_cfg = (
            None
            if dry_run
            else build_agent(
                agent,
                command,
                agent_json,
                overrides=agent_overrides(
                    model=model,
                    permission_mode=permission_mode,
                    max_turns=max_turns,
                    max_budget_usd=max_budget_usd,
                    allowed_tools=allowed_tools,
                    agent_arg=agent_arg,
                    agent_env=agent_env,
                    sandbox=sandbox,
                    reasoning_effort=reasoning_effort,
                ),
            )
        )
        if agent_cfg is not None:
            from tasks_lib.agents import parse_agent_config, preflight
            from tasks_lib.agents.process import AgentLaunchError

            try:
                parsed = parse_agent_config(agent_cfg)
            except Exception as exc:  # pydantic ValidationError
                raise SpecError.single(
                    "agent",
                    f"invalid agent config: {str(exc).splitlines()[-1].strip()}",
                    hint="see `specwave run --help`",
                ) from None
            try:
                preflight(parsed)  # e.g. the Codex CLI is not installed: one line, exit 2
            except AgentLaunchError as exc:
                raise SpecError.single(
                    f"--agent {parsed.kind}", str(exc).removeprefix("cannot start agent: ")
                ) from None
        if repo is not None and not repo.is_dir():
            raise SpecError.single(
                str(repo), "repository folder not found", hint="pass an existing folder with --repo"
            )
        if isolation == "auto" and not dry_run:
            from tasks_lib.workspaces.worktree import auto_isolation

            # the notice is said with the run's result (stderr stays one line per problem)
            isolation, notice = auto_isolation(str(repo or Path.cwd()))
            if land and isolation == "shared":
                raise SpecError.single(
                    str(repo or Path.cwd()),
                    "--land needs a git repository with a commit",
                    hint="commit once, or drop --land",
                )
        if isolation == "worktree" and not dry_run:
            # refused here in one line, before Prefect starts: nothing started, nothing changed
            from tasks_lib.workspaces.config import load_worktree_settings
            from tasks_lib.workspaces.worktree import worktree_spec

            folder = load_worktree_settings(spec.folder)  # a bad file: one line, exit 2
            worktree_spec(str(repo or Path.cwd()), spec.name, into=into or folder.into, base=base)
        if not dry_run:
            from tasks_lib.store import RunLock

            # refuse at once, in one line, when another run holds the spec (the flow takes
            # the lock itself; this only spares the user a Prefect start-up and its traceback)
            RunLock(spec.folder).check()
    except SpecError as exc:
        _fail(exc)

    if dry_run:  # the plan, and exactly the prompts the agents would get
        from flows.render import render_plan
        from tasks_lib.prompt import task_prompt

        render_plan(spec, plan)
        for w in plan.waves:
            for tid in w.tasks:
                print(f"\n{'=' * 30} prompt for task {tid} (wave {w.wave_id}) {'=' * 30}")
                print(task_prompt(spec, plan, tid))
        return

    _quiet_prefect(verbose)
    params = dict(
        spec_folder=str(spec_dir),
        agent=agent_cfg,
        repo=str(repo) if repo else None,
        max_concurrency=max_concurrency,
        retries=retries,
        timeout_seconds=timeout,
        fail_fast=fail_fast,
        scheduler=scheduler,
        replan=replan,
        format=format,
        tag=tag,
        parallel=parallel,
        approve_waves=approve_waves,
        concurrency_limit=concurrency_limit,
        **(
            dict(
                isolation=isolation,
                verify=verify,
                into=into,
                base=base,
                keep_branches=keep_branches,
                setup=setup,
                include=include,
            )
            if isolation == "worktree"
            else {}
        ),
        **(
            dict(
                dispatch=dispatch,
                task_deployment=task_pool,
                git_url=git_url,
                queue_timeout=queue_timeout,
            )
            if dispatch == "pool"
            else {}
        ),
    )
    session = RunSession(spec, params, as_json=as_json)
    startup_done()  # every import is done: the garbage collector is back on for the run
    try:
        with LiveView(spec, plan, not as_json and os.isatty(1)):
            result = session.run()
    except SpecError as exc:
        _fail(exc)
    if session.cut_short:
        _exit_now(session.code)
    if result is None:
        raise typer.Exit(session.code)
    if notice:
        result["notices"] = [notice]
    if land and (integ := result.get("integration")):
        result["landed"] = _land(str(repo or Path.cwd()), integ, result)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_final(result, spec)
        for line in result.get("notices") or []:
            print(f"note: {line}")
        if landed := result.get("landed"):
            _err(f"specwave: --land: {landed['message']}")
    raise typer.Exit(session.code)


def _land(repo: str, integ: dict, result: dict) -> dict[str, Any]:
    """--land: fast-forward the user's branch to the integration branch, when it is safe."""
    from tasks_lib.workspaces.worktree import land

    if result.get("status") != "success":
        return {
            "landed": False,
            "message": "not landed: not every task passed (the merged "
            f"work is on {integ['branch']}: `{integ['take']}` takes it)",
        }
    ok, message = land(repo, integ["branch"])
    return {"landed": ok, "message": message}


@app.command()
def status(
    spec_dir: Path = SpecPath,
    as_json: bool = typer.Option(False, "--json", help="Print the state as JSON."),
    format: str | None = FormatOpt,
    tag: str | None = TagOpt,
) -> None:
    """Show each task's state as recorded in the plan file."""
    from tasks_lib.formats import load_spec

    try:
        spec = load_spec(spec_dir, format=format, tag=tag)
    except SpecError as exc:
        _fail(exc)
    from tasks_lib.runfolder import RunFolder

    try:
        last = RunFolder.latest(spec.folder)
        last_run = last.read_run().plain() if last else None  # type: ignore[union-attr]
    except SpecError as exc:
        _fail(exc)
    tasks: dict[str, dict[str, Any]] = {
        u.id: {
            "description": u.description,
            "status": u.status.value,
            "raw_status": u.raw_status,
            "attempts": u.attempts,
            "subtasks": {s.id: s.status.value for s in u.subtasks},
        }
        for u in spec.units
    }
    merges = _merge_state(last, list(tasks)) if last else {}
    for tid, cells in merges.items():
        tasks[tid].update(cells)
    counts: dict[str, int] = {}
    for t in tasks.values():
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    if as_json:
        print(
            json.dumps(
                {
                    "spec": spec.name,
                    "format": spec.format,
                    "tasks_file": str(spec.tasks_path),
                    "counts": counts,
                    "tasks": tasks,
                    "last_run": last_run,
                },
                indent=2,
                default=str,
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{spec.name} ({spec.format})", title_justify="left")
    for col in ("task", "status", "attempts", *(("merge",) if merges else ()), "description"):
        table.add_column(col)
    for tid, info in tasks.items():
        st = info["status"]
        style = STATUS_STYLE.get(st, "")
        table.add_row(
            tid,
            f"[{style}]{st}[/{style}]" if style else st,
            str(info["attempts"]),
            *((info.get("merge") or "",) if merges else ()),
            " ".join(info["description"].split())[:70],
        )
    console = Console()
    console.print(table)
    console.print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    if last_run:
        console.print(
            f"last run: {last_run.get('status')} (started {last_run.get('started_at')}"
            f", run {last_run.get('run_id')})"
        )
