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
import contextlib
import importlib.util
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import psutil
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
from tasks_lib.agents.process import AgentLaunchError, ProcessInfo, run_process_group
from tasks_lib.results import AgentSignals, tail

__all__ = [
    "DEFAULT_ALLOWED_TOOLS",
    "SPEC_SETTINGS_FILE",
    "ClaudeAgent",
    "ClaudeAgentConfig",
    "ClaudeSpecSettings",
    "StreamSummary",
    "bundled_cli",
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
    "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT",
)
#: Set unless the config's env says otherwise: no auto-update, no telemetry, no nag traffic.
QUIET_ENV = {
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_TELEMETRY": "1",
}
RETRYABLE_HTTP = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_LOG_TEXT_CHARS = 300
_RSS_INTERVAL_S = 0.25


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
    env: dict[str, str] = Field(default_factory=dict, description="More environment "
                                                                  "variables (no secrets).")


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
        None, description="Path (or name on PATH) of the Claude Code CLI. Default: the CLI "
                          "bundled in the claude-agent-sdk wheel (pip install "
                          "'prefect-specwave[claude]'), else `claude` on PATH.")
    model: str | None = Field(None, description="Model alias or full name (--model); default: "
                                                "the CLI's default model.")
    permission_mode: PermissionMode | None = Field(
        None, description="--permission-mode; default acceptEdits (file edits inside the "
                          "repository are accepted, outside denied). bypassPermissions only "
                          "when asked; as root the CLI refuses it unless env IS_SANDBOX=1.")
    allowed_tools: list[str] | None = Field(
        None, description="--allowedTools: tools (or rules like 'Bash(pytest *)') allowed "
                          f"without a prompt; default {list(DEFAULT_ALLOWED_TOOLS)}.")
    disallowed_tools: list[str] | None = Field(None, description="--disallowedTools.")
    max_turns: int | None = Field(None, ge=1, description="--max-turns; reaching it is a final "
                                                          "failure. Default: no limit.")
    max_budget_usd: float | None = Field(None, gt=0, description="--max-budget-usd per attempt; "
                                                                 "reaching it is final.")
    api_retries: int | None = Field(None, ge=0, le=20,
                                    description="The CLI's own API retries "
                                                f"(CLAUDE_CODE_MAX_RETRIES); default "
                                                f"{DEFAULT_API_RETRIES}.")
    retry_backoff_seconds: float = Field(
        15.0, ge=0, description="After a 429/529/5xx/connection failure: wait this x "
                                "2^(attempt-1) x jitter 0.5..1.5 before the worker's retry "
                                "(capped at 60 s).")
    extra_args: list[str] = Field(default_factory=list,
                                  description="More CLI arguments, placed before the prompt.")
    pass_provider_env: bool = Field(
        True, description="Pass ANTHROPIC_* (API key, base URL), CLAUDE_CODE_OAUTH_TOKEN and "
                          "Bedrock/Vertex variables from the orchestrator's environment.")
    spec_settings: bool = Field(True, description=f"Read {SPEC_SETTINGS_FILE} from the spec "
                                                  "folder for unset fields.")


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
            raise AgentLaunchError(f"cannot start agent: Claude Code CLI {configured!r} not "
                                   f"found on PATH={path_env} — give its full path in "
                                   "executable")
        return found
    bundled = bundled_cli()
    if bundled is not None:
        return str(bundled)
    found = shutil.which("claude", path=path_env)
    if found:
        return found
    raise AgentLaunchError(
        "cannot start agent: Claude Code CLI not found (no claude_agent_sdk/_bundled/claude, "
        "no `claude` on PATH) — pip install 'prefect-specwave[claude]' or set executable")


def load_spec_settings(spec_dir: str | Path) -> ClaudeSpecSettings:
    """``<spec_dir>/claude-agent.json`` (empty settings when absent)."""
    path = Path(spec_dir) / SPEC_SETTINGS_FILE
    if not path.is_file():
        return ClaudeSpecSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ClaudeSpecSettings.model_validate(data)
    except json.JSONDecodeError as exc:
        raise AgentLaunchError(f"cannot start agent: {path}: invalid JSON: {exc.msg} at line "
                               f"{exc.lineno} column {exc.colno} — fix the file") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise AgentLaunchError(f"cannot start agent: {path}: field \"{field}\": {first['msg']}"
                               " — see ClaudeSpecSettings for the keys") from None


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
    argv = [executable, "-p", "--output-format", "stream-json", "--verbose",
            "--permission-mode", eff.permission_mode, "--no-session-persistence"]
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
        a in ("--dangerously-skip-permissions", "bypassPermissions") for a in eff.extra_args)


# --------------------------------------------------------------------------- stream-json


def _one_line(text: Any, limit: int = _LOG_TEXT_CHARS) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _tool_brief(name: str, data: Any) -> str:
    if not isinstance(data, dict):
        return _one_line(data, 200)
    for key in ("command", "file_path", "path", "pattern", "url", "query", "description"):
        if isinstance(data.get(key), str):
            return _one_line(data[key], 200)
    return _one_line(json.dumps(data, ensure_ascii=False, default=str), 200)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_content_text(c.get("text") if isinstance(c, dict) else c)
                        for c in content)
    return "" if content is None else str(content)


def _blocks(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The content blocks of a message event, whatever shape the line has."""
    message = event.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _as_list(value: Any) -> list[Any]:
    """A field the CLI documents as a list, whatever the line holds."""
    if isinstance(value, list):
        return value
    return [value] if value else []


def summarize_event(event: dict[str, Any]) -> list[str]:
    """Like :func:`_summarize_event`, but a line of an unexpected shape can never stop the
    worker (this runs for every line the agent prints): it is logged as compact JSON."""
    try:
        return _summarize_event(event)
    except Exception:  # noqa: BLE001 - a log summary must not kill the agent
        return [_one_line(json.dumps(event, ensure_ascii=False, default=str), 200)]


def _summarize_event(event: dict[str, Any]) -> list[str]:
    """One compact log line per meaningful piece of a stream-json event (may be empty).

    Example:
        >>> _summarize_event({"type": "system", "subtype": "api_retry", "attempt": 1,
        ...                  "max_retries": 2, "retry_delay_ms": 567, "error_status": 529,
        ...                  "error": "overloaded"})
        ['API retry 1/2 in 567 ms: HTTP 529 overloaded']
    """
    kind = event.get("type")
    sub = event.get("subtype")
    if kind == "system" and sub == "init":
        return [(f"claude {event.get('claude_code_version', '?')} session "
                 f"{event.get('session_id')} model {event.get('model')} permission "
                 f"{event.get('permissionMode')} cwd {event.get('cwd')}")]
    if kind == "system" and sub == "api_retry":
        return [(f"API retry {event.get('attempt')}/{event.get('max_retries')} in "
                 f"{event.get('retry_delay_ms')} ms: HTTP {event.get('error_status')} "
                 f"{event.get('error')}")]
    if kind == "system":
        return [f"system {sub}"]
    if kind == "assistant":
        out = []
        for block in _blocks(event):
            btype = block.get("type")
            if btype == "text" and str(block.get("text", "")).strip():
                out.append("assistant: " + _one_line(block["text"]))
            elif btype == "tool_use":
                out.append(f"tool {block.get('name')}: "
                           f"{_tool_brief(str(block.get('name')), block.get('input'))}")
            elif btype == "thinking":
                out.append("thinking…")
        return out
    if kind == "user":
        out = []
        for block in _blocks(event):
            if block.get("type") == "tool_result":
                flag = " (error)" if block.get("is_error") else ""
                out.append(f"tool result{flag}: "
                           f"{_one_line(_content_text(block.get('content')), 200)}")
        return out
    if kind == "result":
        cost = event.get("total_cost_usd")
        parts = [f"result: {event.get('subtype')}", f"is_error={event.get('is_error')}",
                 f"turns={event.get('num_turns')}",
                 f"cost=${cost:.4f}" if isinstance(cost, (int, float)) else "cost=?"]
        if event.get("api_error_status"):
            parts.append(f"api_error_status={event['api_error_status']}")
        if _as_list(event.get("permission_denials")):
            parts.append(f"permission_denials={len(_as_list(event['permission_denials']))}")
        if event.get("terminal_reason") not in (None, "completed"):
            parts.append(f"terminal_reason={event['terminal_reason']}")
        return [" ".join(parts)]
    if kind == "stream_event":
        return []
    return [_one_line(json.dumps(event, ensure_ascii=False, default=str), 200)]


class StreamSummary(BaseModel):
    """What a finished run's stream-json said (built from the whole stdout)."""

    result: dict[str, Any] | None = None
    init: dict[str, Any] | None = None
    api_retries: list[dict[str, Any]] = Field(default_factory=list)
    assistant_text: list[str] = Field(default_factory=list)
    tool_uses: int = 0
    other_lines: list[str] = Field(default_factory=list)

    @classmethod
    def parse(cls, stdout: str) -> StreamSummary:
        s = cls()
        for line in stdout.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                s.other_lines.append(line)
                continue
            if not isinstance(event, dict):
                s.other_lines.append(line)
                continue
            kind, sub = event.get("type"), event.get("subtype")
            if kind == "result":
                s.result = event
            elif kind == "system" and sub == "init":
                s.init = event
            elif kind == "system" and sub == "api_retry":
                s.api_retries.append(event)
            elif kind == "assistant":
                for block in _blocks(event):
                    if block.get("type") == "text":
                        s.assistant_text.append(str(block.get("text", "")))
                    elif block.get("type") == "tool_use":
                        s.tool_uses += 1
        return s

    def output(self) -> str:
        """The text to parse: the final result text, else everything the assistant said."""
        if self.result is not None and isinstance(self.result.get("result"), str):
            return self.result["result"]
        return "\n".join(self.assistant_text)


def _usage(usage: Any) -> dict[str, Any]:
    if not isinstance(usage, dict):
        return {}
    keys = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
            "cache_read_input_tokens")
    return {k: usage[k] for k in keys if isinstance(usage.get(k), (int, float))}


# --------------------------------------------------------------------------- the agent


class _RssSampler:
    """Peak resident memory of the agent's process tree (sum over the tree, 4 samples a second)."""

    def __init__(self) -> None:
        self.peak = 0
        self.task: asyncio.Task | None = None

    def start(self, pid: int) -> None:
        self.task = asyncio.ensure_future(self._run(pid))

    async def _run(self, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            leader = psutil.Process(pid)
            while True:
                self.sample(leader)
                await asyncio.sleep(_RSS_INTERVAL_S)

    def sample(self, leader: psutil.Process) -> None:
        total = 0
        with contextlib.suppress(psutil.Error):
            for p in [leader, *leader.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        self.peak = max(self.peak, total)

    def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


class ClaudeAgent:
    """Runs one Claude Code CLI per attempt; see the module docstring for the semantics."""

    kind = "claude"

    def __init__(self, config: ClaudeAgentConfig):
        self.config = config

    def _env(self, request: AgentRequest, eff: _Effective, config_dir: Path,
             tmpdir: Path, secrets: dict[str, str]) -> dict[str, str]:
        provider: dict[str, str] = {}
        if self.config.pass_provider_env:
            for k, v in os.environ.items():
                if k.startswith(PROVIDER_ENV_PREFIXES) or k in PROVIDER_ENV_NAMES:
                    provider[k] = v
        settings = self.config.model_copy(update={"env": {**QUIET_ENV, **provider, **eff.env}})
        env = base_env(settings, request, secrets)
        env.update({
            "CLAUDE_CONFIG_DIR": str(config_dir),
            "TMPDIR": str(tmpdir),
            "CLAUDE_CODE_MAX_RETRIES": str(eff.api_retries),
        })
        return env

    async def run(self, request: AgentRequest, *, on_line: LineSink | None = None,
                  on_start: StartSink | None = None,
                  secrets: dict[str, str] | None = None) -> AgentRun:
        if secrets is None:
            secrets = await aload_secrets(self.config)
        spec = (load_spec_settings(request.spec_dir) if self.config.spec_settings
                else ClaudeSpecSettings())
        eff = effective_settings(self.config, spec)
        root = Path(tempfile.mkdtemp(prefix=f"specwave-claude-{_slug(request.task_id)}-"))
        try:
            return await self._run(request, eff, root, on_line, on_start, secrets)
        finally:
            # The process tree is dead here (run_process_group kills it before returning or
            # raising), so nothing writes into the private dirs any more.
            shutil.rmtree(root, ignore_errors=True)

    async def _run(self, request: AgentRequest, eff: _Effective, root: Path,
                   on_line: LineSink | None, on_start: StartSink | None,
                   secrets: dict[str, str]) -> AgentRun:
        config_dir, tmpdir = root / "config", root / "tmp"
        config_dir.mkdir()
        tmpdir.mkdir()
        env = self._env(request, eff, config_dir, tmpdir, secrets)
        if _bypass_requested(eff) and os.geteuid() == 0 and env.get("IS_SANDBOX") != "1":
            raise AgentLaunchError(
                "cannot start agent: permission mode bypassPermissions as root — the Claude "
                "Code CLI refuses it unless IS_SANDBOX=1; only inside a sandbox (a container "
                'or VM without secrets) add "env": {"IS_SANDBOX": "1"}, or use acceptEdits')
        executable = resolve_executable(self.config.executable, env.get("PATH"))
        argv = build_argv(executable, eff)
        secrets = secret_values(env)
        stream_path = _stream_path(request)
        # Plain blocking appends on purpose (as agents.process does for its log).
        stream_fh = (open(stream_path, "a", encoding="utf-8")  # noqa: SIM115, ASYNC230
                     if stream_path else None)
        stop = asyncio.Event()
        stopped: dict[str, Any] = {}
        rss = _RssSampler()

        def line(stream: str, text: str) -> None:
            if stream != "stdout":
                if on_line is not None:
                    on_line(stream, text)
                return
            if stream_fh is not None:
                stream_fh.write(redact(text, secrets) + "\n")
                stream_fh.flush()
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                event = None
            if not isinstance(event, dict):
                if on_line is not None and text.strip():
                    on_line("stdout", _one_line(text, 2000))
                return
            if (event.get("type") == "system" and event.get("subtype") == "api_retry"
                    and event.get("error") == "authentication_failed" and not stop.is_set()):
                # Retrying a rejected key only delays the failure: stop the CLI now.
                stopped["reason"] = "authentication_failed"
                stopped["status"] = event.get("error_status")
                stop.set()
            if on_line is not None:
                for summary in summarize_event(event):
                    on_line("stdout", summary)

        def started(info: ProcessInfo) -> None:
            rss.start(info.pid)
            if on_start is not None:
                on_start(info)

        try:
            res = await run_process_group(
                argv, cwd=request.workdir, env=env, stdin_data=request.prompt.encode("utf-8"),
                timeout=request.timeout_seconds, grace_seconds=self.config.grace_seconds,
                on_line=line, on_start=started, cancel_event=stop)
        finally:
            rss.stop()
            if stream_fh is not None:
                stream_fh.close()

        summary = StreamSummary.parse(res.stdout)
        run = self._outcome(request, eff, res, summary, stopped)
        run.info["peak_rss_mb"] = round(rss.peak / 2**20, 1) if rss.peak else None
        run.info["executable"] = executable
        if stream_path:
            run.info["stream_log"] = str(stream_path)
        run.info = json.loads(redact(json.dumps(run.info, default=str), secrets))
        run.signals = AgentSignals.model_validate(
            json.loads(redact(run.signals.model_dump_json(), secrets)))
        run.output = redact(run.output, secrets)
        run.stderr_tail = redact(run.stderr_tail, secrets)
        return run

    def _outcome(self, request: AgentRequest, eff: _Effective, res: Any,
                 summary: StreamSummary, stopped: dict[str, Any]) -> AgentRun:
        result = summary.result or {}
        status = result.get("api_error_status")
        if status is None and stopped.get("status") is not None:
            status = stopped["status"]
        info: dict[str, Any] = {
            "session_id": result.get("session_id") or (summary.init or {}).get("session_id"),
            "model": (summary.init or {}).get("model"),
            "claude_code_version": (summary.init or {}).get("claude_code_version"),
            "permission_mode": eff.permission_mode,
            "is_error": result.get("is_error"),
            "subtype": result.get("subtype"),
            "terminal_reason": result.get("terminal_reason"),
            "api_error_status": status,
            "api_error_type": result.get("api_error_type"),
            "total_cost_usd": (round(result["total_cost_usd"], 6)
                               if isinstance(result.get("total_cost_usd"), (int, float))
                               else None),
            "num_turns": result.get("num_turns"),
            "usage": _usage(result.get("usage")),
            "permission_denials": [d if isinstance(d, dict) else str(d)
                                   for d in _as_list(result.get("permission_denials"))],
            "duration_api_ms": result.get("duration_api_ms"),
            "api_retries": [{k: e.get(k) for k in ("attempt", "error_status", "error",
                                                  "retry_delay_ms")}
                            for e in summary.api_retries],
            "tool_uses": summary.tool_uses,
        }
        errors = [str(e) for e in _as_list(result.get("errors"))]
        is_error = bool(result.get("is_error"))
        final = False
        retry_after: float | None = None
        exit_code = res.exit_code
        stderr = res.stderr
        terminal = result.get("terminal_reason")
        sub = str(result.get("subtype") or "")

        if stopped.get("reason") == "authentication_failed":
            # We stopped the CLI ourselves: report the failure, not a kill.
            exit_code = 1 if exit_code in (None, 0) else exit_code
            is_error = True
            info["stopped_by_specwave"] = "authentication_failed"
        if status in (401, 403) or stopped.get("reason") == "authentication_failed":
            final = True
            what = "authentication failed" if status != 403 else "permission denied by the API"
            errors.insert(0, f"{what} (HTTP {status}) — check ANTHROPIC_API_KEY (or "
                             "CLAUDE_CODE_OAUTH_TOKEN) in the orchestrator's environment; "
                             "not retried")
        elif terminal == "api_error" or (is_error and status is not None):
            text = _one_line(result.get("result") or "", 200)
            if status is None or status in RETRYABLE_HTTP or status >= 500:
                retry_after = self._backoff(request.attempt)
                label = f"HTTP {status}" if status is not None else "connection error"
                errors.insert(0, f"API error ({label}) after {eff.api_retries} CLI retries: "
                                 f"{text}; retrying after {retry_after:.1f} s")
            else:
                final = True
                errors.insert(0, f"API error (HTTP {status}): {text} — fix the request "
                                 "(model name, prompt size); not retried")
        elif terminal == "max_turns" or sub == "error_max_turns":
            final = True
            errors.insert(0, f"stopped at max_turns ({eff.max_turns}) — raise max_turns or "
                             "split the task")
        elif terminal == "budget_exhausted" or sub == "error_max_budget_usd":
            final = True
            errors.insert(0, f"stopped at max_budget_usd ({eff.max_budget_usd}) — raise "
                             "max_budget_usd; not retried (it would spend again)")
        if summary.result is None and not res.timed_out and not res.cancelled:
            # No result line: the CLI failed before or while running (bad flag, crash).
            first = tail(stderr, 3, 400) or tail("\n".join(summary.other_lines), 3, 400)
            if first:
                errors.append("the CLI ended without a result: " + _one_line(first, 400))
        dedup = list(dict.fromkeys(errors))
        # When we stopped the CLI ourselves it is not a leftover; its descendants still are.
        killed = [pid for pid in res.killed_pids if not (res.cancelled and pid == res.pid)]
        signals = AgentSignals(is_error=is_error, permission_denials=info["permission_denials"],
                               errors=dedup)
        return AgentRun(exit_code=exit_code, timed_out=res.timed_out, output=summary.output(),
                        stderr_tail=tail(stderr, 20, 2000), duration_s=res.duration_s,
                        signals=signals, info=info, killed_pids=killed,
                        retry_after_s=retry_after, final=final)

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
