"""Fixtures of the reliability suite: real agent processes, tagged so that no test can leave
one behind unnoticed.

Every agent a test starts gets ``SPECWAVE_TEST_TAG=<uuid>`` in its environment; the fake agent
passes its environment to everything it starts (even a grandchild that escaped with
``setsid``), and a ``specwave run`` subprocess started by :meth:`Rig.cli` carries the tag too
(so does its ephemeral Prefect server). The ``rig`` fixture fails the test in teardown when
any tagged process is still alive (item 10 of the issue: no orphans), then kills them so one
failure cannot poison the next test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fixtures.fake import TAG_ENV, fake_argv, launched, read_trace
from tests.fixtures.procs import describe, live_processes

ROOT = Path(__file__).resolve().parents[2]
#: ``specwave`` under this interpreter (the console script's entry point)
SPECWAVE = [
    sys.executable,
    "-c",
    "import sys; from flows.cli import main; sys.argv[0] = 'specwave'; main()",
]


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose environment carries ``TAG_ENV=tag``."""
    return live_processes(lambda p: p.environ().get(TAG_ENV) == tag)


def wait_gone(tag: str, timeout: float) -> list[tuple[int, list[str]]]:
    """Poll until no process carries ``tag`` (or ``timeout``); returns the survivors."""
    deadline = time.monotonic() + timeout
    while True:
        procs = tagged_processes(tag)
        if not procs or time.monotonic() > deadline:
            return describe(procs)
        time.sleep(0.1)


def kill_tagged(tag: str) -> None:
    for p in tagged_processes(tag):
        try:
            p.kill()
        except psutil.Error:
            pass


def prefect_api_url() -> str:
    """The session harness's API URL (a real server, in a subprocess of pytest)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the session Prefect harness is not running"
    return url


class Rig:
    """One test's agents: a unique tag, a repository dir, a trace file."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.tag = uuid.uuid4().hex
        self.repo = tmp_path / "repo"
        self.repo.mkdir(exist_ok=True)
        self.trace_path = tmp_path / "trace.jsonl"
        self.procs: list[subprocess.Popen] = []

    def argv(self, plan: dict[str, str] | None = None, default: str = "pass") -> list[str]:
        return fake_argv(self.trace_path, plan, default)

    def agent(
        self, plan: dict[str, str] | None = None, default: str = "pass", **extra: Any
    ) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "kind": "command",
            "command": self.argv(plan, default),
            "env": {TAG_ENV: self.tag},
            "grace_seconds": 1.0,
        }
        cfg.update(extra)
        return cfg

    def agent_args(
        self, plan: dict[str, str] | None = None, default: str = "pass", **extra: Any
    ) -> list[str]:
        """``specwave run`` arguments for :meth:`agent` (tagged, grace 1 s)."""
        return ["--agent-json", json.dumps(self.agent(plan, default, **extra))]

    def trace(self) -> list[dict[str, Any]]:
        return read_trace(self.trace_path)

    def launched(self) -> dict[str, list[int]]:
        return launched(self.trace_path)

    def processes(self) -> list[psutil.Process]:
        return tagged_processes(self.tag)

    def cli(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        shared_api: bool = True,
        new_session: bool = True,
        **kw: Any,
    ) -> subprocess.Popen:
        """Start ``specwave ARGS`` (tagged). ``shared_api``: on the session's Prefect server
        (no ephemeral server child, so a kill -9 leaves nothing of Prefect's behind)."""
        full = {
            **os.environ,
            TAG_ENV: self.tag,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            **(env or {}),
        }
        if shared_api:
            full["PREFECT_API_URL"] = prefect_api_url()
        else:
            full.pop("PREFECT_API_URL", None)
        p = subprocess.Popen(
            [*SPECWAVE, *args],
            cwd=kw.pop("cwd", self.tmp),
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=new_session,
            **kw,
        )
        self.procs.append(p)
        return p

    def survivors(self, wait: float = 10.0) -> list[tuple[int, list[str]]]:
        return wait_gone(self.tag, wait)


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    for p in r.procs:
        if p.poll() is None:
            p.kill()
            p.wait(30)
    left = r.survivors(wait=10.0)
    kill_tagged(r.tag)
    assert left == [], f"processes of this test's agents are still running: {left}"


def spec_tree(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder`` with its bytes (files), target (links) or "dir"."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:
                out[rel] = "special"
    return out


def write_spec(
    folder: Path,
    waves: list[list[str]],
    deps: dict[str, list[str]] | None = None,
    max_workers: int = 3,
    name: str = "reliability",
) -> Path:
    """A minimal Agent OS v2 spec with declared waves."""
    deps = deps or {}
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    for w, ids in enumerate(waves, 1):
        for tid in ids:
            tasks.append(
                {
                    "id": tid,
                    "type": "parent",
                    "description": f"Task {tid} of {name}",
                    "status": "pending",
                    "attempts": 0,
                    "parallelization": {
                        "wave": w,
                        "blocked_by": deps.get(tid, []),
                        "shared_files": [f"src/t{tid}.py"],
                    },
                }
            )
    doc = {
        "version": "2.0",
        "spec": name,
        "execution_strategy": {
            "waves": [{"wave_id": i, "tasks": ids} for i, ids in enumerate(waves, 1)],
            "max_concurrent_workers": max_workers,
        },
        "tasks": tasks,
    }
    (folder / "tasks.json").write_text(json.dumps(doc, indent=2) + "\n")
    return folder


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def statuses(spec: Path) -> dict[str, str]:
    return {
        str(t["id"]): t["status"]
        for t in load(spec / "tasks.json")["tasks"]
        if t.get("type") != "subtask"
    }


def wait_for(pred, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def agents_recorded(spec: Path) -> list[dict[str, Any]]:
    out = []
    for f in (spec / ".specwave" / "runs").glob("*/agents.jsonl"):
        out += [json.loads(line) for line in f.read_text().splitlines() if line]
    return out


def stop(p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
    p.send_signal(sig)
    return p.wait(timeout)
