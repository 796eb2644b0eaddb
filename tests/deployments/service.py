"""A real Prefect server and workers for the service tests, each started as its own process and
stopped by pid.

``PrefectServer`` runs ``prefect server start`` on 127.0.0.1 at a free port with a private
PREFECT_HOME (SQLite), analytics off and PREFECT_UI_API_URL pointing at that port; ``env``
is the environment every CLI process of the test gets. ``PrefectProcess.stop`` sends SIGTERM
(twice for a worker: the first only asks it to drain), then SIGKILL, and kills any child the
process left — by pid, never by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

#: Settings of the test's shell that must not leak into the server or its clients.
DROP = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_PROFILE",
    "PREFECT_UI_API_URL",
    "PREFECT_SERVER_API_PORT",
    "PREFECT_HOME",
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrefectProcess:
    """One started CLI process (own session), its log, and a pid-based stop."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        cwd: Path | None = None,
        terms: int = 1,
    ):
        self.argv = argv
        self.log_path = log
        self.terms = terms
        self._log = open(log, "wb")  # noqa: SIM115 - open for the process's lifetime
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def log(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM ``terms`` times (1 s apart while it lives), then SIGKILL; then kill by pid
        whatever it started that is still there."""
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for i in range(self.terms):
            if not self.alive():
                break
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=1.0 if i < self.terms - 1 else timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        for child in children:
            try:
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    child.kill()
            except psutil.NoSuchProcess:
                pass
        self._log.close()


class PrefectServer(PrefectProcess):
    """``prefect server start`` at a free port with a private home."""

    def __init__(self, home: Path, extra_env: dict[str, str] | None = None):
        home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        env = {k: v for k, v in os.environ.items() if k not in DROP}
        env.update(
            {
                "PREFECT_HOME": str(home),
                "PREFECT_API_URL": self.api_url,
                "PREFECT_UI_API_URL": self.api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_LOGGING_LEVEL": "INFO",
            }
        )
        env.update(extra_env or {})
        self.env = env
        self.started = time.monotonic()
        super().__init__(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env,
            home / "server.log",
        )
        self.startup_seconds: float | None = None

    def wait_healthy(self, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"prefect server exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        self.startup_seconds = time.monotonic() - self.started
                        return self.startup_seconds
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prefect server not healthy after {timeout:.0f} s:\n{self.log()}")

    def worker(self, pool: str, name: str, log: Path) -> PrefectProcess:
        """``prefect worker start --pool POOL`` (polls every second; stops on 2 SIGTERMs)."""
        return PrefectProcess(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--name", name],
            self.env,
            log,
            terms=2,
        )

    def cli(
        self,
        *argv: str,
        cwd: Path | None = None,
        timeout: float = 180,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a command against this server (its env), capturing output."""
        return subprocess.run(
            list(argv),
            cwd=cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
