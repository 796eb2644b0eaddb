"""Killing process trees: SIGTERM, a grace period, SIGKILL, until nothing is left.

The tree is snapshotted *before* any signal (:func:`tasks_lib.agents.proctable.collect`): the
roots' descendants, every member of the process groups, and every process carrying one of the
markers (so a grandchild that called ``setsid()`` and was re-parented to init is still found).
Then SIGTERM to the groups and to each process; wait up to ``grace_seconds``; SIGKILL what is
left (group + snapshot + anything new carrying the marker), in rounds until nothing is left.
Never the calling process, its ancestors or its own process group.

With pidfds (Linux ≥ 5.3) the exits are waited for as events; elsewhere a short poll.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import time
from collections.abc import Iterable

import psutil

from tasks_lib.agents import proctable
from tasks_lib.agents.proctable import ProcessInfo, collect, gone, own_lineage, pgid_of

#: After SIGKILL, how long to wait for the kernel to remove the processes, per round.
KILL_WAIT_S = 2.0
_KILL_ROUNDS = 5


def _signal(procs: Iterable[psutil.Process], pgids: set[int], sig: int, own_pgrp: int) -> None:
    for pgid in pgids:
        if pgid <= 1 or pgid == own_pgrp:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for p in procs:
        # psutil refuses to signal a pid that was reused by another process.
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)


def wait_gone(procs: Iterable[psutil.Process], until: float) -> None:
    """Block until every process of ``procs`` is gone (exited; zombies count) or until
    ``time.monotonic()`` reaches ``until``.

    With pidfds (Linux ≥ 5.3, any process, not only our children) the exits are events:
    a pidfd polls readable once its process has exited. Elsewhere: a ``POLL_S`` poll.
    """
    pending = [p for p in procs if not gone(p)]
    fds: dict[int, psutil.Process] = {}
    try:
        usable = proctable.HAVE_PIDFD
        for p in pending if usable else ():
            try:
                fds[os.pidfd_open(p.pid)] = p
            except ProcessLookupError:
                continue  # gone already
            except OSError:
                usable = False  # not permitted here (seccomp, old kernel): poll instead
                break
        if usable:
            # A pid reused between gone() and pidfd_open() gives the new process's pidfd;
            # psutil's identity check (pid + create time) says ours is gone, so drop it.
            for fd in [fd for fd, p in fds.items() if gone(p)]:
                del fds[fd]
                os.close(fd)
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            while fds:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return
                for fd, _ in poller.poll(math.ceil(remaining * 1000)):
                    poller.unregister(fd)
                    del fds[fd]
                    os.close(fd)
            return
        while time.monotonic() < until and not all(gone(p) for p in pending):
            time.sleep(proctable.POLL_S)
    finally:
        for fd in fds:
            os.close(fd)


def terminate(
    roots: Iterable[psutil.Process],
    pgids: set[int],
    markers: set[str],
    grace_seconds: float,
    not_before: int = 0,
) -> list[int]:
    """SIGTERM the tree, wait ``grace_seconds``, SIGKILL what is left. Returns killed pids.

    The snapshot is taken before any signal, so descendants that left the group are
    signalled even though their parent dies first. ``not_before`` (/proc ticks) bounds the
    marker search to processes started since then (see ``proctable.scan_proc``).
    """
    exclude = own_lineage()
    own_pgrp = os.getpgrp()
    pgids = {g for g in pgids if g > 1 and g != own_pgrp}
    killed: set[int] = set()

    def sweep() -> dict[int, psutil.Process]:
        procs = collect(list(roots_alive.values()), pgids, markers, exclude, not_before)
        # Groups led by a process of the tree were created by the tree: kill them whole.
        for pid in procs:
            if pgid_of(pid) == pid and pid != own_pgrp:
                pgids.add(pid)
        killed.update(procs)
        return procs

    roots_alive = {p.pid: p for p in roots}
    procs = sweep()
    if not procs:
        return []

    deadline = time.monotonic() + max(0.0, grace_seconds)
    _signal(procs.values(), pgids, signal.SIGTERM, own_pgrp)
    while True:
        wait_gone(procs.values(), deadline)
        roots_alive = {pid: p for pid, p in procs.items() if not gone(p)}
        newcomers = {pid: p for pid, p in sweep().items() if pid not in procs}
        procs.update(newcomers)
        if time.monotonic() >= deadline or not any(not gone(p) for p in procs.values()):
            break
        # Processes forked while we waited: they get SIGTERM and the rest of the grace.
        _signal(newcomers.values(), set(), signal.SIGTERM, own_pgrp)

    for _ in range(_KILL_ROUNDS):
        procs = {pid: p for pid, p in procs.items() if not gone(p)}
        if not procs:
            procs = sweep()
            if not procs:
                break
        _signal(procs.values(), pgids, signal.SIGKILL, own_pgrp)
        wait_gone(procs.values(), time.monotonic() + KILL_WAIT_S)
        roots_alive = procs
        procs = sweep()
    return sorted(killed)


def kill_tree(pid: int, pgid: int, grace_seconds: float) -> list[int]:
    """Terminate ``pid``, its descendants and every member of process group ``pgid``.

    SIGTERM first (group and each process, descendants snapshotted before signalling),
    SIGKILL after ``grace_seconds`` for whatever remains. Blocks until done. Never
    signals the calling process, its ancestors or its own process group.

    Returns:
        The pids that were alive and were signalled, sorted.

    Example:
        >>> kill_tree(info.pid, info.pgid, grace_seconds=5.0)  # doctest: +SKIP
        [4242, 4243]
    """
    root = proctable.process(pid)
    return terminate([root] if root else [], {pgid}, set(), grace_seconds)


def reap(infos: Iterable[ProcessInfo], grace_seconds: float = 2.0) -> list[int]:
    """Kill agents left by an orchestrator that died without cleaning up.

    For each record: if ``pid`` still exists with the recorded ``create_time``, it, its
    descendants and all members of ``pgid`` are terminated. A pid now owned by another
    process (different create_time) is left alone, and so is its group. Independently,
    every process carrying the record's ``marker`` in its environment is terminated
    (the marker is a random id, so this is pid-reuse safe too; it catches daemons whose
    leader has already exited). A record with only a marker (pid 0) reaps by marker alone.

    Returns:
        The pids killed, sorted.

    Example:
        >>> records = json.loads(path.read_text())  # doctest: +SKIP
        >>> infos = [ProcessInfo.from_dict(d) for d in records]  # doctest: +SKIP
        >>> reap(infos)  # doctest: +SKIP
        [4242]
    """
    roots: list[psutil.Process] = []
    pgids: set[int] = set()
    markers: set[str] = set()
    for info in infos:
        p = proctable.process(info.pid, info.create_time) if info.pid > 0 else None
        if p is not None and not gone(p):
            roots.append(p)
            pgids.add(info.pgid)
        if info.marker:
            markers.update(m for m in info.marker.split(",") if m)
    if not roots and not markers:
        return []
    return terminate(roots, pgids, markers, grace_seconds)


__all__ = ["KILL_WAIT_S", "kill_tree", "reap", "terminate", "wait_gone"]
