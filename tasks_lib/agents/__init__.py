"""Agent kinds that specwave can launch (one module per kind) and their shared interface."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from tasks_lib.agents.base import Agent, AgentRequest, AgentRun, AgentSettings
from tasks_lib.agents.claude import ClaudeAgent, ClaudeAgentConfig
from tasks_lib.agents.command import CommandAgent, CommandAgentConfig

AgentConfig = Annotated[CommandAgentConfig | ClaudeAgentConfig,
                        Field(discriminator="kind")]

_ADAPTER: TypeAdapter = TypeAdapter(AgentConfig)
_KINDS: dict[str, Any] = {"command": CommandAgent, "claude": ClaudeAgent}


def parse_agent_config(value: Any) -> Any:
    """dict / model -> the agent config model for its ``kind``."""
    if isinstance(value, AgentSettings):
        return value
    return _ADAPTER.validate_python(value)


def make_agent(config: Any) -> Agent:
    """The agent for a config."""
    config = parse_agent_config(config)
    return _KINDS[config.kind](config)


__all__ = ["Agent", "AgentConfig", "AgentRequest", "AgentRun", "ClaudeAgent", "ClaudeAgentConfig",
           "CommandAgent", "CommandAgentConfig", "make_agent", "parse_agent_config"]
