"""``specwave run`` / ``specwave status`` as a user runs them: a subprocess, real agents, and
Prefect's ephemeral API (no PREFECT_API_URL), with one PREFECT_HOME for the module so only the
first run pays for creating the database.

Only three runs start a Prefect server (exit 0, exit 1 with --json, SIGTERM); invalid input
and ``status`` never import the flow and are fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.fixtures.fake import FAKE_AGENT, TAG_ENV, launched
from tests.fixtures.procs import live_processes, survivors

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
RUN_TIMEOUT = 240  # a cold ephemeral server on a busy 2-core machine


def specwave_argv() -> list[str]:
    exe = shutil.which("specwave")
    return [exe] if exe else [sys.executable, "-c", "from flows.cli import main; main()"]


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory):
    return tmp_path_factory.mktemp("prefect-home")


class Cli:
    def __init__(self, tmp_path: Path, prefect_home: Path):
        self.tmp = tmp_path
        self.tag = uuid.uuid4().hex
        self.repo = tmp_path / "repo"
        self.repo.mkdir()
        self.trace_path = tmp_path / "trace.jsonl"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE")
        }
        env.update(
            {
                "PREFECT_HOME": str(prefect_home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                "PYTHONPATH": str(ROOT),
                TAG_ENV: self.tag,
                "COLUMNS": "200",
            }
        )
        self.env = env
        self.procs: list[subprocess.Popen] = []

    def spec(self, name: str) -> Path:
        dest = self.tmp / name
        shutil.copytree(EXAMPLES / name, dest)
        return dest

    def command(self, plan: dict[str, str] | None = None, default: str = "pass") -> str:
        # the agent command line as a user would type it (shlex-split by the command agent)
        return (
            f"{sys.executable} {FAKE_AGENT} --plan '{json.dumps(plan or {})}' "
            f"--default {default} --trace {self.trace_path}"
        )

    def run(self, *args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            specwave_argv() + list(args),
            cwd=self.tmp,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str) -> subprocess.Popen:
        p = subprocess.Popen(
            specwave_argv() + list(args),
            cwd=self.tmp,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(p)
        return p

    def launched(self) -> dict[str, list[int]]:
        return launched(self.trace_path)

    def markers(self) -> set[str]:
        """The SPECWAVE_AGENT_MARKER of every agent the runs of this test recorded."""
        out = set()
        for f in self.tmp.glob("*/.specwave/runs/*/agents.jsonl"):
            for line in f.read_text().splitlines():
                if line.strip():
                    out.add(json.loads(line)["marker"])
        return out

    def processes(self) -> list[psutil.Process]:
        """Every live process of this test: specwave itself and the Prefect server it started
        (they inherit the tag), agents and everything they started (agents get an
        allow-listed environment without the tag, but carry their run's marker)."""
        markers = self.markers()

        def ours(p: psutil.Process) -> bool:
            env = p.environ()
            return (
                env.get(TAG_ENV) == self.tag
                or any(str(self.tmp) in a for a in p.cmdline())
                or bool(markers.intersection(env.get("SPECWAVE_AGENT_MARKER", "").split(",")))
            )

        return live_processes(ours)

    def survivors(self, wait: float = 10.0) -> list[tuple[int, list[str]]]:
        return survivors(self.processes, wait, 0.2)

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        for p in self.processes():
            try:
                p.kill()
            except psutil.Error:
                pass


@pytest.fixture
def cli(tmp_path, prefect_home):
    c = Cli(tmp_path, prefect_home)
    yield c
    c.cleanup()


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def statuses(spec: Path) -> dict[str, str]:
    return {str(t["id"]): t["status"] for t in load(spec / "tasks.json")["tasks"]}


def test_run_all_pass_exits_0_and_status_json_reports_it(cli):
    spec = cli.spec("small-feature")
    proc = cli.run(
        "run",
        "small-feature",
        "--repo",
        "repo",
        "--command",
        cli.command({"1": "write:src/token.py"}),
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert "small-feature: success" in out
    assert "tasks file: small-feature/tasks.json" in out
    assert "run logs:   small-feature/.specwave/runs/" in out
    assert sorted(cli.launched().items()) == [("1", [1]), ("2", [1]), ("3", [1])]
    assert (cli.repo / "src" / "token.py").exists()
    assert set(statuses(spec).values()) == {"pass"}

    st = cli.run("status", "small-feature", "--json", timeout=60)
    assert st.returncode == 0, st.stderr
    data = json.loads(st.stdout)
    assert data["spec"] == "small-feature"
    assert data["format"] == "agent-os"
    assert data["counts"] == {"pass": 3}
    assert data["tasks"]["1"]["status"] == "pass" and data["tasks"]["1"]["attempts"] == 1
    assert data["tasks"]["1"]["subtasks"] == {"1.1": "pass", "1.2": "pass", "1.3": "pass"}
    assert data["last_run"]["status"] == "success"
    assert data["last_run"]["tasks"]["3"]["status"] == "pass"
    assert cli.survivors() == []


def test_run_with_failures_exits_1_and_json_parses(cli):
    spec = cli.spec("small-feature")
    proc = cli.run(
        "run",
        "small-feature",
        "--repo",
        "repo",
        "--command",
        cli.command({"1": "crash", "2": "fail"}),
        "-j",
        "1",
        "--retries",
        "0",
        "--timeout",
        "60",
        "--json",
    )
    assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
    result = json.loads(proc.stdout)  # stdout is exactly the JSON document
    assert result["status"] == "partial"
    t = result["tasks"]
    assert t["1"]["status"] == "fail" and t["1"]["outcome"] == "crashed"
    assert t["1"]["attempts"] == 1  # --retries 0
    assert t["1"]["blocker"].startswith("crashed after 1 attempt (exit 3): ")
    assert t["2"] == {"status": "fail", "outcome": "fail", "attempts": 1, "blocker": "tests fail"}
    assert t["3"]["status"] == "blocked" and t["3"]["blocker"].startswith("blocked by ")
    assert result["metrics"]["max_concurrent_observed"] == 1  # -j 1
    assert result["metrics"]["workers_spawned"] == 2
    assert statuses(spec)["1"] == "fail" and statuses(spec)["3"] == "blocked"
    assert "3" not in cli.launched()
    assert cli.survivors() == []


def test_sigterm_stops_every_agent_and_exits_143(cli):
    spec = cli.spec("small-feature")
    proc = cli.popen(
        "run",
        "small-feature",
        "--repo",
        "repo",
        "--command",
        cli.command(default="grandchild+hang"),
        "--timeout",
        "600",
    )
    deadline = time.monotonic() + RUN_TIMEOUT
    runs = spec / ".specwave" / "runs"

    def agents() -> int:
        return sum(len(f.read_text().splitlines()) for f in runs.glob("*/agents.jsonl"))

    def agent_tree() -> int:
        markers = cli.markers()
        n = 0
        for p in cli.processes():
            try:
                if markers.intersection(p.environ().get("SPECWAVE_AGENT_MARKER", "").split(",")):
                    n += 1
            except psutil.Error:
                pass
        return n

    # both wave-1 agents running, each with its two grandchildren
    while not (agents() == 2 and agent_tree() >= 6):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the agents never started"
        time.sleep(0.2)
    assert [statuses(spec)[t] for t in "123"] == ["in_progress", "in_progress", "pending"]

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out[-2000:], err[-2000:])
    assert "SIGTERM: stopping the agents" in err
    assert "Traceback" not in err
    assert cli.survivors() == []  # agents, grandchildren and the ephemeral server
    doc = load(spec / "tasks.json")  # valid JSON
    assert [statuses(spec)[t] for t in "123"] == ["pending", "pending", "pending"]
    assert doc["orchestrator_state"]["status"] == "cancelled"
    assert cli.launched() == {}


def test_invalid_input_exits_2_with_one_line(cli):
    spec = cli.spec("small-feature")
    doc = load(spec / "tasks.json")
    for t in doc["tasks"]:
        if t["id"] == "3":
            t["parallelization"]["blocked_by"] = ["1", "2", "99"]
    (spec / "tasks.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = (spec / "tasks.json").read_text()

    proc = cli.run("run", "small-feature", "--command", cli.command(), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        'small-feature/tasks.json: task "3": blocked_by names unknown task "99" — fix the id '
        "or remove it"
    ]
    assert proc.stdout == ""
    assert (spec / "tasks.json").read_text() == text
    assert not (spec / ".specwave" / "runs").exists()

    bad = cli.run(
        "run", "small-feature", "--command", cli.command(), "--scheduler", "fast", timeout=60
    )
    assert bad.returncode == 2
    assert len(bad.stderr.splitlines()) == 1 and "--scheduler" in bad.stderr
    missing = cli.run("run", "nowhere", "--command", cli.command(), timeout=60)
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.stderr
    assert cli.launched() == {}
    assert cli.survivors() == []


def test_pool_dispatch_bad_input_is_one_line_exit_2(cli):
    """--dispatch pool refuses, before any agent starts: an unknown dispatch, shared
    isolation, and (in a repository, through the flow) a run with no Prefect server."""
    spec = cli.spec("small-feature")
    text = (spec / "tasks.json").read_text()
    unknown = cli.run("run", "small-feature", "--command", cli.command(), "--dispatch", "far")
    assert unknown.returncode == 2 and len(unknown.stderr.splitlines()) == 1, unknown.stderr
    assert '--dispatch: unknown dispatch "far"' in unknown.stderr
    shared = cli.run(
        "run", "small-feature", "--command", cli.command(), "--dispatch", "pool",
        "--isolation", "shared",
    )  # fmt: skip
    assert shared.returncode == 2 and len(shared.stderr.splitlines()) == 1, shared.stderr
    assert "--isolation worktree" in shared.stderr
    (cli.repo / "README.md").write_text("app\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(
            ["git", "-c", "user.name=T", "-c", "user.email=t@e", *args],
            cwd=cli.repo,
            check=True,
            capture_output=True,
        )
    ephemeral = cli.run(
        "run", "small-feature", "--command", cli.command(), "--dispatch", "pool",
        "--repo", str(cli.repo),
    )  # fmt: skip
    assert ephemeral.returncode == 2, ephemeral.stderr
    assert len(ephemeral.stderr.strip().splitlines()) == 1 and "Traceback" not in ephemeral.stderr
    assert "Prefect server" in ephemeral.stderr
    assert (spec / "tasks.json").read_text() == text
    assert cli.launched() == {}
