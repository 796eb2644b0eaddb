"""The ``claude`` agent: one headless Claude Code run per task, in the repository directory.

    {"kind": "claude", "model": "sonnet", "max_turns": 40, "max_budget_usd": 2.5}

How it runs (and why not through the SDK's transport): the ``claude-agent-sdk`` wheel bundles
the Claude Code CLI binary, and that binary is what we start — but under our own process-group
control (:func:`tasks_lib.agents.process.run_process_group`), not the SDK's transport. The SDK
(0.2.189) starts the CLI with ``anyio.open_process`` in the caller's process group and on close
terminates only that direct child, so commands the agent's Bash tool started outlive it. Here
the CLI leads its own session; a timeout, a cancellation or a normal exit kills the whole tree,
including Bash-tool commands that called ``setsid`` (they carry the run's environment marker).

The command line is ``claude -p --output-format stream-json --verbose --permission-mode MODE
--allowedTools ... [--model M] [--max-turns N] [--max-budget-usd X] --no-session-persistence
[extra_args]`` with the prompt on stdin (a prompt starting with ``- **ID**`` would be parsed as
an option, and stdin has no ``ARG_MAX`` limit). Each stream-json line is logged to the task
run's log as one compact line; the raw lines (secrets redacted) go to
``attempt-N.stream.jsonl`` beside ``attempt-N.log``.

Isolation: every run gets a private ``CLAUDE_CONFIG_DIR`` and ``TMPDIR`` (parallel workers that
share ``~/.claude*`` corrupt it; without ``CLAUDE_CONFIG_DIR`` the CLI writes
``~/.claude.json``), deleted when the run's process tree is gone.

Each stdout line is parsed once, as it arrives, into a typed event
(:mod:`tasks_lib.agents.claude_stream`) and folded into a :class:`StreamSummary`; the outcome
is then decided by the pure :func:`decide_outcome`.

What is read from the final ``result`` line: the ``result`` text (parsed for the worker's json
block), ``is_error`` (not ``subtype``: an API error reports subtype "success" with is_error
true), ``permission_denials`` (a claimed pass with a denial is a fail), ``api_error_status``,
``total_cost_usd``, ``usage``, ``num_turns``, ``session_id`` — all kept in the attempt record's
``info``.

Failure semantics (what the worker's Prefect retry sees):

* HTTP 429 / 529 / 5xx or a connection error after the CLI's own retries
  (``CLAUDE_CODE_MAX_RETRIES`` = ``api_retries``) -> ``crashed``, retryable, after a back-off
  of ``retry_backoff_seconds`` x 2^(attempt-1) x jitter(0.5..1.5);
* HTTP 401 / 403 (authentication, permission) -> final, never retried; the CLI is stopped at
  its first ``api_retry`` event reporting ``authentication_failed`` (it would otherwise retry);
* other 4xx (bad model name, request too large), ``max_turns`` or ``max_budget_usd``
  reached -> final;
* a timeout -> ``timeout`` (the worker retries it once with double the timeout).

Secrets: the agent inherits ``ANTHROPIC_*`` / Bedrock / Vertex variables from the orchestrator
(``pass_provider_env``); every ``*_KEY`` / ``*_TOKEN`` / ``*_SECRET`` value is redacted from
the raw stream file and the recorded info (the worker redacts its own log lines).

Per-spec settings: a ``claude-agent.json`` in the spec folder (same field names, see
:class:`ClaudeSpecSettings`) fills every field the run's config leaves unset; ``env`` is merged
(the run wins) and ``extra_args`` are concatenated (spec first).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks_lib.agents.base import (
    AgentRequest,
    AgentRun,
    AgentSettings,
    LineSink,
    StartSink,
    aload_secrets,
    base_env,
    redact,
    secret_values,
)
from tasks_lib.agents.claude_stream import (
    ApiRetryEvent,
    InitEvent,
    ResultEvent,
    StreamSummary,
    one_line,
    summarize_event,
)
from tasks_lib.agents.process import AgentLaunchError, ProcessInfo, run_process_group
from tasks_lib.agents.rss import RssSampler
from tasks_lib.results import AgentSignals, RateLimit, tail

__all__ = [
    "DEFAULT_ALLOWED_TOOLS",
    "SPEC_SETTINGS_FILE",
    "ClaudeAgent",
    "ClaudeAgentConfig",
    "ClaudeOutcome",
    "ClaudeSpecSettings",
    "StreamSummary",
    "attempt_info",
    "bundled_cli",
    "decide_outcome",
    "summarize_event",
]

PermissionMode = Literal["acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan"]

#: Tools allowed without a prompt by default. File edits are not listed on purpose: under
#: ``acceptEdits`` Write/Edit inside the working directory are accepted and outside it denied,
#: while listing ``Write`` here would let it write anywhere.
DEFAULT_ALLOWED_TOOLS = ("Bash", "Read", "Glob", "Grep", "TodoWrite")
DEFAULT_PERMISSION_MODE: PermissionMode = "acceptEdits"
DEFAULT_API_RETRIES = 2
#: Read from the spec folder: per-spec defaults for the claude agent.
SPEC_SETTINGS_FILE = "claude-agent.json"
#: Orchestrator variables passed to the CLI when ``pass_provider_env`` (prefixes and names).
PROVIDER_ENV_PREFIXES = ("ANTHROPIC_", "AWS_", "CLOUD_ML_", "VERTEX_REGION_")
PROVIDER_ENV_NAMES = (
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
)
#: Set unless the config's env says otherwise: no auto-update, no telemetry, no nag traffic.
QUIET_ENV = {
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_TELEMETRY": "1",
}
RETRYABLE_HTTP = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class ClaudeSpecSettings(BaseModel):
    """Per-spec settings: ``<spec folder>/claude-agent.json`` (every key optional).

    Example file::

        {"model": "sonnet", "max_turns": 40, "max_budget_usd": 3,
         "allowed_tools": ["Bash(pytest *)", "Bash(git diff *)", "Read"]}
    """

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Model alias or full name (--model).")
    permission_mode: PermissionMode | None = Field(None, description="--permission-mode.")
    allowed_tools: list[str] | None = Field(None, description="--allowedTools.")
    disallowed_tools: list[str] | None = Field(None, description="--disallowedTools.")
    max_turns: int | None = Field(None, ge=1, description="--max-turns.")
    max_budget_usd: float | None = Field(None, gt=0, description="--max-budget-usd.")
    api_retries: int | None = Field(None, ge=0, le=20, description="CLAUDE_CODE_MAX_RETRIES.")
    extra_args: list[str] = Field(default_factory=list, description="More CLI arguments.")
    env: dict[str, str] = Field(
        default_factory=dict, description="More environment variables (no secrets)."
    )


class ClaudeAgentConfig(AgentSettings):
    """Run each task with a headless Claude Code CLI (``claude -p``).

    Unset (``None``) fields fall back to the spec folder's ``claude-agent.json``, then to the
    defaults named in each description.

    Example:
        >>> ClaudeAgentConfig(model="sonnet", max_budget_usd=2.0).kind
        'claude'
    """

    kind: Literal["claude"] = "claude"
    executable: str | None = Field(
        None,
        description="Path (or name on PATH) of the Claude Code CLI. Default: the CLI "
        "bundled in the claude-agent-sdk wheel (a dependency of "
        "prefect-specwave), else `claude` on PATH.",
    )
    model: str | None = Field(
        None, description="Model alias or full name (--model); default: the CLI's default model."
    )
    permission_mode: PermissionMode | None = Field(
        None,
        description="--permission-mode; default acceptEdits (file edits inside the "
        "repository are accepted, outside denied). bypassPermissions only "
        "when asked; as root the CLI refuses it unless env IS_SANDBOX=1.",
    )
    allowed_tools: list[str] | None = Field(
        None,
        description="--allowedTools: tools (or rules like 'Bash(pytest *)') allowed "
        f"without a prompt; default {list(DEFAULT_ALLOWED_TOOLS)}.",
    )
    disallowed_tools: list[str] | None = Field(None, description="--disallowedTools.")
    max_turns: int | None = Field(
        None, ge=1, description="--max-turns; reaching it is a final failure. Default: no limit."
    )
    max_budget_usd: float | None = Field(
        None, gt=0, description="--max-budget-usd per attempt; reaching it is final."
    )
    api_retries: int | None = Field(
        None,
        ge=0,
        le=20,
        description="The CLI's own API retries "
        f"(CLAUDE_CODE_MAX_RETRIES); default "
        f"{DEFAULT_API_RETRIES}.",
    )
    retry_backoff_seconds: float = Field(
        15.0,
        ge=0,
        description="After a 429/529/5xx/connection failure: wait this x "
        "2^(attempt-1) x jitter 0.5..1.5 before the worker's retry "
        "(capped at 60 s).",
    )
    extra_args: list[str] = Field(
        default_factory=list, description="More CLI arguments, placed before the prompt."
    )
    pass_provider_env: bool = Field(
        True,
        description="Pass ANTHROPIC_* (API key, base URL), CLAUDE_CODE_OAUTH_TOKEN and "
        "Bedrock/Vertex variables from the orchestrator's environment.",
    )
    spec_settings: bool = Field(
        True, description=f"Read {SPEC_SETTINGS_FILE} from the spec folder for unset fields."
    )


def bundled_cli() -> Path | None:
    """The Claude Code binary inside the installed claude-agent-sdk wheel (not imported)."""
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = Path(base) / "_bundled" / "claude"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def resolve_executable(configured: str | None, path_env: str | None) -> str:
    """The CLI to start: the configured one, else the bundled one, else ``claude`` on PATH."""
    if configured:
        if os.sep in configured:
            return configured
        found = shutil.which(configured, path=path_env)
        if not found:
            raise AgentLaunchError(
                f"cannot start agent: Claude Code CLI {configured!r} not "
                f"found on PATH={path_env} — give its full path in "
                "executable"
            )
        return found
    bundled = bundled_cli()
    if bundled is not None:
        return str(bundled)
    found = shutil.which("claude", path=path_env)
    if found:
        return found
    raise AgentLaunchError(
        "cannot start agent: Claude Code CLI not found (no claude_agent_sdk/_bundled/claude, "
        "no `claude` on PATH) — reinstall prefect-specwave (its claude-agent-sdk dependency "
        "bundles the CLI; `pip install -e .` in a checkout) or set executable"
    )


def load_spec_settings(spec_dir: str | Path) -> ClaudeSpecSettings:
    """``<spec_dir>/claude-agent.json`` (empty settings when absent)."""
    path = Path(spec_dir) / SPEC_SETTINGS_FILE
    if not path.is_file():
        return ClaudeSpecSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ClaudeSpecSettings.model_validate(data)
    except json.JSONDecodeError as exc:
        raise AgentLaunchError(
            f"cannot start agent: {path}: invalid JSON: {exc.msg} at line "
            f"{exc.lineno} column {exc.colno} — fix the file"
        ) from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise AgentLaunchError(
            f'cannot start agent: {path}: field "{field}": {first["msg"]}'
            " — see ClaudeSpecSettings for the keys"
        ) from None


class _Effective(BaseModel):
    """Run config + spec settings + defaults, resolved."""

    model: str | None
    permission_mode: PermissionMode
    allowed_tools: list[str]
    disallowed_tools: list[str]
    max_turns: int | None
    max_budget_usd: float | None
    api_retries: int
    extra_args: list[str]
    env: dict[str, str]


def effective_settings(config: ClaudeAgentConfig, spec: ClaudeSpecSettings) -> _Effective:
    def pick(name: str, default: Any) -> Any:
        for source in (config, spec):
            value = getattr(source, name)
            if value is not None:
                return value
        return default

    return _Effective(
        model=pick("model", None),
        permission_mode=pick("permission_mode", DEFAULT_PERMISSION_MODE),
        allowed_tools=list(pick("allowed_tools", DEFAULT_ALLOWED_TOOLS)),
        disallowed_tools=list(pick("disallowed_tools", [])),
        max_turns=pick("max_turns", None),
        max_budget_usd=pick("max_budget_usd", None),
        api_retries=pick("api_retries", DEFAULT_API_RETRIES),
        extra_args=[*spec.extra_args, *config.extra_args],
        env={**spec.env, **config.env},
    )


def build_argv(executable: str, eff: _Effective) -> list[str]:
    """The CLI command line (the prompt goes on stdin)."""
    argv = [
        executable,
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        eff.permission_mode,
        "--no-session-persistence",
    ]
    if eff.model:
        argv += ["--model", eff.model]
    if eff.max_turns is not None:
        argv += ["--max-turns", str(eff.max_turns)]
    if eff.max_budget_usd is not None:
        argv += ["--max-budget-usd", f"{eff.max_budget_usd:g}"]
    # Both flags are variadic: give each its list as one comma-separated argument.
    if eff.allowed_tools:
        argv += ["--allowedTools", ",".join(eff.allowed_tools)]
    if eff.disallowed_tools:
        argv += ["--disallowedTools", ",".join(eff.disallowed_tools)]
    return argv + list(eff.extra_args)


def _bypass_requested(eff: _Effective) -> bool:
    return eff.permission_mode == "bypassPermissions" or any(
        a in ("--dangerously-skip-permissions", "bypassPermissions") for a in eff.extra_args
    )


# --------------------------------------------------------------------------- the outcome

OutcomeKind = Literal["authentication", "api_transient", "api_request", "max_turns", "max_budget"]


class ClaudeOutcome(BaseModel):
    """What one finished attempt amounts to (see the module docstring's failure semantics)."""

    exit_code: int | None
    is_error: bool
    #: Never retried (auth, a bad request, a turn or budget limit).
    final: bool = False
    #: Retryable after this back-off (an overload, rate limit, 5xx or connection error).
    retry_after_s: float | None = None
    #: The failure class, if one of the above; ``None`` otherwise (the worker's output and
    #: ``is_error`` decide).
    kind: OutcomeKind | None = None
    #: HTTP status of the failing API call: the result line's, else the stopping event's.
    api_error_status: int | None = None
    #: The CLI was stopped by specwave (at its first authentication_failed retry).
    stopped_by_specwave: str | None = None
    #: Newest first: the failure explained, then the CLI's own errors (deduplicated).
    errors: list[str] = Field(default_factory=list)
    #: HTTP 429 after the CLI's retries: the shared rate-limit fact (no reset time known).
    rate_limit: RateLimit | None = None


def decide_outcome(
    summary: StreamSummary,
    *,
    exit_code: int | None,
    timed_out: bool,
    cancelled: bool,
    stderr: str = "",
    stopped_reason: str | None = None,
    stopped_status: int | None = None,
    api_retries: int = DEFAULT_API_RETRIES,
    max_turns: int | None = None,
    max_budget_usd: float | None = None,
    retry_after_s: float = 0.0,
) -> ClaudeOutcome:
    """Classify a finished attempt from its stream summary and how the process ended.

    Pure: ``retry_after_s`` is the back-off to use if the failure is retryable (the caller
    draws the jitter); ``api_retries``, ``max_turns`` and ``max_budget_usd`` only go into the
    messages.

    Example:
        >>> s = StreamSummary(result={"is_error": True, "api_error_status": 529,
        ...                           "terminal_reason": "api_error", "result": "Overloaded"})
        >>> o = decide_outcome(s, exit_code=1, timed_out=False, cancelled=False,
        ...                    retry_after_s=12.5)
        >>> o.kind, o.final, o.retry_after_s
        ('api_transient', False, 12.5)
    """
    result = summary.result or ResultEvent()
    errors = list(result.errors)
    is_error = bool(result.is_error)
    status = result.api_error_status
    if status is None and stopped_status is not None:
        status = stopped_status
    auth_stop = stopped_reason == "authentication_failed"
    final = False
    retry_after: float | None = None
    kind: OutcomeKind | None = None
    rate_limit: RateLimit | None = None
    terminal = result.terminal_reason
    sub = result.subtype or ""

    if auth_stop:
        # We stopped the CLI ourselves: report the failure, not a kill.
        exit_code = 1 if exit_code in (None, 0) else exit_code
        is_error = True
    if status in (401, 403) or auth_stop:
        final, kind = True, "authentication"
        what = "authentication failed" if status != 403 else "permission denied by the API"
        errors.insert(
            0,
            f"{what} (HTTP {status}) — check ANTHROPIC_API_KEY (or "
            "CLAUDE_CODE_OAUTH_TOKEN) in the orchestrator's environment; "
            "not retried",
        )
    elif terminal == "api_error" or (is_error and status is not None):
        text = one_line(result.result or "", 200)
        if status is None or status in RETRYABLE_HTTP or status >= 500:
            retry_after, kind = retry_after_s, "api_transient"
            label = f"HTTP {status}" if status is not None else "connection error"
            if status == 429:
                rate_limit = RateLimit(kind="rate_limit", message=text)
            errors.insert(
                0,
                f"API error ({label}) after {api_retries} CLI retries: "
                f"{text}; retrying after {retry_after:.1f} s",
            )
        else:
            final, kind = True, "api_request"
            errors.insert(
                0,
                f"API error (HTTP {status}): {text} — fix the request "
                "(model name, prompt size); not retried",
            )
    elif terminal == "max_turns" or sub == "error_max_turns":
        final, kind = True, "max_turns"
        errors.insert(0, f"stopped at max_turns ({max_turns}) — raise max_turns or split the task")
    elif terminal == "budget_exhausted" or sub == "error_max_budget_usd":
        final, kind = True, "max_budget"
        errors.insert(
            0,
            f"stopped at max_budget_usd ({max_budget_usd}) — raise "
            "max_budget_usd; not retried (it would spend again)",
        )
    if summary.result is None and not timed_out and not cancelled:
        # No result line: the CLI failed before or while running (bad flag, crash).
        first = tail(stderr, 3, 400) or tail("\n".join(summary.other_lines), 3, 400)
        if first:
            errors.append("the CLI ended without a result: " + one_line(first, 400))
    return ClaudeOutcome(
        exit_code=exit_code,
        is_error=is_error,
        final=final,
        retry_after_s=retry_after,
        kind=kind,
        api_error_status=status,
        stopped_by_specwave="authentication_failed" if auth_stop else None,
        errors=list(dict.fromkeys(errors)),
        rate_limit=rate_limit,
    )


def attempt_info(
    summary: StreamSummary, permission_mode: str, api_error_status: int | None
) -> dict[str, Any]:
    """What the attempt record's ``info`` keeps of the stream."""
    result = summary.result or ResultEvent()
    init = summary.init or InitEvent()
    cost = result.total_cost_usd
    return {
        "session_id": summary.session_id,
        "model": init.model,
        "claude_code_version": init.claude_code_version,
        "permission_mode": permission_mode,
        "is_error": result.is_error,
        "subtype": result.subtype,
        "terminal_reason": result.terminal_reason,
        "api_error_status": api_error_status,
        "api_error_type": result.api_error_type,
        "total_cost_usd": round(cost, 6) if cost is not None else None,
        "num_turns": result.num_turns,
        "usage": result.usage.counts(),
        "permission_denials": list(result.permission_denials),
        "duration_api_ms": result.duration_api_ms,
        "api_retries": [e.brief() for e in summary.api_retries],
        "tool_uses": summary.tool_uses,
    }


# --------------------------------------------------------------------------- the agent


class ClaudeAgent:
    """Runs one Claude Code CLI per attempt; see the module docstring for the semantics."""

    kind = "claude"

    def __init__(self, config: ClaudeAgentConfig):
        self.config = config

    def _env(
        self,
        request: AgentRequest,
        eff: _Effective,
        config_dir: Path,
        tmpdir: Path,
        secrets: dict[str, str],
    ) -> dict[str, str]:
        provider: dict[str, str] = {}
        if self.config.pass_provider_env:
            for k, v in os.environ.items():
                if k.startswith(PROVIDER_ENV_PREFIXES) or k in PROVIDER_ENV_NAMES:
                    provider[k] = v
        settings = self.config.model_copy(update={"env": {**QUIET_ENV, **provider, **eff.env}})
        env = base_env(settings, request, secrets)
        env.update(
            {
                "CLAUDE_CONFIG_DIR": str(config_dir),
                "TMPDIR": str(tmpdir),
                "CLAUDE_CODE_MAX_RETRIES": str(eff.api_retries),
            }
        )
        return env

    async def run(
        self,
        request: AgentRequest,
        *,
        on_line: LineSink | None = None,
        on_start: StartSink | None = None,
        secrets: dict[str, str] | None = None,
    ) -> AgentRun:
        if secrets is None:
            secrets = await aload_secrets(self.config)
        spec = (
            load_spec_settings(request.spec_dir)
            if self.config.spec_settings
            else ClaudeSpecSettings()
        )
        eff = effective_settings(self.config, spec)
        root = Path(tempfile.mkdtemp(prefix=f"specwave-claude-{_slug(request.task_id)}-"))
        try:
            return await self._run(request, eff, root, on_line, on_start, secrets)
        finally:
            # The process tree is dead here (run_process_group kills it before returning or
            # raising), so nothing writes into the private dirs any more.
            shutil.rmtree(root, ignore_errors=True)

    async def _run(
        self,
        request: AgentRequest,
        eff: _Effective,
        root: Path,
        on_line: LineSink | None,
        on_start: StartSink | None,
        secrets: dict[str, str],
    ) -> AgentRun:
        config_dir, tmpdir = root / "config", root / "tmp"
        config_dir.mkdir()
        tmpdir.mkdir()
        env = self._env(request, eff, config_dir, tmpdir, secrets)
        if _bypass_requested(eff) and os.geteuid() == 0 and env.get("IS_SANDBOX") != "1":
            raise AgentLaunchError(
                "cannot start agent: permission mode bypassPermissions as root — the Claude "
                "Code CLI refuses it unless IS_SANDBOX=1; only inside a sandbox (a container "
                'or VM without secrets) add "env": {"IS_SANDBOX": "1"}, or use acceptEdits'
            )
        executable = resolve_executable(self.config.executable, env.get("PATH"))
        argv = build_argv(executable, eff)
        hidden = secret_values(env)
        stream_path = _stream_path(request)
        # Plain blocking appends on purpose (as agents.process does for its log).
        stream_fh = (
            open(stream_path, "a", encoding="utf-8")  # noqa: SIM115, ASYNC230
            if stream_path
            else None
        )
        stop = asyncio.Event()
        stopped: dict[str, Any] = {}
        summary = StreamSummary()
        rss = RssSampler()

        def line(stream: str, text: str) -> None:
            if stream != "stdout":
                if on_line is not None:
                    on_line(stream, text)
                return
            if stream_fh is not None:
                stream_fh.write(redact(text, hidden) + "\n")
                stream_fh.flush()
            event = summary.feed(text)  # the only parse of this line
            if event is None:
                if on_line is not None and text.strip():
                    on_line("stdout", one_line(text, 2000))
                return
            if (
                isinstance(event, ApiRetryEvent)
                and event.error == "authentication_failed"
                and not stop.is_set()
            ):
                # Retrying a rejected key only delays the failure: stop the CLI now.
                stopped["reason"] = "authentication_failed"
                stopped["status"] = event.error_status
                stop.set()
            if on_line is not None:
                for piece in summarize_event(event.raw):
                    on_line("stdout", piece)

        def started(info: ProcessInfo) -> None:
            rss.start(info.pid)
            if on_start is not None:
                on_start(info)

        try:
            res = await run_process_group(
                argv,
                cwd=request.workdir,
                env=env,
                stdin_data=request.prompt.encode("utf-8"),
                timeout=request.timeout_seconds,
                grace_seconds=self.config.grace_seconds,
                on_line=line,
                on_start=started,
                cancel_event=stop,
            )
        finally:
            rss.stop()
            if stream_fh is not None:
                stream_fh.close()

        summary.finish()
        run = self._outcome(request, eff, res, summary, stopped)
        run.info["peak_rss_mb"] = round(rss.peak / 2**20, 1) if rss.peak else None
        run.info["executable"] = executable
        if stream_path:
            run.info["stream_log"] = str(stream_path)
        run.info = json.loads(redact(json.dumps(run.info, default=str), hidden))
        run.signals = AgentSignals.model_validate(
            json.loads(redact(run.signals.model_dump_json(), hidden))
        )
        run.output = redact(run.output, hidden)
        run.stderr_tail = redact(run.stderr_tail, hidden)
        return run

    def _outcome(
        self,
        request: AgentRequest,
        eff: _Effective,
        res: Any,
        summary: StreamSummary,
        stopped: dict[str, Any],
    ) -> AgentRun:
        outcome = decide_outcome(
            summary,
            exit_code=res.exit_code,
            timed_out=res.timed_out,
            cancelled=res.cancelled,
            stderr=res.stderr,
            stopped_reason=stopped.get("reason"),
            stopped_status=stopped.get("status"),
            api_retries=eff.api_retries,
            max_turns=eff.max_turns,
            max_budget_usd=eff.max_budget_usd,
            retry_after_s=self._backoff(request.attempt),
        )
        info = attempt_info(summary, eff.permission_mode, outcome.api_error_status)
        if outcome.stopped_by_specwave:
            info["stopped_by_specwave"] = outcome.stopped_by_specwave
        # When we stopped the CLI ourselves it is not a leftover; its descendants still are.
        killed = [pid for pid in res.killed_pids if not (res.cancelled and pid == res.pid)]
        signals = AgentSignals(
            is_error=outcome.is_error,
            permission_denials=info["permission_denials"],
            errors=outcome.errors,
        )
        return AgentRun(
            exit_code=outcome.exit_code,
            timed_out=res.timed_out,
            output=summary.output(),
            stderr_tail=tail(res.stderr, 20, 2000),
            duration_s=res.duration_s,
            signals=signals,
            info=info,
            killed_pids=killed,
            retry_after_s=outcome.retry_after_s,
            final=outcome.final,
            rate_limit=outcome.rate_limit,
        )

    def _backoff(self, attempt: int) -> float:
        base = self.config.retry_backoff_seconds * (2 ** max(0, attempt - 1))
        return round(min(60.0, base * random.uniform(0.5, 1.5)), 2)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:40] or "task"


def _stream_path(request: AgentRequest) -> Path | None:
    if not request.log_path:
        return None
    log = Path(request.log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    return log.with_name(log.stem + ".stream.jsonl")
