"""Helpers for the deployment tests: a fake-agent config, trace reading, overlap counting."""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE_AGENT = ROOT / "tests" / "fixtures" / "agents" / "fake_agent.py"
EXAMPLES = ROOT / "examples"


def fake_agent(trace: Path, *, sleep: float = 0.0, plan: dict[str, str] | None = None,
               default: str = "pass") -> dict[str, Any]:
    """A command-agent config running tests/fixtures/agents/fake_agent.py."""
    argv = [sys.executable, str(FAKE_AGENT), "--plan", json.dumps(plan or {}),
            "--default", default, "--trace", str(trace)]
    if sleep:
        argv += ["--sleep", str(sleep)]
    return {"kind": "command", "command": argv, "grace_seconds": 1.0}


def read_trace(trace: Path) -> list[dict[str, Any]]:
    if not trace.exists():
        return []
    return [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end at t closes before a start at t)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


@pytest.fixture
def spec_copy(tmp_path):
    """``spec_copy("small-feature", "a")``: a private copy of an example spec folder."""

    def _copy(name: str, label: str | None = None) -> Path:
        dest = tmp_path / (label or name) / name
        shutil.copytree(EXAMPLES / name, dest)
        return dest

    return _copy


@pytest.fixture
def unique():
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"
