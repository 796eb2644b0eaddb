"""Fixtures for the codex agent tests: the pinned Codex CLI (installed from the npm registry
into ``~/.cache/specwave/codex-<version>`` when missing), the scripted OpenAI Responses
server, a ``specwave run --agent codex`` subprocess against the session's Prefect API, and a
check that no process a test started survives it.

Every agent gets ``SPECWAVE_TEST_TAG=<uuid>`` in its environment; the Codex CLI passes it to
the commands it runs (its shell environment policy drops only *KEY*/*SECRET*/*TOKEN* names),
so a leftover is found by its environment whatever its session or parent.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tasks_lib.agents.base import AgentRequest
from tasks_lib.agents.codex import CODEX_VERSION, default_install_dir, install_command
from tasks_lib.scripted_openai import ScriptedOpenAIServer
from tests.agents_claude.conftest import (
    TAG_ENV,
    specwave_argv,
    tagged_processes,
    wait_no_survivors,
)

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 240
#: Models whose metadata the CLI knows and whose tools the scripted server can drive
#: (exec_command, apply_patch); the CLI's default model uses a JavaScript "code mode".
MODEL = "gpt-5.5"

__all__ = ["MODEL", "TAG_ENV", "request", "tagged_processes", "wait_no_survivors"]


def _version(exe: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(exe), "--version"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except OSError:
        return None
    return out.split()[-1] if out.strip() else None


@pytest.fixture(scope="session")
def codex_cli() -> Path:
    """The pinned Codex CLI, installed with npm into the cache when it is not there yet.

    Installed into a temporary sibling and renamed into place, so two sessions installing at
    once (other checkouts on the machine) never see half an install."""
    target = default_install_dir()
    exe = target / "node_modules" / ".bin" / "codex"
    if exe.exists() and _version(exe) == CODEX_VERSION:
        return exe
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            f"the Codex CLI {CODEX_VERSION} is not installed and npm is missing — install "
            f"Node.js and npm, or run: {' '.join(install_command())}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        proc = subprocess.run(
            [*install_command(tmp), "--no-audit", "--no-fund", "--loglevel", "error"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"npm install of the Codex CLI failed:\n{proc.stderr[-2000:]}")
        if exe.exists():
            shutil.rmtree(target)  # a stale or other version: replaced
        try:
            os.rename(tmp, target)
        except OSError:  # another session won the race: use its install
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    version = _version(exe)
    assert version == CODEX_VERSION, f"{exe} is {version}, wanted {CODEX_VERSION}"
    return exe


#: Test-only scenarios laid over the built-in ones.
EXTRA_SCENARIOS: dict[str, Any] = {
    # What the commands the model runs see: the environment, minus the secrets.
    "env-dump": {
        "turns": [
            {
                "output": [
                    {
                        "type": "shell",
                        "command": "printenv OPENAI_API_KEY || echo no-key; "
                        "printenv SPECWAVE_TEST_TAG || echo no-tag",
                    }
                ]
            },
            {"output": [{"type": "text", "text": "{last_tool_output}"}]},
        ]
    },
}


@pytest.fixture(scope="module")
def openai_server():
    with ScriptedOpenAIServer(scenarios=EXTRA_SCENARIOS) as srv:
        yield srv


def request(
    tmp_path: Path, prompt: str, *, timeout: float = 60, attempt: int = 1, name: str = "t"
) -> AgentRequest:
    """One attempt's request, in fresh ``repo`` / ``spec`` folders under ``tmp_path/name``."""
    base = tmp_path / name
    repo, spec = base / "repo", base / "spec"
    repo.mkdir(parents=True, exist_ok=True)
    spec.mkdir(exist_ok=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return AgentRequest(
        task_id=name,
        prompt=prompt,
        prompt_file=str(spec / "prompt.md"),
        workdir=str(repo),
        spec_dir=str(spec),
        timeout_seconds=timeout,
        attempt=attempt,
        log_path=str(base / "run" / f"attempt-{attempt}.log"),
    )


class SpecwaveRun:
    """``specwave run --agent codex`` as a subprocess, against the session's Prefect API and
    the module's scripted server (the key comes from the environment, never a parameter; the
    endpoint from OPENAI_BASE_URL, which specwave reads for the CLI)."""

    def __init__(self, tmp_path: Path, server: ScriptedOpenAIServer, codex: Path):
        from prefect.settings import PREFECT_API_URL

        self.tmp = tmp_path
        self.tag = uuid.uuid4().hex
        self.api_key = "sk-proj-test-" + secrets.token_hex(12)
        self.repo = tmp_path / "repo"
        self.repo.mkdir()
        subprocess.run(["git", "init", "-q", str(self.repo)], check=True)
        self.server = server
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "OPENAI_", "CODEX_"))
        }
        env.update(
            {
                "PREFECT_API_URL": PREFECT_API_URL.value(),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                "PREFECT_HOME": str(tmp_path / "prefect-home"),
                "PYTHONPATH": str(ROOT),
                "COLUMNS": "200",
                "PATH": f"{codex.parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
                "OPENAI_BASE_URL": server.base_url + "/v1",
                "OPENAI_API_KEY": self.api_key,
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
            "codex",
            "--model",
            MODEL,
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
            except Exception:  # noqa: BLE001 - gone already
                pass
        return [p.pid for p in left]


@pytest.fixture
def specwave_run(tmp_path: Path, openai_server: ScriptedOpenAIServer, codex_cli: Path):
    runner = SpecwaveRun(tmp_path, openai_server, codex_cli)
    yield runner
    leaked = runner.cleanup()
    assert not leaked, f"processes outlived the test: {leaked}"
