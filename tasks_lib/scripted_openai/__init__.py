"""Scripted OpenAI Responses API server for running the real Codex CLI offline."""

from .scenarios import DEFAULT_USAGE, SCENARIO_MARKER, SCENARIOS, merged_scenarios
from .server import ScriptedOpenAIServer, render_output, request_facts

__all__ = [
    "DEFAULT_USAGE",
    "SCENARIOS",
    "SCENARIO_MARKER",
    "ScriptedOpenAIServer",
    "merged_scenarios",
    "render_output",
    "request_facts",
]
