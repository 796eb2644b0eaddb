"""Agent kinds that specwave can launch (one module per kind) and their shared interface.

The claude and codex agents' modules are imported when first needed (a ``claude`` or
``codex`` config, or their classes / ``AgentConfig`` read from this package): a run of
``command`` agents does not pay for them before its first agent starts.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from tasks_lib.agents.base import Agent, AgentRequest, AgentRun, AgentSettings
from tasks_lib.agents.command import CommandAgent, CommandAgentConfig

_LAZY = {
    "ClaudeAgent": "claude",
    "ClaudeAgentConfig": "claude",
    "CodexAgent": "codex",
    "CodexAgentConfig": "codex",
}


@functools.cache
def _agent_config() -> Any:
    from tasks_lib.agents.claude import ClaudeAgentConfig
    from tasks_lib.agents.codex import CodexAgentConfig

    return Annotated[
        CommandAgentConfig | ClaudeAgentConfig | CodexAgentConfig, Field(discriminator="kind")
    ]


@functools.cache
def _adapter() -> TypeAdapter:
    return TypeAdapter(_agent_config())


def __getattr__(name: str) -> Any:
    if name == "AgentConfig":
        return _agent_config()
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"tasks_lib.agents.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_agent_config(value: Any) -> Any:
    """dict / model -> the agent config model for its ``kind``."""
    if isinstance(value, AgentSettings):
        return value
    if isinstance(value, dict) and type(value.get("kind")) is str and value["kind"] == "command":
        # what the discriminated union does for this tag; an invalid config goes on to the
        # union below, so the error is the union's, word for word
        try:
            return CommandAgentConfig.model_validate(value)
        except ValidationError:
            pass
    return _adapter().validate_python(value)


def make_agent(config: Any) -> Agent:
    """The agent for a config."""
    config = parse_agent_config(config)
    if config.kind == "command":
        return CommandAgent(config)
    if config.kind == "codex":
        from tasks_lib.agents.codex import CodexAgent

        return CodexAgent(config)
    from tasks_lib.agents.claude import ClaudeAgent

    return {"claude": ClaudeAgent}[config.kind](config)


def preflight(config: Any) -> None:
    """What can be checked before a run starts anything (today: the Codex CLI is installed).

    Raises:
        AgentLaunchError: one line saying what is missing and how to get it.
    """
    config = parse_agent_config(config)
    if config.kind == "codex":
        from tasks_lib.agents.codex import check_installed

        check_installed(config)


__all__ = [
    "Agent",
    "AgentConfig",
    "AgentRequest",
    "AgentRun",
    "ClaudeAgent",
    "ClaudeAgentConfig",
    "CodexAgent",
    "CodexAgentConfig",
    "CommandAgent",
    "CommandAgentConfig",
    "make_agent",
    "parse_agent_config",
    "preflight",
]
