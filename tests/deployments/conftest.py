"""Helpers for the deployment tests: the fake agent (tests/fixtures/fake.py), spec copies."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.fake import fake_config, max_overlap, read_trace  # noqa: F401 - shared

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def fake_agent(
    trace: Path, *, sleep: float = 0.0, plan: dict[str, str] | None = None, default: str = "pass"
) -> dict[str, Any]:
    """A command-agent config running tests/fixtures/agents/fake_agent.py."""
    return fake_config(trace, plan, default, sleep)


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
