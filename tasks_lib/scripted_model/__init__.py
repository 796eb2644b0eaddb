"""Scripted Anthropic Messages API server for running the real Claude Code CLI offline."""

from .scenarios import SCENARIO_MARKER, SCENARIOS, merged_scenarios, validate_scenario
from .server import ScriptedModelServer, conversation_facts, render_blocks

__all__ = [
    "SCENARIOS",
    "SCENARIO_MARKER",
    "ScriptedModelServer",
    "conversation_facts",
    "merged_scenarios",
    "render_blocks",
    "validate_scenario",
]
