"""Fixtures for the scripted model server tests: the server, the bundled Claude Code CLI, and a
runner that starts the CLI in its own process group and proves nothing it started survives."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from tasks_lib.scripted_model import ScriptedModelServer

MARKER_VAR = "SPECWAVE_TEST_PROC_MARKER"


def bundled_claude() -> Path | None:
    """The Claude Code binary bundled in the claude_agent_sdk wheel, or None."""
    try:
        import claude_agent_sdk
    except ImportError:
        return None
    path = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def processes_with_marker(marker: str) -> list[psutil.Process]:
    """Every live process whose environment carries ``MARKER_VAR=marker`` (any session/group)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if needle in env:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.NoSuchProcess:
                pass
    return found


def processes_in_group(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return out


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def assert_nothing_survives(pgid: int, marker: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = processes_in_group(pgid) + processes_with_marker(marker)
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes survived: {[(p.pid, p.name()) for p in left]}")
        time.sleep(0.05)


@dataclass
class ClaudeRun:
    """What one `claude -p` run produced."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    peak_rss_bytes: int
    root: Path
    cwd: Path
    home: Path
    config_dir: Path
    tmpdir: Path
    api_key: str
    pgid: int
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def result(self) -> dict[str, Any]:
        results = [d for d in self.lines if d.get("type") == "result"]
        assert len(results) == 1, f"expected one result line, got {len(results)}: {self.stderr}"
        return results[0]

    @property
    def init(self) -> dict[str, Any]:
        return next(
            d for d in self.lines if d.get("type") == "system" and d.get("subtype") == "init"
        )

    def of_type(self, kind: str, subtype: str | None = None) -> list[dict[str, Any]]:
        return [
            d
            for d in self.lines
            if d.get("type") == kind and (subtype is None or d.get("subtype") == subtype)
        ]

    def tool_results(self) -> list[dict[str, Any]]:
        out = []
        for d in self.of_type("user"):
            for block in d["message"]["content"]:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    out.append(block)
        return out


def claude_argv(
    binary: Path,
    prompt: str,
    tools: str,
    extra: tuple[str, ...] = (),
    style: str = "after-dashdash",
) -> list[str]:
    """Options first, then ``--``, then the prompt: a prompt starting with "-" (spec prompts
    do: "- **ID**: 1") is otherwise rejected as an unknown option, and --allowedTools is
    variadic (it would swallow a prompt placed after it). ``style``: "after-dashdash"
    (default), "stdin" (no prompt argument; the caller feeds it on stdin) or "after-p" (right
    after -p: breaks on prompts starting with "-", kept to pin that)."""
    argv = [
        str(binary),
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "acceptEdits",
        "--allowedTools",
        tools,
        "--max-turns",
        "6",
        *extra,
    ]
    if style == "stdin":
        return argv
    if style == "after-p":
        return [argv[0], "-p", prompt, *argv[2:]]
    return [*argv, "--", prompt]


def claude_env(
    root: Path, base_url: str, api_key: str, marker: str, retries: int, extra: dict[str, str] | None
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root / "home"),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": api_key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CONFIG_DIR": str(root / "config"),
        "TMPDIR": str(root / "tmp"),
        "CLAUDE_CODE_MAX_RETRIES": str(retries),
        MARKER_VAR: marker,
    }
    env.update(extra or {})
    return env


class ClaudeProcess:
    """A started `claude -p` in its own process group (for the caller to drive)."""

    def __init__(
        self,
        binary: Path,
        root: Path,
        prompt: str,
        base_url: str,
        *,
        tools: str,
        retries: int,
        extra_args: tuple[str, ...],
        env_extra: dict[str, str] | None,
        prompt_style: str = "after-dashdash",
    ) -> None:
        self.root = root
        for sub in ("home", "config", "tmp", "cwd"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.api_key = "dummy-" + secrets.token_hex(8)
        self.marker = secrets.token_hex(8)
        self.argv = claude_argv(binary, prompt, tools, extra_args, prompt_style)
        (root / "prompt.txt").write_text(prompt if prompt_style == "stdin" else "")
        self.started = time.monotonic()
        with (
            open(root / "stdout.jsonl", "wb") as out,
            open(root / "stderr.txt", "wb") as err,
            open(root / "prompt.txt", "rb") as stdin,
        ):
            self.proc = subprocess.Popen(
                self.argv,
                cwd=root / "cwd",
                env=claude_env(root, base_url, self.api_key, self.marker, retries, env_extra),
                stdin=stdin,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.pgid = self.proc.pid
        self.peak_rss = 0

    def sample_rss(self) -> None:
        try:
            top = psutil.Process(self.proc.pid)
            procs = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        self.peak_rss = max(self.peak_rss, total)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.sample_rss()
            time.sleep(0.02)
        return self.proc.poll()

    def finish(self) -> ClaudeRun:
        """Kill the group (whatever is left), check nothing survives, collect the output."""
        seconds = time.monotonic() - self.started
        rc = self.proc.poll()
        kill_group(self.pgid)
        self.proc.wait(timeout=10)
        assert_nothing_survives(self.pgid, self.marker)
        stdout = (self.root / "stdout.jsonl").read_text(errors="replace")
        lines = [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]
        return ClaudeRun(
            argv=self.argv,
            returncode=rc,
            stdout=stdout,
            stderr=(self.root / "stderr.txt").read_text(errors="replace"),
            seconds=seconds,
            peak_rss_bytes=self.peak_rss,
            root=self.root,
            cwd=self.root / "cwd",
            home=self.root / "home",
            config_dir=self.root / "config",
            tmpdir=self.root / "tmp",
            api_key=self.api_key,
            pgid=self.pgid,
            lines=lines,
        )


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    path = bundled_claude()
    if path is None:
        pytest.skip(
            "Claude Code CLI not found at claude_agent_sdk/_bundled/claude "
            "(pip install -e . installs claude-agent-sdk, which bundles it)"
        )
    return path


@pytest.fixture(scope="module")
def model_server():
    with ScriptedModelServer() as srv:
        yield srv


@pytest.fixture
def start_claude(claude_bin: Path, tmp_path: Path, model_server: ScriptedModelServer):
    """Start `claude -p PROMPT` against the module's scripted server; returns ClaudeProcess.

    Every process started is killed as a group at teardown (and checked gone)."""
    started: list[ClaudeProcess] = []
    counter = iter(range(10_000))

    def start(
        prompt: str,
        *,
        tools: str = "Read,Write,Edit,Bash",
        retries: int = 1,
        extra_args: tuple[str, ...] = (),
        env_extra: dict[str, str] | None = None,
        server: ScriptedModelServer | None = None,
        prompt_style: str = "after-dashdash",
    ) -> ClaudeProcess:
        root = tmp_path / f"run{next(counter)}"
        cp = ClaudeProcess(
            claude_bin,
            root,
            prompt,
            (server or model_server).base_url,
            tools=tools,
            retries=retries,
            extra_args=extra_args,
            env_extra=env_extra,
            prompt_style=prompt_style,
        )
        started.append(cp)
        return cp

    yield start
    for cp in started:
        kill_group(cp.pgid)
        try:
            cp.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        assert_nothing_survives(cp.pgid, cp.marker)


@pytest.fixture
def run_claude(start_claude: Callable[..., ClaudeProcess]):
    """Run `claude -p PROMPT` to completion (timeout s) and return a ClaudeRun."""

    def run(prompt: str, *, timeout: float = 60, **kw: Any) -> ClaudeRun:
        cp = start_claude(prompt, **kw)
        rc = cp.wait(timeout)
        assert rc is not None, f"claude did not finish within {timeout}s"
        return cp.finish()

    return run
