"""Reading the process table: who is alive, in which group, carrying which run's marker.

The fast path reads ``/proc`` directly (a tenth of psutil's cost for a machine's worth of
processes); where there is no ``/proc`` psutil does the same, slower. Processes are
identified by (pid, create_time), so a pid reused by an unrelated process is never taken for
an agent. Zombies count as gone (a container's pid 1 may never reap them).

Nothing here signals anything: :mod:`tasks_lib.agents.kill` does, from what this finds.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import psutil

#: Environment variable set on every agent process; its value is a comma-separated list
#: of markers (a run's marker, then the agent's own; an outer run's marker is kept when runs
#: nest). Everything an agent starts inherits it, even a grandchild that called ``setsid()``.
MARKER_ENV = "SPECWAVE_AGENT_MARKER"

#: Fallback only: how often an exit is polled where no pidfd can be used (not Linux ≥ 5.3,
#: or pidfd_open refused, e.g. by a seccomp filter). On Linux exits are events (pidfd).
#: Read at call time by kill and exits, so a test or a what-if can change it here.
POLL_S = 0.01
#: Whether this Python and kernel offer pidfds (``pidfd_open`` and ``waitid(P_PIDFD)``).
HAVE_PIDFD = hasattr(os, "pidfd_open") and hasattr(os, "P_PIDFD")
#: /proc/<pid>/stat counts start times in these ticks (USER_HZ, 100 on Linux).
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class ProcessInfo:
    """Identity of a started agent, recorded so a later run can reap it.

    ``pid`` and ``create_time`` together identify the process (pid-reuse safe);
    ``pgid`` is its process group (equal to ``pid``: each agent leads its own group);
    ``marker`` is the value of :data:`MARKER_ENV` given to the agent and inherited by
    everything it starts.
    """

    pid: int
    pgid: int
    create_time: float
    argv0: str
    marker: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessInfo:
        try:
            return cls(
                pid=int(data["pid"]),
                pgid=int(data["pgid"]),
                create_time=float(data["create_time"]),
                argv0=str(data["argv0"]),
                marker=str(data.get("marker") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"process record {data!r} is not a ProcessInfo ({exc!r}) — "
                "the run folder's process record is damaged; delete it"
            ) from None


def own_lineage() -> set[int]:
    """Our pid and our ancestors' pids: never signalled, whatever a record says."""
    pids = {os.getpid()}
    pid = os.getppid()
    while pid > 0 and pid not in pids:  # /proc: a tenth of psutil's cost
        pids.add(pid)
        stat = proc_stat(pid)
        if stat is None:
            break
        pid = stat[3]
    if len(pids) > 1 and pid == 0:
        return pids
    with contextlib.suppress(psutil.Error):  # no /proc (or the chain broke): psutil
        pids.update(p.pid for p in psutil.Process().parents())
    return pids


def gone(p: psutil.Process) -> bool:
    """True when ``p`` has exited (a zombie counts) or its pid now names another process."""
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def boot_ticks() -> int | None:
    """Now, in the clock of /proc/<pid>/stat start times (CLOCK_BOOTTIME in USER_HZ ticks)."""
    try:
        return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLK_TCK)
    except (AttributeError, OSError):
        return None


def proc_stat(pid: int) -> tuple[bytes, int, int, int] | None:
    """(state, pgid, start time in ticks, ppid) of ``pid`` from /proc; None when gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and ")", so cut at the last.
        fields = data[data.rfind(b")") + 2 :].split()
        return fields[0], int(fields[2]), int(fields[19]), int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def _has_marker(pid: int, markers: set[bytes]) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read()
    except OSError:  # gone, or not ours to read (another user's process: not our agent's)
        return False
    key = MARKER_ENV.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(key):
            return bool(markers.intersection(entry[len(key) :].split(b",")))
    return False


def scan_proc(
    pgids: set[int], markers: set[str], skip: set[int], not_before: int
) -> list[int] | None:
    """Pids of live processes in ``pgids`` or carrying one of ``markers``, read from /proc
    directly; None where there is no /proc (then psutil does it, slower).

    Every candidate's stat is read afresh, so a pid reused since an earlier sweep is seen
    as the new process it is (psutil's process_iter keeps Process objects of earlier calls,
    and one of a reused pid would look gone). Environments — the costly read, several ms for
    a machine's worth — are read only of processes started at or after ``not_before``
    (/proc ticks): the marker is a fresh random id, so only processes created after the
    agent was spawned can carry it.
    """
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    wanted = {m.encode() for m in markers}
    hits = []
    for name in names:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in skip:
            continue
        stat = proc_stat(pid)
        if stat is None or stat[0] in (b"Z", b"X"):  # gone, or a zombie: counts as gone
            continue
        if stat[1] in pgids or (wanted and stat[2] >= not_before and _has_marker(pid, wanted)):
            hits.append(pid)
    return hits


def collect(
    roots: Iterable[psutil.Process],
    pgids: set[int],
    markers: set[str],
    exclude: set[int],
    not_before: int = 0,
) -> dict[int, psutil.Process]:
    """Live processes of the tree: roots and their descendants, members of ``pgids``,
    and processes whose environment carries one of ``markers`` (only those started at or
    after ``not_before``, in /proc ticks, are searched for a marker; 0: all)."""
    found: dict[int, psutil.Process] = {}
    for root in roots:
        if gone(root):
            continue
        found[root.pid] = root
        with contextlib.suppress(psutil.Error):
            for child in root.children(recursive=True):
                found.setdefault(child.pid, child)
    hits: list[int] | None = []
    if pgids or markers:
        hits = scan_proc(pgids, markers, found.keys() | exclude, not_before)
    if hits is not None:
        for pid in hits:
            with contextlib.suppress(psutil.Error):
                found[pid] = psutil.Process(pid)
    else:
        for p in psutil.process_iter():
            if p.pid in found or p.pid in exclude:
                continue
            if pgids and pgid_of(p.pid) in pgids:
                found[p.pid] = p
                continue
            if markers:
                try:
                    value = p.environ().get(MARKER_ENV)
                except psutil.Error:
                    continue
                if value and markers.intersection(value.split(",")):
                    found[p.pid] = p
    return {pid: p for pid, p in found.items() if pid not in exclude and not gone(p)}


def process(pid: int, create_time: float | None = None) -> psutil.Process | None:
    """psutil handle for ``pid``, or None when gone (or when its create_time differs)."""
    try:
        p = psutil.Process(pid)
        if create_time is not None and abs(p.create_time() - create_time) > 1e-3:
            return None
        return p
    except psutil.Error:
        return None


def create_time(p: psutil.Process | None) -> float:
    """``p``'s start time; 0.0 when it already exited and was reaped (never matches again)."""
    if p is None:
        return 0.0
    try:
        return p.create_time()
    except psutil.Error:
        return 0.0


__all__ = [
    "HAVE_PIDFD",
    "MARKER_ENV",
    "POLL_S",
    "ProcessInfo",
    "boot_ticks",
    "collect",
    "create_time",
    "gone",
    "own_lineage",
    "pgid_of",
    "proc_stat",
    "process",
    "scan_proc",
]
