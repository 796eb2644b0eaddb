"""Seeing an agent's exit the moment it happens, without racing asyncio for the child.

On Linux the exit is an event: a pidfd of the leader, watched by the event loop, polls
readable the moment the leader exits; its code is then read with ``waitid(WNOWAIT)``, which
leaves reaping to asyncio's child watcher. Where no pidfd can be used, ``returncode`` is
polled every ``proctable.POLL_S``.
"""

from __future__ import annotations

import asyncio
import os

from tasks_lib.agents import proctable

#: The leader is known to have exited and to be reaped by asyncio's child watcher, which is
#: handing the exit code to the event loop: poll for it this often (a few rounds at most).
_REAPED_POLL_S = 0.001


def peek_child(pidfd: int) -> tuple[str, int | None]:
    """The state of our child behind ``pidfd``, read *without* reaping it.

    ``waitid(WNOWAIT)`` leaves the zombie to asyncio's child watcher, which reaps it as
    usual, so the watcher never runs into ECHILD because of us. Returns ("running", None);
    ("exited", code) with the code as asyncio gives it (the exit status, or minus the
    signal that killed it); ("reaped", None) when it is not, or no longer, our child (the
    watcher reaped it: its code is on its way to ``proc.returncode``); ("unknown", None)
    when waitid cannot tell (a kernel without P_PIDFD for waitid: before 5.4).
    """
    try:
        res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return "reaped", None
    except OSError:
        return "unknown", None
    if res is None:
        return "running", None
    return "exited", res.si_status if res.si_code == os.CLD_EXITED else -res.si_status


async def wait_exit(proc: asyncio.subprocess.Process) -> int:
    """The leader's exit code, as soon as it exits.

    Not ``proc.wait()``: on Python 3.11 that also waits until every holder of the
    stdout/stderr pipes has closed them, i.e. it hangs while a background grandchild is
    alive — exactly the leftovers we must kill after the leader exits.

    If asyncio's watcher (3.11: a thread blocked in ``waitpid``) wins the race anyway (or
    had reaped a leader that exited at once, before the pidfd could be opened: ESRCH), the
    code is already on its way to ``proc.returncode`` and a 1 ms poll picks it up.

    A pidfd opened after asyncio reaped the leader could name a new process that reused the
    pid; ``waitid`` on it fails (not our child) unless the kernel handed the pid, after
    cycling through all others, to another child of ours within that instant.
    """
    if proc.returncode is not None:
        return proc.returncode
    poll = proctable.POLL_S
    if proctable.HAVE_PIDFD:
        try:
            pidfd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            pidfd, poll = None, _REAPED_POLL_S  # exited and reaped already
        except OSError:
            pidfd = None  # not available here: poll
        if pidfd is not None:
            try:
                code, reaped = await _wait_pidfd(proc, pidfd)
            finally:
                os.close(pidfd)
            if code is not None:
                return code
            if reaped:
                poll = _REAPED_POLL_S
    while proc.returncode is None:  # noqa: ASYNC110 — the fallback poll, see above
        await asyncio.sleep(poll)
    return proc.returncode


async def _wait_pidfd(proc: asyncio.subprocess.Process, pidfd: int) -> tuple[int | None, bool]:
    """Wait for the leader behind ``pidfd`` to exit: (its code or None, whether it exited)."""
    state, code = peek_child(pidfd)
    if state != "running":
        return code, state != "unknown"
    loop = asyncio.get_running_loop()
    readable = loop.create_future()

    def on_readable() -> None:
        if not readable.done():
            readable.set_result(None)

    try:
        loop.add_reader(pidfd, on_readable)
    except (NotImplementedError, OSError, ValueError):
        return None, False  # an event loop without add_reader: poll
    try:
        await readable
    finally:
        loop.remove_reader(pidfd)
    if proc.returncode is not None:
        return proc.returncode, True
    state, code = peek_child(pidfd)
    return code, state in ("exited", "reaped")


__all__ = ["peek_child", "wait_exit"]
