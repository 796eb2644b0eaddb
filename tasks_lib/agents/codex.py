"""The ``codex`` agent: one headless OpenAI Codex CLI run (``codex exec --json``) per task.

    {"kind": "codex", "model": "gpt-5.5", "reasoning_effort": "high"}

How it runs: ``codex exec --json --ephemeral --skip-git-repo-check -s SANDBOX [-m MODEL]
[-c model_reasoning_effort=E] [-c key=value ...] [extra_args] -`` in the task's working
directory, the prompt on stdin (``-``), under the same process runner as every agent
(:func:`tasks_lib.agents.process.run_process_group`): its own session and process group; a
timeout, a cancellation or a normal exit kill the whole tree, including the commands the
model ran (they carry the run's environment marker).

The CLI is the npm package ``@openai/codex``, pinned at :data:`CODEX_VERSION`. It is found at
``executable`` (a path, or a name on ``PATH``), else as ``codex`` on ``PATH``, else in
specwave's cache (:func:`default_install_dir`, where :data:`INSTALL_HINT` puts it); when
missing, the run is refused in one line saying how to install it.

Isolation: every attempt gets a private ``CODEX_HOME`` and ``TMPDIR`` in a fresh temporary
folder (parallel CLIs sharing ``~/.codex`` share its sqlite state and sessions), deleted when
the process tree is gone. specwave writes ``CODEX_HOME/config.toml``: no update check, no
analytics or feedback, no history, the model provider (below), and a shell environment policy
that keeps ``*KEY*`` / ``*SECRET*`` / ``*TOKEN*`` variables out of the commands the model runs.

Endpoints: by default the CLI's built-in ``openai`` provider. It sends ``CODEX_API_KEY`` as
its bearer token and nothing for ``OPENAI_API_KEY`` alone (measured, 0.171.0), so specwave
gives it ``CODEX_API_KEY`` from ``api_key_env`` (default ``OPENAI_API_KEY``) when unset.
``base_url`` points it elsewhere (``openai_base_url`` in config.toml; the CLI ignores the
``OPENAI_BASE_URL`` variable and hangs "waiting for network", so specwave reads that variable
itself when ``base_url`` is unset). ``provider`` defines a custom provider of that name
instead (``model_providers.<name>``: ``base_url``, ``wire_api = "responses"``, ``env_key =
api_key_env``), whose retry counts ``api_retries`` sets.

Each stdout line is parsed once, as it arrives (:mod:`tasks_lib.agents.codex_stream`), and
folded into a :class:`CodexStreamSummary`; the outcome is decided by the pure
:func:`decide_outcome`. The final agent message is the text parsed for the worker's json
block. Tokens (input, cached, output, reasoning) go into the attempt record's
``info["tokens"]``; ``total_cost_usd`` only when ``price_per_mtok`` is configured (the CLI
reports no price, and specwave never invents one).

Failure semantics (what the worker's Prefect retry sees):

* HTTP 401 / 403 -> final, never retried; the CLI is stopped at its first retry of it (it
  would otherwise retry five times);
* HTTP 429 after the CLI's own retries -> ``crashed``, retryable after a back-off, with a
  ``rate_limit`` fact (:class:`~tasks_lib.results.RateLimit`, no reset time);
* a usage limit ("try again at 6:02 PM") -> final, with a ``usage_limit`` fact whose
  ``until`` is the reset time (a run loop may start the task again after it);
* 5xx, a dropped stream, or the endpoint unreachable for ``network_wait_seconds`` (the CLI is
  stopped: it would wait forever) -> retryable after a back-off;
* quota exhausted, context window full, other 4xx -> final;
* a timeout -> ``timeout`` (the worker retries it once with double the timeout).

Secrets: keys reach the CLI through its environment only (never argv, never config.toml);
every ``*_KEY`` / ``*_TOKEN`` / ``*_SECRET`` value is redacted from the raw stream file and the
recorded info (the worker redacts its own log lines).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator

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
from tasks_lib.agents.claude_stream import one_line
from tasks_lib.agents.codex_stream import (
    CodexStreamSummary,
    ErrorEvent,
    ErrorFacts,
    classify_error,
    parse_reset_time,
    summarize_event,
)
from tasks_lib.agents.process import AgentLaunchError, ProcessInfo, run_process_group
from tasks_lib.agents.rss import RssSampler
from tasks_lib.results import AgentSignals, RateLimit, tail

__all__ = [
    "CODEX_VERSION",
    "INSTALL_HINT",
    "CodexAgent",
    "CodexAgentConfig",
    "CodexOutcome",
    "TokenPrices",
    "build_argv",
    "config_toml",
    "decide_outcome",
    "default_install_dir",
    "install_hint",
    "resolve_executable",
]

#: The Codex CLI version specwave is tested with (npm ``@openai/codex``).
CODEX_VERSION = "0.171.0"
NPM_PACKAGE = "@openai/codex"

SandboxMode = Literal["read-only", "workspace-write", "danger-full-access"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
DEFAULT_SANDBOX: SandboxMode = "workspace-write"
#: Orchestrator variables passed to the CLI when ``pass_provider_env`` (besides api_key_env).
PROVIDER_ENV_NAMES = ("OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_ORGANIZATION", "OPENAI_PROJECT")
#: Provider ids the CLI reserves (it refuses a custom provider of these names).
RESERVED_PROVIDERS = frozenset({"openai", "ollama", "lmstudio", "oss"})
#: The CLI's log filter unless the config's env sets RUST_LOG: errors only, without the
#: websocket attempt's "failed to connect" (expected where the server answers 426; the CLI
#: then uses HTTP).
QUIET_RUST_LOG = "error,codex_api::endpoint::responses_websocket=off"
_BYPASS_ARGS = ("--dangerously-bypass-approvals-and-sandbox", "--yolo")
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def default_install_dir() -> Path:
    """Where :data:`INSTALL_HINT` installs the pinned CLI: ``~/.cache/specwave/codex-<v>``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "specwave" / f"codex-{CODEX_VERSION}"


def install_command(prefix: Path | None = None) -> list[str]:
    """The npm command that installs the pinned CLI into ``prefix`` (default: the cache)."""
    target = prefix or default_install_dir()
    return ["npm", "install", "--prefix", str(target), f"{NPM_PACKAGE}@{CODEX_VERSION}"]


#: The install command for the default cache location (see :func:`install_hint`).
INSTALL_HINT = (
    f"npm install --prefix ~/.cache/specwave/codex-{CODEX_VERSION} {NPM_PACKAGE}@{CODEX_VERSION}"
)


def install_hint() -> str:
    """The npm command that installs the pinned CLI where specwave looks (``~`` for HOME)."""
    target = str(default_install_dir())
    home = str(Path.home())
    if target.startswith(home + os.sep):
        target = "~" + target[len(home) :]
    return f"npm install --prefix {target} {NPM_PACKAGE}@{CODEX_VERSION}"


class TokenPrices(BaseModel):
    """What the model costs, in USD per million tokens (the CLI reports tokens, no price)."""

    input: float = Field(ge=0, description="USD per million uncached input tokens.")
    cached_input: float | None = Field(
        None, ge=0, description="USD per million cached input tokens (default: input)."
    )
    output: float = Field(ge=0, description="USD per million output tokens (reasoning included).")

    def cost(self, tokens: dict[str, int]) -> float:
        cached = tokens.get("cached", 0)
        fresh = max(0, tokens.get("input", 0) - cached)
        per_cached = self.input if self.cached_input is None else self.cached_input
        usd = fresh * self.input + cached * per_cached + tokens.get("output", 0) * self.output
        return round(usd / 1e6, 6)


class CodexAgentConfig(AgentSettings):
    """Run each task with a headless OpenAI Codex CLI (``codex exec --json``).

    Example:
        >>> c = CodexAgentConfig(model="gpt-5.5", reasoning_effort="high")
        >>> c.kind, c.sandbox
        ('codex', 'workspace-write')
    """

    kind: Literal["codex"] = "codex"
    executable: str | None = Field(
        None,
        description="Path (or name on PATH) of the Codex CLI. Default: `codex` on PATH, else "
        f"~/.cache/specwave/codex-{CODEX_VERSION} (install: {INSTALL_HINT}).",
    )
    model: str | None = Field(None, description="Model (-m); default: the CLI's default model.")
    sandbox: SandboxMode = Field(
        DEFAULT_SANDBOX,
        description="-s: read-only, workspace-write (default: writes inside the working "
        "directory, no network for commands) or danger-full-access (no sandbox at all: only "
        "inside a container or VM without secrets).",
    )
    reasoning_effort: ReasoningEffort | None = Field(
        None, description="-c model_reasoning_effort (none ... xhigh); default: the model's."
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="More -c key=value settings (dotted keys; values as TOML: strings, "
        'numbers, booleans, lists), e.g. {"model_verbosity": "low"}. No secrets (visible).',
    )
    base_url: str | None = Field(
        None,
        description="An OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1). Default: "
        "the orchestrator's OPENAI_BASE_URL when pass_provider_env, else the CLI's own.",
    )
    provider: str | None = Field(
        None,
        description="Define a custom model provider of this name (base_url, wire_api "
        "responses, env_key api_key_env) instead of the built-in openai provider.",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="The orchestrator variable holding the key (passed to the CLI; a custom "
        "provider's env_key).",
    )
    api_retries: int | None = Field(
        None,
        ge=0,
        le=20,
        description="A custom provider's request and stream retries (the built-in provider "
        "retries 5 times, fixed).",
    )
    network_wait_seconds: float = Field(
        60.0,
        gt=0,
        description="Stop the CLI when the endpoint stays unreachable this long (it would "
        "wait for the network until the timeout); retried after a back-off.",
    )
    price_per_mtok: TokenPrices | None = Field(
        None, description="Model prices, to record a cost; default none: tokens only."
    )
    retry_backoff_seconds: float = Field(
        15.0,
        ge=0,
        description="After a 429/5xx/network failure: wait this x 2^(attempt-1) x jitter "
        "0.5..1.5 before the worker's retry (capped at 60 s).",
    )
    extra_args: list[str] = Field(
        default_factory=list, description="More `codex exec` arguments, placed before the prompt."
    )
    pass_provider_env: bool = Field(
        True,
        description="Pass api_key_env, OPENAI_API_KEY, CODEX_API_KEY, OPENAI_ORGANIZATION, "
        "OPENAI_PROJECT from the orchestrator's environment (and read OPENAI_BASE_URL).",
    )

    @field_validator("config")
    @classmethod
    def _keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not _KEY_RE.match(key):
                raise ValueError(f"config key {key!r} is not a dotted TOML key like a.b_c")
            toml_value(item)  # raises ValueError for what TOML cannot hold
        return value

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not _NAME_RE.match(value):
            raise ValueError(f"provider {value!r}: use letters, digits, _ and - only")
        if value in RESERVED_PROVIDERS:
            raise ValueError(
                f"provider {value!r} is one of the CLI's built-in providers — leave provider "
                "unset to use the built-in openai provider, or pick another name"
            )
        return value

    @model_validator(mode="after")
    def _provider_needs_url(self) -> CodexAgentConfig:
        if self.provider and not self.base_url:
            raise ValueError(f"provider {self.provider!r} needs base_url")
        return self


# --------------------------------------------------------------------------- the command line


def toml_value(value: Any) -> str:
    """One TOML value (strings JSON-quoted: a valid TOML basic string, non-ASCII kept)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        for k in value:
            if not _NAME_RE.match(str(k)):
                raise ValueError(f"inline table key {k!r}: use letters, digits, _ and -")
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"a {type(value).__name__} cannot be a TOML value")


def effective_base_url(
    config: CodexAgentConfig, environ: dict[str, str] | None = None
) -> str | None:
    """``base_url``, else the orchestrator's OPENAI_BASE_URL (when ``pass_provider_env``)."""
    if config.base_url:
        return config.base_url
    if config.pass_provider_env:
        return (os.environ if environ is None else environ).get("OPENAI_BASE_URL") or None
    return None


def config_toml(config: CodexAgentConfig, base_url: str | None) -> str:
    """``CODEX_HOME/config.toml`` for one attempt (no secret: keys stay in the environment)."""
    top = ["# written by specwave for one attempt (deleted with this folder)"]
    top.append("check_for_update_on_startup = false")
    if config.provider:
        top.append(f"model_provider = {toml_value(config.provider)}")
    elif base_url:
        top.append(f"openai_base_url = {toml_value(base_url)}")
    tables = [
        "[analytics]\nenabled = false",
        "[feedback]\nenabled = false",
        '[history]\npersistence = "none"',
        # the commands the model runs see the environment, minus *KEY*/*SECRET*/*TOKEN*
        '[shell_environment_policy]\ninherit = "all"\nignore_default_excludes = false',
    ]
    if config.provider:
        lines = [
            f"[model_providers.{config.provider}]",
            f"name = {toml_value(config.provider)}",
            f"base_url = {toml_value(base_url)}",
            'wire_api = "responses"',
            f"env_key = {toml_value(config.api_key_env)}",
        ]
        if config.api_retries is not None:
            lines += [
                f"request_max_retries = {config.api_retries}",
                f"stream_max_retries = {config.api_retries}",
            ]
        tables.append("\n".join(lines))
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def build_argv(executable: str, config: CodexAgentConfig) -> list[str]:
    """The CLI command line (the prompt goes on stdin: ``-``)."""
    argv = [
        executable,
        "exec",
        "--json",
        "--ephemeral",
        "--skip-git-repo-check",
        "-s",
        config.sandbox,
    ]
    if config.model:
        argv += ["-m", config.model]
    if config.reasoning_effort:
        argv += ["-c", f"model_reasoning_effort={toml_value(config.reasoning_effort)}"]
    for key, value in config.config.items():
        argv += ["-c", f"{key}={toml_value(value)}"]
    return [*argv, *config.extra_args, "-"]


def full_access_requested(config: CodexAgentConfig) -> bool:
    return config.sandbox == "danger-full-access" or any(
        a in _BYPASS_ARGS or a == "danger-full-access" for a in config.extra_args
    )


FULL_ACCESS_WARNING = (
    "specwave: warning: the codex agent runs with sandbox danger-full-access: the commands "
    "the model runs can write anywhere and use the network — use it only inside a container "
    "or VM without secrets (default: workspace-write)"
)


def _executable_ok(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def resolve_executable(configured: str | None, path_env: str | None) -> str:
    """The CLI to start: ``configured`` (a path, or a name on PATH), else ``codex`` on PATH,
    else the pinned one in specwave's cache; else one line saying how to install it.

    Raises:
        AgentLaunchError: not found (the message is the one line to show).
    """
    if configured:
        if os.sep in configured:
            if _executable_ok(Path(configured).expanduser()):
                return str(Path(configured).expanduser())
            raise AgentLaunchError(
                f"cannot start agent: Codex CLI {configured!r} not found or not executable — "
                f"fix executable, or install it: {install_hint()}"
            )
        found = shutil.which(configured, path=path_env)
        if not found:
            raise AgentLaunchError(
                f"cannot start agent: Codex CLI {configured!r} not found on PATH — "
                f"give its full path in executable, or install it: {install_hint()}"
            )
        return found
    found = shutil.which("codex", path=path_env)
    if found:
        return found
    cached = default_install_dir() / "node_modules" / ".bin" / "codex"
    if _executable_ok(cached):
        return str(cached)
    raise AgentLaunchError(
        f"cannot start agent: Codex CLI not found (no `codex` on PATH, none in {cached.parent}) "
        f"— install it: {install_hint()} (or npm install -g {NPM_PACKAGE}@{CODEX_VERSION}), "
        "or set executable"
    )


def check_installed(config: CodexAgentConfig) -> str:
    """What ``specwave run`` checks before it starts anything: the CLI can be found."""
    path = os.pathsep.join(p for p in (config.env.get("PATH"), os.environ.get("PATH")) if p)
    return resolve_executable(config.executable, path or None)


_VERSIONS: dict[tuple[str, float], str | None] = {}


def _version_of(executable: str, env: dict[str, str]) -> str | None:
    """``codex --version`` ("codex-cli 0.171.0" -> "0.171.0")."""
    import subprocess

    try:
        out = subprocess.run(
            [executable, "--version"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
            env=env,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+\.\d+\.\d+\S*)", out)
    return m.group(1) if m else None


async def cli_version(executable: str, env: dict[str, str]) -> str | None:
    """The CLI's version, asked once per file (and modification time) per process. ``env``
    is the attempt's (its private CODEX_HOME: even ``--version`` creates ``~/.codex``
    otherwise)."""
    try:
        key = (executable, os.stat(executable).st_mtime)
    except OSError:
        return None
    if key not in _VERSIONS:
        _VERSIONS[key] = await asyncio.to_thread(_version_of, executable, env)
    return _VERSIONS[key]


# --------------------------------------------------------------------------- the outcome

OutcomeKind = Literal[
    "authentication",
    "rate_limit",
    "usage_limit",
    "quota",
    "api_transient",
    "network",
    "context_window",
    "api_request",
    "agent_error",
]


class CodexOutcome(BaseModel):
    """What one finished attempt amounts to (see the module docstring's failure semantics)."""

    exit_code: int | None
    is_error: bool
    #: Never retried (auth, usage limit, quota, context window, a bad request).
    final: bool = False
    #: Retryable after this back-off (429, 5xx, a dropped stream, the network).
    retry_after_s: float | None = None
    kind: OutcomeKind | None = None
    #: HTTP status the failing API call named, if any.
    api_error_status: int | None = None
    #: The rate or usage limit hit (the run loop's fact to wait on).
    rate_limit: RateLimit | None = None
    #: specwave stopped the CLI: "authentication" (first retry of a 401/403) or "network".
    stopped_by_specwave: str | None = None
    #: The failure explained first, then the CLI's own errors (deduplicated).
    errors: list[str] = Field(default_factory=list)


def _redacted_url(url: str | None) -> str:
    """The endpoint for a message, without any user:password in it."""
    if not url:
        return "the OpenAI API"
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def decide_outcome(
    summary: CodexStreamSummary,
    *,
    exit_code: int | None,
    timed_out: bool,
    cancelled: bool,
    stderr: str = "",
    stopped_reason: str | None = None,
    retry_after_s: float = 0.0,
    now: datetime | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    base_url: str | None = None,
    network_wait_seconds: float = 60.0,
) -> CodexOutcome:
    """Classify a finished attempt from its stream summary and how the process ended.

    Pure: ``retry_after_s`` is the back-off to use if the failure is retryable (the caller
    draws the jitter); ``now`` (aware, in the CLI's time zone) dates a usage limit's "try
    again at 6:02 PM"; the rest only go into the messages.

    Example:
        >>> s = CodexStreamSummary(turn_failed="exceeded retry limit, last status: 429 Too "
        ...                        "Many Requests")
        >>> o = decide_outcome(s, exit_code=1, timed_out=False, cancelled=False,
        ...                    retry_after_s=12.5)
        >>> o.kind, o.final, o.retry_after_s, o.rate_limit.kind
        ('rate_limit', False, 12.5, 'rate_limit')
    """
    failure = summary.failure()
    facts: ErrorFacts | None = classify_error(failure) if failure else None
    stopped: ErrorFacts | None = None
    if stopped_reason is not None:
        # the retry event that made us stop the CLI says why
        wanted: Literal["authentication", "network"] = (
            "authentication" if stopped_reason == "authentication" else "network"
        )
        stopped = next((r for r in reversed(summary.retries) if r.kind == wanted), None)
        stopped = stopped or ErrorFacts(message=f"stopped: {stopped_reason}", kind=wanted)
        facts = stopped
        exit_code = 1 if exit_code in (None, 0) else exit_code
    errors: list[str] = list(dict.fromkeys(summary.errors))
    if summary.turn_failed and summary.turn_failed not in errors:
        errors.append(summary.turn_failed)
    is_error = facts is not None or (exit_code not in (0, None) and not timed_out)
    final = False
    retry_after: float | None = None
    kind: OutcomeKind | None = None
    rate_limit: RateLimit | None = None
    status = facts.status if facts else None
    text = one_line(facts.message, 200) if facts else ""
    retries = len(summary.retries)
    explained: str | None = None

    if facts is None:
        pass
    elif facts.kind == "authentication":
        final, kind = True, "authentication"
        what = "permission denied by the API" if status == 403 else "authentication failed"
        label = f"HTTP {status}" if status else "no status"
        explained = (
            f"{what} ({label}) — check {api_key_env} in the orchestrator's environment; not retried"
        )
    elif facts.kind == "usage_limit":
        final, kind = True, "usage_limit"
        until = None
        if facts.reset_text and now is not None:
            moment = parse_reset_time(facts.reset_text, now)
            until = moment.timestamp() if moment else None
        rate_limit = RateLimit(
            kind="usage_limit", until=until, reset_text=facts.reset_text, message=text
        )
        when = f"resets {facts.reset_text}" if facts.reset_text else "no reset time given"
        explained = f"usage limit reached ({when}) — not retried before it resets: {text}"
    elif facts.kind == "quota":
        final, kind = True, "quota"
        explained = f"quota exhausted: {text} — check the plan and billing of the key; not retried"
    elif facts.kind == "rate_limit":
        retry_after, kind = retry_after_s, "rate_limit"
        rate_limit = RateLimit(kind="rate_limit", message=text)
        explained = (
            f"rate limited (HTTP {status or 429}) after {retries} CLI retries: {text}; "
            f"retrying after {retry_after:.1f} s"
        )
    elif facts.kind == "network":
        retry_after, kind = retry_after_s, "network"
        explained = (
            f"cannot reach {_redacted_url(base_url)} ({text}) for {network_wait_seconds:g} s — "
            "check base_url and the network (the CLI ignores OPENAI_BASE_URL: specwave passes "
            f"it as base_url); retrying after {retry_after:.1f} s"
        )
    elif facts.kind == "transient":
        retry_after, kind = retry_after_s, "api_transient"
        label = f"HTTP {status}" if status else "server or connection error"
        explained = (
            f"API error ({label}) after {retries} CLI retries: {text}; "
            f"retrying after {retry_after:.1f} s"
        )
    elif facts.kind == "context_window":
        final, kind = True, "context_window"
        explained = f"{text} — split the task; not retried"
    elif facts.kind == "request":
        final, kind = True, "api_request"
        explained = (
            f"API error (HTTP {status}): {text} — fix the request (model name, settings); "
            "not retried"
        )
    else:
        kind = "agent_error"
        explained = f"the turn failed: {text}"
    if explained:
        errors.insert(0, explained)
    if failure is None and stopped is None and not timed_out and not cancelled and exit_code != 0:
        # no turn result: the CLI failed before or while running (bad flag, bad config.toml)
        first = tail(stderr, 3, 400) or tail("\n".join(summary.other_lines), 3, 400)
        errors.append(
            "the CLI ended without a turn result: " + (one_line(first, 400) or "(no output)")
        )
    return CodexOutcome(
        exit_code=exit_code,
        is_error=is_error,
        final=final,
        retry_after_s=retry_after,
        kind=kind,
        api_error_status=status,
        rate_limit=rate_limit,
        stopped_by_specwave=stopped_reason,
        errors=list(dict.fromkeys(errors)),
    )


def attempt_info(
    summary: CodexStreamSummary, config: CodexAgentConfig, outcome: CodexOutcome
) -> dict[str, Any]:
    """What the attempt record's ``info`` keeps of the stream."""
    tokens = summary.tokens()
    cost = (
        config.price_per_mtok.cost(tokens)
        if config.price_per_mtok is not None and tokens is not None
        else None
    )
    return {
        "thread_id": summary.thread_id,
        "model": config.model,
        "sandbox": config.sandbox,
        "provider": config.provider or "openai",
        "is_error": outcome.is_error,
        "error_kind": outcome.kind,
        "api_error_status": outcome.api_error_status,
        "tokens": tokens,
        "total_cost_usd": cost,
        "turns_completed": summary.turns_completed,
        "commands": summary.commands[:100],
        "file_changes": summary.file_changes[:100],
        "api_retries": [r.brief() for r in summary.retries],
        "warnings": summary.warnings[:20],
    }


# --------------------------------------------------------------------------- the agent


class _StopWatch:
    """Stops the CLI (through ``stop``) at the first retry of a 401/403, and when the
    endpoint has stayed unreachable for ``network_wait`` seconds."""

    def __init__(self, stop: asyncio.Event, network_wait: float) -> None:
        self.stop = stop
        self.network_wait = network_wait
        self.reason: str | None = None
        self._waiting_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def seen(self, event: Any) -> None:
        if self.stop.is_set():
            return
        if not isinstance(event, ErrorEvent):
            self._waiting_since = None  # progress: the network is back
            return
        facts = classify_error(event.message or "")
        if facts.is_retry and facts.kind == "authentication":
            # retrying a rejected key only delays the failure: stop the CLI now
            self._fire("authentication")
        elif facts.waiting_for_network and self._waiting_since is None:
            self._waiting_since = time.monotonic()
            self._arm(self.network_wait)

    def _arm(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, self._check)

    def _check(self) -> None:
        since = self._waiting_since
        if since is None or self.stop.is_set():
            return
        left = self.network_wait - (time.monotonic() - since)
        if left <= 0:
            self._fire("network")
        else:
            self._arm(left)

    def _fire(self, reason: str) -> None:
        self.reason = reason
        self.stop.set()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class CodexAgent:
    """Runs one Codex CLI per attempt; see the module docstring for the semantics."""

    kind = "codex"

    def __init__(self, config: CodexAgentConfig):
        self.config = config

    def _env(
        self, request: AgentRequest, home: Path, tmpdir: Path, secrets: dict[str, str]
    ) -> dict[str, str]:
        provider: dict[str, str] = {}
        if self.config.pass_provider_env:
            for name in (self.config.api_key_env, *PROVIDER_ENV_NAMES):
                if os.environ.get(name):
                    provider[name] = os.environ[name]
        quiet = {"RUST_LOG": QUIET_RUST_LOG}
        settings = self.config.model_copy(update={"env": {**quiet, **provider, **self.config.env}})
        env = base_env(settings, request, secrets)
        env.update({"CODEX_HOME": str(home), "TMPDIR": str(tmpdir)})
        if not self.config.provider and not env.get("CODEX_API_KEY"):
            # The built-in provider sends CODEX_API_KEY only (0.171.0 sends no key at all
            # with just OPENAI_API_KEY set): hand it the key from api_key_env.
            if key := env.get(self.config.api_key_env):
                env["CODEX_API_KEY"] = key
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
        root = Path(tempfile.mkdtemp(prefix=f"specwave-codex-{_slug(request.task_id)}-"))
        try:
            return await self._run(request, root, on_line, on_start, secrets)
        finally:
            # The process tree is dead here (run_process_group kills it before returning or
            # raising), so nothing writes into the private dirs any more.
            shutil.rmtree(root, ignore_errors=True)

    async def _run(
        self,
        request: AgentRequest,
        root: Path,
        on_line: LineSink | None,
        on_start: StartSink | None,
        secrets: dict[str, str],
    ) -> AgentRun:
        home, tmpdir = root / "home", root / "tmp"
        home.mkdir()
        tmpdir.mkdir()
        env = self._env(request, home, tmpdir, secrets)
        base_url = effective_base_url(self.config)
        (home / "config.toml").write_text(config_toml(self.config, base_url), encoding="utf-8")
        executable = resolve_executable(self.config.executable, env.get("PATH"))
        version = await cli_version(executable, env)
        argv = build_argv(executable, self.config)
        hidden = secret_values(env)
        if on_line is not None:
            if full_access_requested(self.config):
                on_line("stderr", FULL_ACCESS_WARNING)
            if version and version != CODEX_VERSION:
                on_line(
                    "stderr",
                    f"specwave: note: Codex CLI {version} at {executable}; specwave is tested "
                    f"with {CODEX_VERSION} ({install_hint()})",
                )
        stream_path = _stream_path(request)
        stream_fh = (
            open(stream_path, "a", encoding="utf-8")  # noqa: SIM115, ASYNC230
            if stream_path
            else None
        )
        stop = asyncio.Event()
        watch = _StopWatch(stop, self.config.network_wait_seconds)
        summary = CodexStreamSummary()
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
            watch.seen(event)
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
            watch.close()
            rss.stop()
            if stream_fh is not None:
                stream_fh.close()

        summary.finish()
        outcome = decide_outcome(
            summary,
            exit_code=res.exit_code,
            timed_out=res.timed_out,
            cancelled=res.cancelled,
            stderr=res.stderr,
            stopped_reason=watch.reason if res.cancelled else None,
            retry_after_s=self._backoff(request.attempt),
            now=_now(env.get("TZ")),
            api_key_env=self.config.api_key_env,
            base_url=base_url,
            network_wait_seconds=self.config.network_wait_seconds,
        )
        info = attempt_info(summary, self.config, outcome)
        info.update(
            {
                "codex_version": version,
                "executable": executable,
                "base_url": _redacted_url(base_url) if base_url else None,
                "peak_rss_mb": rss.peak_mb(),
            }
        )
        if outcome.stopped_by_specwave:
            info["stopped_by_specwave"] = outcome.stopped_by_specwave
        if stream_path:
            info["stream_log"] = str(stream_path)
        cost = info.get("total_cost_usd")
        if on_line is not None and isinstance(cost, float):
            on_line("stdout", f"cost ${cost:.4f} (tokens at the configured price_per_mtok)")
        # When we stopped the CLI ourselves it is not a leftover; its descendants still are.
        killed = [pid for pid in res.killed_pids if not (res.cancelled and pid == res.pid)]
        rate_limit = outcome.rate_limit
        if rate_limit is not None:
            rate_limit = rate_limit.model_copy(
                update={"message": redact(rate_limit.message, hidden)}
            )
        return AgentRun(
            exit_code=outcome.exit_code,
            timed_out=res.timed_out,
            output=redact(summary.output(), hidden),
            stderr_tail=redact(tail(res.stderr, 20, 2000), hidden),
            duration_s=res.duration_s,
            signals=AgentSignals(
                is_error=outcome.is_error,
                errors=[redact(e, hidden) for e in outcome.errors],
            ),
            info=json.loads(redact(json.dumps(info, default=str), hidden)),
            killed_pids=killed,
            retry_after_s=outcome.retry_after_s,
            final=outcome.final,
            rate_limit=rate_limit,
        )

    def _backoff(self, attempt: int) -> float:
        base = self.config.retry_backoff_seconds * (2 ** max(0, attempt - 1))
        return round(min(60.0, base * random.uniform(0.5, 1.5)), 2)


def _now(tz: str | None) -> datetime:
    """Now, in the CLI's time zone (its TZ, else this process's local zone)."""
    if tz:
        try:
            return datetime.now(ZoneInfo(tz.removeprefix(":")))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return datetime.now().astimezone()


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:40] or "task"


def _stream_path(request: AgentRequest) -> Path | None:
    if not request.log_path:
        return None
    log = Path(request.log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    return log.with_name(log.stem + ".stream.jsonl")
