"""The ``command`` agent: any program, given the prompt on stdin and as a file.

    {"kind": "command", "command": "python my_agent.py {prompt_file}"}

The command is split with shlex (never run through a shell); placeholders ``{prompt_file}``,
``{task_id}``, ``{workdir}``, ``{spec_dir}`` and ``{attempt}`` are filled in each argument.
It runs in the repository directory with an allow-listed environment (see agents.base).
"""

from __future__ import annotations

import shlex
from typing import Literal

from pydantic import Field, field_validator

from tasks_lib.agents.base import (
    AgentRequest,
    AgentRun,
    AgentSettings,
    LineSink,
    StartSink,
    aload_secrets,
    base_env,
    substitute,
)
from tasks_lib.agents.process import run_process_group
from tasks_lib.results import tail


class CommandAgentConfig(AgentSettings):
    """Run any command as the agent."""

    kind: Literal["command"] = "command"
    command: str | list[str] = Field(description="Command line (shlex-split) or argv list.")

    @field_validator("command")
    @classmethod
    def _not_empty(cls, v: str | list[str]) -> str | list[str]:
        argv = shlex.split(v) if isinstance(v, str) else v
        if not argv:
            raise ValueError("the command is empty — give the agent program to run")
        return v

    def argv(self) -> list[str]:
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)


class CommandAgent:
    kind = "command"

    def __init__(self, config: CommandAgentConfig):
        self.config = config

    async def run(
        self,
        request: AgentRequest,
        *,
        on_line: LineSink | None = None,
        on_start: StartSink | None = None,
        secrets: dict[str, str] | None = None,
    ) -> AgentRun:
        argv = [substitute(a, request) for a in self.config.argv()]
        if secrets is None:
            secrets = await aload_secrets(self.config)
        env = base_env(self.config, request, secrets)
        res = await run_process_group(
            argv,
            cwd=request.workdir,
            env=env,
            stdin_data=request.prompt.encode("utf-8"),
            timeout=request.timeout_seconds,
            grace_seconds=self.config.grace_seconds,
            on_line=on_line,
            log_path=None,
            on_start=on_start,
        )
        return AgentRun(
            exit_code=res.exit_code,
            timed_out=res.timed_out,
            output=res.stdout,
            stderr_tail=tail(res.stderr, 20, 2000),
            duration_s=res.duration_s,
            killed_pids=res.killed_pids,
        )
