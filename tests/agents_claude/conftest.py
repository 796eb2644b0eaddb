"""Fixtures for the claude agent tests: the bundled Claude Code CLI, a scripted model server,
spec folders whose tasks carry scenario markers, a ``specwave run`` subprocess pointed at the
session's Prefect API, and a check that no process a test started survives it.

Every agent gets ``SPECWAVE_TEST_TAG=<uuid>`` (``--agent-env`` / the config's ``env``); the
Claude Code CLI and everything its Bash tool starts inherit it, so a leftover is found by
its environment whatever its session or parent.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from tasks_lib.agents.claude import bundled_cli
from tasks_lib.scripted_model import ScriptedModelServer

ROOT = Path(__file__).resolve().parents[2]
TAG_ENV = "SPECWAVE_TEST_TAG"
RUN_TIMEOUT = 300


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose environment has ``SPECWAVE_TEST_TAG=tag``."""
    needle = f"{TAG_ENV}={tag}".encode()
    found = []
    for pid in psutil.pids():
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (OSError, psutil.Error):
            continue
    return found


def tagged_names(tag: str) -> list[str]:
    """Names of the live processes carrying ``tag`` (one may exit between listing and
    reading its name: it is left out)."""
    names = []
    for p in tagged_processes(tag):
        try:
            names.append(p.name())
        except psutil.Error:
            continue
    return names


def wait_no_survivors(tag: str, timeout: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        left = tagged_processes(tag)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture(scope="session")
def claude_cli() -> Path:
    path = bundled_cli()
    if path is None:
        pytest.fail(
            "the Claude Code CLI bundled in claude-agent-sdk is missing: "
            "pip install -e '.[dev]' (it comes from pip, never from the machine)"
        )
    return path


#: Test-only scenarios laid over the built-in ones.
EXTRA_SCENARIOS: dict[str, Any] = {
    # The Bash tool starts a setsid'd sleeper (escapes the CLI's process group) and then
    # blocks on a long command: only a whole-tree kill ends both.
    "bash-hang": {
        "description": "Bash: start a setsid'd background sleeper, then block.",
        "turns": [
            {
                "content": [
                    {
                        "type": "tool_use",
                        "name": "Bash",
                        "input": {
                            "command": "(setsid sleep 3600 >/dev/null 2>&1 &) ; sleep 3600",
                            "description": "long test run",
                            "timeout": 600000,
                        },
                    }
                ],
                "stop_reason": "tool_use",
            },
            {"content": [{"type": "text", "text": "never reached"}], "stop_reason": "end_turn"},
        ],
    },
}


@pytest.fixture(scope="module")
def model_server():
    with ScriptedModelServer(scenarios=EXTRA_SCENARIOS) as srv:
        yield srv


def write_spec(
    folder: Path,
    tasks: list[dict[str, Any]],
    *,
    waves: list[list[str]] | None = None,
    name: str = "claude-scenarios",
    max_workers: int = 4,
) -> Path:
    """An Agent OS 3.0 spec folder. ``tasks``: ``{"id", "description", "blocked_by"?}``; the
    description carries the scenario markers (the prompt includes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = [t["id"] for t in tasks]
    waves = waves or [ids]
    wave_of = {tid: i + 1 for i, w in enumerate(waves) for tid in w}
    doc_tasks = []
    for t in tasks:
        deps = t.get("blocked_by", [])
        doc_tasks.append(
            {
                "id": t["id"],
                "type": "parent",
                "subtasks": [],
                "description": t["description"],
                "status": "pending",
                "attempts": 0,
                "started_at": None,
                "completed_at": None,
                "duration_minutes": None,
                "notes": None,
                "blocker": None,
                "parallelization": {
                    "wave": wave_of[t["id"]],
                    "can_parallel_with": [o for o in waves[wave_of[t["id"]] - 1] if o != t["id"]],
                    "blocked_by": deps,
                    "blocks": [o["id"] for o in tasks if t["id"] in o.get("blocked_by", [])],
                    "shared_files": [],
                    "isolation_score": 1.0,
                },
            }
        )
    doc = {
        "version": "3.0",
        "spec": name,
        "spec_path": f".agent-os/specs/{name}/",
        "created": "2026-01-01T00:00:00Z",
        "updated": "2026-01-01T00:00:00Z",
        "execution_strategy": {
            "mode": "parallel_waves",
            "waves": [
                {"wave_id": i + 1, "tasks": w, "rationale": "test"} for i, w in enumerate(waves)
            ],
            "max_concurrent_workers": max_workers,
        },
        "tasks": doc_tasks,
    }
    (folder / "tasks.json").write_text(json.dumps(doc, indent=2) + "\n")
    return folder


def task(tid: str, scenario: str, **markers: str) -> dict[str, Any]:
    lines = [f"Scenario task {tid}", f"specwave-scenario: {scenario}"]
    lines += [f"specwave-{k.replace('_', '-')}: {v}" for k, v in markers.items()]
    return {"id": tid, "description": "\n".join(lines)}


def specwave_argv() -> list[str]:
    exe = shutil.which("specwave")
    return [exe] if exe else [sys.executable, "-c", "from flows.cli import main; main()"]


class SpecwaveRun:
    """``specwave run --agent claude`` as a subprocess, against the session's Prefect API and
    the module's scripted model (the API key comes from the environment, never a parameter)."""

    def __init__(self, tmp_path: Path, server: ScriptedModelServer):
        from prefect.settings import PREFECT_API_URL

        self.tmp = tmp_path
        self.tag = uuid.uuid4().hex
        self.api_key = "sk-ant-test-" + secrets.token_hex(12)
        self.repo = tmp_path / "repo"
        self.repo.mkdir()
        subprocess.run(["git", "init", "-q", str(self.repo)], check=True)
        self.server = server
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ANTHROPIC_"))}
        env.update(
            {
                "PREFECT_API_URL": PREFECT_API_URL.value(),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                "PREFECT_HOME": str(tmp_path / "prefect-home"),
                "PYTHONPATH": str(ROOT),
                "COLUMNS": "200",
                "ANTHROPIC_BASE_URL": server.base_url,
                "ANTHROPIC_API_KEY": self.api_key,
            }
        )
        self.env = env

    def __call__(
        self, spec: Path, *args: str, timeout: float = RUN_TIMEOUT
    ) -> tuple[int, dict[str, Any] | None, str]:
        argv = [
            *specwave_argv(),
            "run",
            str(spec),
            "--agent",
            "claude",
            "--repo",
            str(self.repo),
            "--json",
            "--agent-env",
            f"{TAG_ENV}={self.tag}",
            *args,
        ]
        proc = subprocess.Popen(
            argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(
                f"specwave run did not finish in {timeout}s:\n{err[-3000:]}"
            ) from None
        try:
            result = json.loads(out)
        except json.JSONDecodeError:
            result = None
        return proc.returncode, result, err

    def cleanup(self) -> list[int]:
        left = tagged_processes(self.tag)
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        return [p.pid for p in left]


@pytest.fixture
def specwave_run(tmp_path: Path, model_server: ScriptedModelServer):
    runner = SpecwaveRun(tmp_path, model_server)
    yield runner
    leaked = runner.cleanup()
    assert not leaked, f"processes outlived the test: {leaked}"


def attempts(spec: Path, run_id: str, tid: str) -> list[dict[str, Any]]:
    from tasks_lib.runfolder import RunFolder

    return [r.plain() for r in RunFolder(spec, run_id).attempts(tid)]
