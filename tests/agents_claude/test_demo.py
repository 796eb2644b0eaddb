"""``specwave demo`` as a user runs it (a subprocess), pointed at the session's Prefect API:
the real Claude Code CLI against the scripted model writes the demo app's code, its tests pass,
and the output says plainly that the model was scripted and how to use a real key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents_claude.conftest import ROOT, specwave_argv

pytestmark = pytest.mark.slow

DEMO_SPEC = Path(".agent-os") / "specs" / "textkit-helpers"


def demo_env(tmp_path: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ANTHROPIC_"))}
    env.update(
        {
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PREFECT_HOME": str(tmp_path / "ph"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "200",
        }
    )
    return env


def test_demo_runs_the_spec_with_claude_code_and_the_scripted_model(tmp_path):
    env = demo_env(tmp_path)
    real_key = "sk-ant-real-looking-" + os.urandom(8).hex()
    env["ANTHROPIC_API_KEY"] = real_key  # must never be used (nor written) by the demo
    work = tmp_path / "demo"
    proc = subprocess.run(
        [*specwave_argv(), "demo", "--workdir", str(work), "--seconds", "0.1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:] + out[-3000:]
    assert "SCRIPTED" in out and "not a model" in out
    assert "the real Claude Code CLI" in out
    assert "Ran 15 tests" in out and "— OK" in out
    assert "specwave demo --real-model" in out and "ANTHROPIC_API_KEY" in out
    assert "/runs/flow-run/" in out  # PREFECT_API_URL was set: a link to the flow run

    repo = work / "repo"
    doc = json.loads((repo / DEMO_SPEC / "tasks.json").read_text())
    parents = {t["id"]: t for t in doc["tasks"] if t["type"] == "parent"}
    assert {tid: t["status"] for tid, t in parents.items()} == {str(i): "pass" for i in range(1, 6)}
    assert parents["4"]["artifacts"]["exports_added"] == [
        "slugify",
        "word_count",
        "top_words",
        "truncate",
    ]
    # Each task worked in its own worktree; the integration branch holds one merge per task,
    # each proved by the unittest check, and the user's checkout is as it was.
    branch = f"specwave/{DEMO_SPEC.name}"
    git = ["git", "-C", str(repo)]
    merges = subprocess.run(
        [*git, "log", "--first-parent", "--format=%s", branch],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert sorted(m.split(":")[0] for m in merges[:-1]) == [f"Merge {i}" for i in range(1, 6)]
    assert "one merge per task" in out and f"merge --ff-only {branch}" in out
    assert f"on {branch} → Ran 15 tests" in out
    mine = subprocess.run(
        [*git, "status", "--porcelain", "--", ".", ":(exclude).agent-os"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert mine == ""
    assert subprocess.run([*git, "worktree", "list"], capture_output=True, text=True,
                          check=True).stdout.count("\n") == 1  # fmt: skip
    # The scripted model's code is really there and really works: take it as the user would.
    subprocess.run([*git, "merge", "--ff-only", "-q", branch], check=True)
    run = subprocess.run(
        [sys.executable, "-m", "textkit", "slug", "Hello Demo"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == "hello-demo"
    # The demo's own scripts never reach the user's repository.
    assert not (repo / "scripted-model.json").exists()
    for path in repo.rglob("*"):
        if path.is_file():
            assert real_key.encode() not in path.read_bytes(), path
    # Waves: 1, 2, 3 ran in order; 1-3 overlapped.
    runs = sorted((repo / DEMO_SPEC / ".specwave" / "runs").glob("*/run.json"))
    metrics = json.loads(runs[-1].read_text())["metrics"]
    assert metrics["max_concurrent_observed"] == 3


def test_real_model_without_credentials_is_refused(tmp_path):
    env = demo_env(tmp_path)
    for k in ("CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX"):
        env.pop(k, None)
    proc = subprocess.run(
        [*specwave_argv(), "demo", "--real-model", "--workdir", str(tmp_path / "d")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "export ANTHROPIC_API_KEY" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_simulated_demo_still_runs(tmp_path):
    env = demo_env(tmp_path)
    proc = subprocess.run(
        [
            *specwave_argv(),
            "demo",
            "--simulated",
            "--example",
            "small-feature",
            "--seconds",
            "0.1",
            "--workdir",
            str(tmp_path / "s"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "simulated agent" in proc.stdout and "small-feature: success" in proc.stdout
