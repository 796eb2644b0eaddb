"""The run's watchdog: when the orchestrator dies without cleaning up, its agents die too.

A run's agents all carry the run's marker in their environment (:data:`MARKER_ENV`). Before
the first agent starts, the orchestrator starts this small process in its own session
(``Watchdog.start``) and keeps the write end of a pipe to it. The watchdog blocks reading the
pipe:

* the orchestrator ends normally: it writes ``bye`` and closes the pipe; the watchdog exits
  and kills nothing (the orchestrator has already ended its agents itself);
* the orchestrator dies any other way — SIGKILL, an OOM kill, a crash, a sync flow that runs
  no cleanup on SIGTERM — the kernel closes its end: the watchdog reads EOF and kills every
  process carrying the run's marker (SIGTERM, a grace, SIGKILL; agents that ``setsid`` or
  double-fork away carry it too), prints one line to stderr, and exits.

Only the orchestrator holds the write end (pipes are not inherited by the agents, whose
spawns close every other descriptor), so EOF means the orchestrator is gone. Nothing heavy is
imported until EOF: a watchdog costs one small Python process per run while it waits.

Run as ``python .../watchdog.py MARKER GRACE_SECONDS`` (by path, so starting it does not
import the package).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

_BYE = b"bye\n"
#: How long a clean stop waits for the watchdog to exit before killing it.
_STOP_WAIT_S = 5.0


class Watchdog:
    """The orchestrator's side: ``start()`` before the first agent, ``stop()`` at the end."""

    def __init__(self, marker: str, grace_seconds: float = 2.0) -> None:
        self.marker = marker
        self.grace_seconds = grace_seconds
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from tasks_lib.agents.proctable import MARKER_ENV

        env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-S",
                str(Path(__file__).resolve()),
                self.marker,
                str(self.grace_seconds),
                str(os.getpid()),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a signal to the orchestrator's group does not reach it
            close_fds=True,
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        """The run ended normally: tell the watchdog, wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        with contextlib.suppress(OSError):  # it died already: nothing to tell
            proc.stdin.write(_BYE)
            proc.stdin.flush()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _watch(marker: str, grace_seconds: float, orchestrator: int) -> int:
    received = b""
    while True:
        try:
            chunk = os.read(0, 64)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        received = (received + chunk)[-len(_BYE) :]
    if received == _BYE:
        return 0
    # The orchestrator is gone: import the killer now (the root of the package on the path,
    # not this file's folder), and end every process of the run.
    root = str(Path(__file__).resolve().parents[2])
    sys.path[:] = [root, *[p for p in sys.path if p != str(Path(__file__).parent)]]
    import site

    site.main()  # -S skipped it at start (fast); the package's dependencies live there
    from tasks_lib.agents.kill import reap
    from tasks_lib.agents.proctable import ProcessInfo

    killed = reap(
        [ProcessInfo(pid=0, pgid=0, create_time=-1.0, argv0="", marker=marker)], grace_seconds
    )
    if killed:
        with contextlib.suppress(OSError):
            sys.stderr.write(
                f"specwave: the orchestrator (pid {orchestrator}) died; its "
                f"watchdog killed {len(killed)} agent processes: {killed}\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(_watch(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
