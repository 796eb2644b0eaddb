"""Shared helpers for the input-format tests: fixture copies and line-level diffs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"


@pytest.fixture
def fixture_copy(tmp_path):
    """Copy tests/fixtures/formats/<name> into a tmp dir and return the copy."""

    def _copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(FIXTURES / name, dest)
        return dest

    return _copy


def changed_lines(before: bytes, after: bytes) -> dict[int, tuple[bytes, bytes]]:
    """{line number (1-based): (old, new)} for files with the same number of lines."""
    a, b = before.split(b"\n"), after.split(b"\n")
    assert len(a) == len(b), "write-back must not add or remove lines"
    return {i + 1: (x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y}
