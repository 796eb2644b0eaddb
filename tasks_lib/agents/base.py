"""The small interface every agent kind implements, and what it gets and gives back.

An agent turns one :class:`AgentRequest` (a prompt, a working directory, a timeout) into one
:class:`AgentRun` (exit status, the text to parse, the agent's own signals). Requests and runs
are plain pydantic values, so a worker can later run on another machine or in its own flow run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, Protocol, cast

from pydantic import BaseModel, Field

from tasks_lib.agents.process import ProcessInfo
from tasks_lib.results import AgentSignals, RateLimit

#: Environment variables an agent inherits from the orchestrator (everything else is dropped).
ENV_ALLOW = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
)


class AgentSettings(BaseModel):
    """Options every agent kind shares."""

    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables for the agent. Do not "
        "put secrets here (parameters are visible in the "
        "Prefect UI): use env_allow or env_secrets.",
    )
    env_allow: list[str] = Field(
        default_factory=list,
        description="Names of orchestrator environment variables to "
        "pass through (e.g. ANTHROPIC_API_KEY).",
    )
    env_secrets: dict[str, str] = Field(
        default_factory=dict,
        description="ENV_NAME -> Prefect Secret block name, loaded when the worker starts.",
    )
    grace_seconds: float = Field(5.0, ge=0, description="Time between SIGTERM and SIGKILL.")


class AgentRequest(BaseModel):
    """Everything one worker attempt needs (plain, serializable)."""

    task_id: str = Field(description="The spec task this worker executes.")
    prompt: str = Field(description="The worker prompt.")
    prompt_file: str = Field(description="Path of a file holding the prompt.")
    workdir: str = Field(description="Working directory (the repository).")
    spec_dir: str = Field(description="The spec folder.")
    timeout_seconds: float = Field(description="Kill the agent tree after this long.")
    attempt: int = Field(1, description="1-based attempt number.")
    log_path: str | None = Field(None, description="Raw output is appended here.")


class AgentRun(BaseModel):
    """What one agent attempt did."""

    exit_code: int | None = Field(description="Exit code; None when killed.")
    timed_out: bool = Field(False, description="Killed by our timeout.")
    output: str = Field("", description="The text that holds the worker's result block.")
    stderr_tail: str = Field("", description="Last lines of stderr.")
    duration_s: float = Field(0.0, description="Wall time of the attempt.")
    signals: AgentSignals = Field(
        default_factory=AgentSignals, description="Errors the agent runtime itself reported."
    )
    info: dict[str, Any] = Field(
        default_factory=dict, description="Kind-specific facts (cost, turns, session id)."
    )
    killed_pids: list[int] = Field(
        default_factory=list, description="Leftover processes we had to kill."
    )
    retry_after_s: float | None = Field(None, description="Back-off the agent asked for.")
    final: bool = Field(False, description="Retrying cannot help (e.g. authentication error).")
    rate_limit: RateLimit | None = Field(
        None, description="The rate or usage limit the attempt hit, if any."
    )


LineSink = Callable[[str, str], None]
StartSink = Callable[[ProcessInfo], None]


class Agent(Protocol):
    """One agent kind."""

    kind: str

    async def run(
        self,
        request: AgentRequest,
        *,
        on_line: LineSink | None = None,
        on_start: StartSink | None = None,
        secrets: dict[str, str] | None = None,
    ) -> AgentRun:
        """Run one attempt; must leave no process behind (see agents.process). ``secrets``:
        the config's ``env_secrets`` already resolved (:func:`aload_secrets`) by a caller
        that needed them too; None: the agent resolves them."""


def base_env(
    settings: AgentSettings, request: AgentRequest, secrets: dict[str, str] | None = None
) -> dict[str, str]:
    """The agent's environment: allow-listed variables, explicit additions, secrets."""
    env = {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}
    for name in settings.env_allow:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(settings.env)
    env.update(secrets or {})
    env.update(
        {
            "SPECWAVE_TASK_ID": request.task_id,
            "SPECWAVE_SPEC_DIR": request.spec_dir,
            "SPECWAVE_PROMPT_FILE": request.prompt_file,
            "SPECWAVE_WORKDIR": request.workdir,
            "SPECWAVE_ATTEMPT": str(request.attempt),
        }
    )
    env.setdefault("PATH", os.defpath)
    return env


async def aload_secrets(settings: AgentSettings) -> dict[str, str]:
    """Resolve env_secrets from Prefect Secret blocks (only when some are configured).

    Async on purpose: inside a running event loop ``Secret.load`` returns a coroutine."""
    if not settings.env_secrets:
        return {}
    from prefect.blocks.system import Secret

    out: dict[str, str] = {}
    for env, block in settings.env_secrets.items():
        # Prefect types aload's result as an unbound TypeVar: say what it is
        secret = cast(Secret, await Secret.aload(block))
        value = secret.get()
        out[env] = value if isinstance(value, str) else json.dumps(value)
    return out


def secret_values(env: dict[str, str]) -> list[str]:
    """Values that must never be printed: *_KEY, *_TOKEN, *_SECRET, *PASSWORD variables."""
    out = []
    for k, v in env.items():
        ku = k.upper()
        if (
            v
            and len(v) >= 6
            and (ku.endswith(("_KEY", "_TOKEN", "_SECRET", "PASSWORD")) or "API_KEY" in ku)
        ):
            out.append(v)
    return out


def redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s and s in text:
            text = text.replace(s, "***")
    return text


def substitute(arg: str, request: AgentRequest) -> str:
    """Fill {prompt_file}, {task_id}, {workdir}, {spec_dir}, {attempt} in one argv item."""
    values = {
        "prompt_file": request.prompt_file,
        "task_id": request.task_id,
        "workdir": request.workdir,
        "spec_dir": request.spec_dir,
        "attempt": str(request.attempt),
    }
    for key, value in values.items():
        arg = arg.replace("{" + key + "}", value)
    return arg
