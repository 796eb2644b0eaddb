"""The one place that runs agent processes: spawn, stream, time out, kill, reap.

Prefect's task ``timeout_seconds`` does not kill subprocesses, so specwave owns the
timeout and the kill. Every agent runs in its own session and process group
(``start_new_session=True``, never a shell). When a run ends — normally, by timeout,
by cancellation or by an exception — the whole tree is terminated:

1. snapshot the tree *before* signalling: the leader's descendants (psutil), every
   member of the leader's process group, every process seen earlier as a descendant
   (a tracker snapshots the tree once a second while the agent runs), and every
   process whose environment carries this run's marker (``SPECWAVE_AGENT_MARKER``,
   inherited by everything the agent starts, so a grandchild that called ``setsid()``
   and was re-parented to init is still found);
2. SIGTERM the process group(s) and each snapshotted process;
3. wait up to ``grace_seconds``; then SIGKILL whatever is left (group + snapshot +
   anything new carrying the marker), until nothing is left.

After a *normal* exit the same sweep runs, so an agent cannot leave daemons behind; the
pids it had to kill are reported in :attr:`ProcessResult.killed_pids`.

Processes are identified by (pid, create_time), so a pid reused by an unrelated process
is never signalled. Zombies count as gone (the container's pid 1 may never reap them).

If the orchestrator itself is killed with SIGKILL nothing above runs; the flow records
each :class:`ProcessInfo` in the run folder and a later run calls :func:`reap`.

PR_SET_PDEATHSIG is deliberately not used: it needs ``preexec_fn`` (unsafe in a
threaded program such as a Prefect worker, and it disables the fast spawn path), and
Linux delivers it when the *thread* that forked the child exits, not the process — a
child started from a Prefect task's event-loop thread is SIGKILLed as soon as that
thread ends (measured here), and it never covers grandchildren anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import select
import signal
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

__all__ = [
    "MARKER_ENV",
    "MAX_LINE_BYTES",
    "AgentLaunchError",
    "ProcessInfo",
    "ProcessResult",
    "kill_tree",
    "reap",
    "run_process_group",
]

#: Environment variable set on every agent process; its value is a comma-separated list
#: of markers (an outer run's marker is kept when runs nest).
MARKER_ENV = "SPECWAVE_AGENT_MARKER"

#: A line longer than this (no newline yet) is passed to ``on_line`` in pieces of this size.
MAX_LINE_BYTES = 1 << 20
_READ_CHUNK = 1 << 16
#: How often the tracker snapshots the running agent's descendants.
_TRACK_INTERVAL_S = 1.0
#: After the tree is dead, how long to wait for the output pipes to reach EOF.
_DRAIN_TIMEOUT_S = 5.0
#: After SIGKILL, how long to wait for the kernel to remove the processes, per round.
_KILL_WAIT_S = 2.0
_KILL_ROUNDS = 5
#: Fallback only: how often an exit is polled where no pidfd can be used (not Linux ≥ 5.3,
#: or pidfd_open refused, e.g. by a seccomp filter). On Linux exits are events (pidfd).
_POLL_S = 0.01
#: The leader is known to have exited and to be reaped by asyncio's child watcher, which is
#: handing the exit code to the event loop: poll for it this often (a few rounds at most).
_REAPED_POLL_S = 0.001
_HAVE_PIDFD = hasattr(os, "pidfd_open") and hasattr(os, "P_PIDFD")
#: /proc/<pid>/stat counts start times in these ticks (USER_HZ, 100 on Linux).
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class AgentLaunchError(RuntimeError):
    """The agent process could not be started (missing executable, no permission, bad cwd)."""


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


@dataclass
class ProcessResult:
    """What happened to one agent process."""

    exit_code: int | None  # None when we killed it (timeout / cancel_event)
    timed_out: bool
    cancelled: bool  # True when ``cancel_event`` stopped it
    stdout: str  # full decoded stdout (utf-8, errors="replace")
    stderr: str
    duration_s: float
    pid: int
    killed_pids: list[int] = field(default_factory=list)  # what we had to kill at the end


# --------------------------------------------------------------------------- killing


def _own_lineage() -> set[int]:
    """Our pid and our ancestors' pids: never signalled, whatever a record says."""
    pids = {os.getpid()}
    pid = os.getppid()
    while pid > 0 and pid not in pids:  # /proc: a tenth of psutil's cost
        pids.add(pid)
        stat = _proc_stat(pid)
        if stat is None:
            break
        pid = stat[3]
    if len(pids) > 1 and pid == 0:
        return pids
    with contextlib.suppress(psutil.Error):  # no /proc (or the chain broke): psutil
        pids.update(p.pid for p in psutil.Process().parents())
    return pids


def _gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def _pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _boot_ticks() -> int | None:
    """Now, in the clock of /proc/<pid>/stat start times (CLOCK_BOOTTIME in USER_HZ ticks)."""
    try:
        return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLK_TCK)
    except (AttributeError, OSError):
        return None


def _proc_stat(pid: int) -> tuple[bytes, int, int, int] | None:
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


def _scan_proc(
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
        stat = _proc_stat(pid)
        if stat is None or stat[0] in (b"Z", b"X"):  # gone, or a zombie: counts as gone
            continue
        if stat[1] in pgids or (wanted and stat[2] >= not_before and _has_marker(pid, wanted)):
            hits.append(pid)
    return hits


def _collect(
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
        if _gone(root):
            continue
        found[root.pid] = root
        with contextlib.suppress(psutil.Error):
            for child in root.children(recursive=True):
                found.setdefault(child.pid, child)
    hits: list[int] | None = []
    if pgids or markers:
        hits = _scan_proc(pgids, markers, found.keys() | exclude, not_before)
    if hits is not None:
        for pid in hits:
            with contextlib.suppress(psutil.Error):
                found[pid] = psutil.Process(pid)
    else:
        for p in psutil.process_iter():
            if p.pid in found or p.pid in exclude:
                continue
            if pgids and _pgid_of(p.pid) in pgids:
                found[p.pid] = p
                continue
            if markers:
                try:
                    value = p.environ().get(MARKER_ENV)
                except psutil.Error:
                    continue
                if value and markers.intersection(value.split(",")):
                    found[p.pid] = p
    return {pid: p for pid, p in found.items() if pid not in exclude and not _gone(p)}


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


def _wait_gone(procs: Iterable[psutil.Process], until: float) -> None:
    """Block until every process of ``procs`` is gone (exited; zombies count) or until
    ``time.monotonic()`` reaches ``until``.

    With pidfds (Linux ≥ 5.3, any process, not only our children) the exits are events:
    a pidfd polls readable once its process has exited. Elsewhere: a ``_POLL_S`` poll.
    """
    pending = [p for p in procs if not _gone(p)]
    fds: dict[int, psutil.Process] = {}
    try:
        usable = _HAVE_PIDFD
        for p in pending if usable else ():
            try:
                fds[os.pidfd_open(p.pid)] = p
            except ProcessLookupError:
                continue  # gone already
            except OSError:
                usable = False  # not permitted here (seccomp, old kernel): poll instead
                break
        if usable:
            # A pid reused between _gone() and pidfd_open() gives the new process's pidfd;
            # psutil's identity check (pid + create time) says ours is gone, so drop it.
            for fd in [fd for fd, p in fds.items() if _gone(p)]:
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
        while time.monotonic() < until and not all(_gone(p) for p in pending):
            time.sleep(_POLL_S)
    finally:
        for fd in fds:
            os.close(fd)


def _terminate(
    roots: Iterable[psutil.Process],
    pgids: set[int],
    markers: set[str],
    grace_seconds: float,
    not_before: int = 0,
) -> list[int]:
    """SIGTERM the tree, wait ``grace_seconds``, SIGKILL what is left. Returns killed pids.

    The snapshot is taken before any signal, so descendants that left the group are
    signalled even though their parent dies first.
    """
    exclude = _own_lineage()
    own_pgrp = os.getpgrp()
    pgids = {g for g in pgids if g > 1 and g != own_pgrp}
    killed: set[int] = set()

    def sweep() -> dict[int, psutil.Process]:
        procs = _collect(list(roots_alive.values()), pgids, markers, exclude, not_before)
        # Groups led by a process of the tree were created by the tree: kill them whole.
        for pid in procs:
            if _pgid_of(pid) == pid and pid != own_pgrp:
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
        _wait_gone(procs.values(), deadline)
        roots_alive = {pid: p for pid, p in procs.items() if not _gone(p)}
        newcomers = {pid: p for pid, p in sweep().items() if pid not in procs}
        procs.update(newcomers)
        if time.monotonic() >= deadline or not any(not _gone(p) for p in procs.values()):
            break
        # Processes forked while we waited: they get SIGTERM and the rest of the grace.
        _signal(newcomers.values(), set(), signal.SIGTERM, own_pgrp)

    for _ in range(_KILL_ROUNDS):
        procs = {pid: p for pid, p in procs.items() if not _gone(p)}
        if not procs:
            procs = sweep()
            if not procs:
                break
        _signal(procs.values(), pgids, signal.SIGKILL, own_pgrp)
        _wait_gone(procs.values(), time.monotonic() + _KILL_WAIT_S)
        roots_alive = procs
        procs = sweep()
    return sorted(killed)


def _process(pid: int, create_time: float | None = None) -> psutil.Process | None:
    """psutil handle for ``pid``, or None when gone (or when its create_time differs)."""
    try:
        p = psutil.Process(pid)
        if create_time is not None and abs(p.create_time() - create_time) > 1e-3:
            return None
        return p
    except psutil.Error:
        return None


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
    root = _process(pid)
    return _terminate([root] if root else [], {pgid}, set(), grace_seconds)


def reap(infos: Iterable[ProcessInfo], grace_seconds: float = 2.0) -> list[int]:
    """Kill agents left by an earlier orchestrator that died without cleaning up.

    For each record: if ``pid`` still exists with the recorded ``create_time``, it, its
    descendants and all members of ``pgid`` are terminated. A pid now owned by another
    process (different create_time) is left alone, and so is its group. Independently,
    every process carrying the record's ``marker`` in its environment is terminated
    (the marker is a random id, so this is pid-reuse safe too; it catches daemons whose
    leader has already exited).

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
        p = _process(info.pid, info.create_time)
        if p is not None and not _gone(p):
            roots.append(p)
            pgids.add(info.pgid)
        if info.marker:
            markers.update(m for m in info.marker.split(",") if m)
    if not roots and not markers:
        return []
    return _terminate(roots, pgids, markers, grace_seconds)


# --------------------------------------------------------------------------- running


def _launch_error(argv0: str, cwd: Path, env: dict[str, str], exc: OSError) -> AgentLaunchError:
    if isinstance(exc, FileNotFoundError) and exc.filename == str(cwd):
        what = f"working directory {str(cwd)!r} does not exist — create it or fix the path"
    elif isinstance(exc, FileNotFoundError):
        if os.sep in argv0:
            what = f"{argv0!r} not found (no such file) — install it or fix the path"
        else:
            path = env.get("PATH", os.defpath)
            what = (
                f"{argv0!r} not found (searched PATH={path}) — "
                "install it or give its full path"
            )
    elif isinstance(exc, PermissionError):
        what = (
            f"{argv0!r} is not executable (permission denied) — "
            "chmod +x it or check the path"
        )
    else:
        what = f"{argv0!r}: {exc.strerror or exc} — check the agent command"
    return AgentLaunchError(f"cannot start agent: {what}")


class _Pump:
    """Reads one stream in chunks, splits lines, calls on_line, appends to the log."""

    def __init__(
        self,
        name: str,
        on_line: Callable[[str, str], None] | None,
        log: IO[bytes] | None,
    ) -> None:
        self.name = name
        self.on_line = on_line
        self.log = log
        self.chunks: list[bytes] = []
        self.pending = b""

    def _emit(self, lines: list[bytes]) -> None:
        if self.log is not None and lines:
            self.log.write(b"".join(line + b"\n" for line in lines))
            self.log.flush()
        if self.on_line is not None:
            for line in lines:
                text = line.decode("utf-8", errors="replace")
                text = text.removesuffix("\r")
                self.on_line(self.name, text)

    async def run(self, stream: asyncio.StreamReader) -> None:
        while True:
            data = await stream.read(_READ_CHUNK)
            if not data:
                break
            self.chunks.append(data)
            parts = (self.pending + data).split(b"\n")
            self.pending = parts.pop()
            while len(self.pending) >= MAX_LINE_BYTES:
                parts.append(self.pending[:MAX_LINE_BYTES])
                self.pending = self.pending[MAX_LINE_BYTES:]
            self._emit(parts)
        self.flush()

    def flush(self) -> None:
        """Emit an unterminated last line (at EOF, or when the stream is abandoned)."""
        if self.pending:
            pending, self.pending = self.pending, b""
            self._emit([pending])

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stdin.write(data)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the agent exited (or closed stdin) without reading everything
    finally:
        with contextlib.suppress(Exception):
            stdin.close()


def _peek_child(pidfd: int) -> tuple[str, int | None]:
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


async def _wait_exit(proc: asyncio.subprocess.Process) -> int:
    """The leader's exit code, as soon as it exits.

    Not ``proc.wait()``: on Python 3.11 that also waits until every holder of the
    stdout/stderr pipes has closed them, i.e. it hangs while a background grandchild is
    alive — exactly the leftovers we must kill after the leader exits.

    On Linux the exit is an event: a pidfd of the leader, watched by the event loop, polls
    readable the moment the leader exits; its code is then read with ``waitid(WNOWAIT)``,
    which leaves reaping to asyncio's child watcher (3.11: a thread blocked in
    ``waitpid``), so the two never race. If the watcher wins anyway (or had reaped a leader
    that exited at once, before the pidfd could be opened: ESRCH), the code is already on
    its way to ``proc.returncode`` and a 1 ms poll picks it up. Where no pidfd can be used,
    ``proc.returncode`` is polled every ``_POLL_S``.

    A pidfd opened after asyncio reaped the leader could name a new process that reused the
    pid; ``waitid`` on it fails (not our child) unless the kernel handed the pid, after
    cycling through all others, to another child of ours within that instant.
    """
    if proc.returncode is not None:
        return proc.returncode
    poll = _POLL_S
    if _HAVE_PIDFD:
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
    state, code = _peek_child(pidfd)
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
    state, code = _peek_child(pidfd)
    return code, state in ("exited", "reaped")


async def _track(leader: psutil.Process, tracked: dict[int, psutil.Process]) -> None:
    """Remember every descendant seen while the agent runs (they may be re-parented later)."""
    while True:
        await asyncio.sleep(_TRACK_INTERVAL_S)
        try:
            children = leader.children(recursive=True)
        except psutil.Error:
            return
        for pid in [pid for pid, p in tracked.items() if _gone(p)]:
            del tracked[pid]
        for child in children:
            tracked.setdefault(child.pid, child)


async def run_process_group(
    argv: list[str],
    *,
    cwd: str | Path,
    env: dict[str, str],
    stdin_data: bytes | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 — the agent's own time limit, not ours
    grace_seconds: float = 5.0,
    on_line: Callable[[str, str], None] | None = None,
    log_path: Path | None = None,
    on_start: Callable[[ProcessInfo], None] | None = None,
    cancel_event: asyncio.Event | None = None,
) -> ProcessResult:
    """Run ``argv`` (no shell) in its own session and process group; stream; clean up.

    Args:
        argv: the command; ``argv[0]`` is looked up on ``env["PATH"]``.
        cwd: working directory (must exist).
        env: the complete environment of the agent (not merged with ours).
            :data:`MARKER_ENV` is added to it.
        stdin_data: written to the agent's stdin, which is then closed; None → /dev/null.
        timeout: seconds from start until the tree is terminated (``timed_out=True``).
        grace_seconds: time between SIGTERM and SIGKILL.
        on_line: ``on_line("stdout"|"stderr", line)`` per line as it arrives, in order
            per stream; no newline; decoded utf-8 with replacement; a line longer than
            :data:`MAX_LINE_BYTES` comes in pieces. Runs in the event loop: keep it quick.
        log_path: raw stdout+stderr bytes appended as lines arrive (file opened in append
            mode, flushed after each chunk read, so every complete line is on disk as soon
            as it arrived); an unterminated last line gets a newline.
        on_start: called right after spawn with the :class:`ProcessInfo` to record.
        cancel_event: when set, the tree is terminated and the result has
            ``cancelled=True`` (cooperative stop, without cancelling the caller).

    Returns:
        A :class:`ProcessResult`. ``exit_code`` is None when we terminated the agent.

    Raises:
        AgentLaunchError: the command cannot be started.
        asyncio.CancelledError: re-raised after the tree was killed (the cleanup is
            shielded, so it completes even while the caller is being cancelled).
        Exception: anything raised by ``on_line``/``on_start`` or writing the log,
            re-raised after the tree was killed.

    Example:
        >>> result = await run_process_group(  # doctest: +SKIP
        ...     ["claude", "-p", "--output-format", "stream-json"],
        ...     cwd=worktree, env=agent_env, stdin_data=prompt.encode(),
        ...     timeout=1800, on_line=lambda s, l: logger.info("[3] %s", l),
        ...     log_path=run_dir / "task-3.log", on_start=record_process)
    """
    if not argv:
        raise AgentLaunchError("cannot start agent: empty command — give the agent command")
    argv = [os.fspath(a) for a in argv]
    cwd = Path(cwd)
    if not cwd.is_dir():
        raise AgentLaunchError(
            f"cannot start agent: working directory {str(cwd)!r} does not exist or is not "
            "a directory — create it or fix the path"
        )
    marker = uuid.uuid4().hex
    inherited = env.get(MARKER_ENV, "")
    child_env = dict(env)
    child_env[MARKER_ENV] = f"{inherited},{marker}" if inherited else marker

    # Plain blocking file I/O on purpose: appends of a few lines are cheaper than a thread hop.
    log_file = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115, ASYNC230
    started = time.monotonic()
    # Two ticks of margin (/proc rounds start times down to a tick, so does this).
    now_ticks = _boot_ticks()
    spawn_ticks = None if now_ticks is None else now_ticks - 2
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=str(cwd),
                env=child_env,
                stdin=(
                    asyncio.subprocess.PIPE
                    if stdin_data is not None
                    else asyncio.subprocess.DEVNULL
                ),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise _launch_error(argv[0], cwd, child_env, exc) from exc
        return await _supervise(
            proc, argv[0], marker, started, spawn_ticks, stdin_data, timeout, grace_seconds,
            on_line, log_file, on_start, cancel_event,
        )
    finally:
        if log_file is not None:
            log_file.close()


async def _supervise(
    proc: asyncio.subprocess.Process,
    argv0: str,
    marker: str,
    started: float,
    spawn_ticks: int | None,
    stdin_data: bytes | None,
    timeout: float | None,  # noqa: ASYNC109 — see run_process_group
    grace_seconds: float,
    on_line: Callable[[str, str], None] | None,
    log_file: IO[bytes] | None,
    on_start: Callable[[ProcessInfo], None] | None,
    cancel_event: asyncio.Event | None,
) -> ProcessResult:
    leader = _process(proc.pid)
    # Marker search after exit: only processes started since just before the spawn (see
    # _scan_proc). The bound is taken from the leader's own start (its stat) when it can be
    # read, else from the clock read before spawning; the smaller of the two is used.
    leader_stat = _proc_stat(proc.pid)
    bounds = [b for b in (spawn_ticks, leader_stat[2] if leader_stat else None) if b is not None]
    not_before = min(bounds) if bounds else 0
    info = ProcessInfo(
        pid=proc.pid,
        pgid=proc.pid,  # start_new_session: the agent leads its own session and group
        create_time=_create_time(leader),
        argv0=argv0,
        marker=marker,
    )
    tracked: dict[int, psutil.Process] = {}
    pumps = {
        "stdout": _Pump("stdout", on_line, log_file),
        "stderr": _Pump("stderr", on_line, log_file),
    }
    readers = {
        asyncio.ensure_future(pumps["stdout"].run(proc.stdout)),
        asyncio.ensure_future(pumps["stderr"].run(proc.stderr)),
    }
    helpers: list[asyncio.Future] = []
    if stdin_data is not None:
        helpers.append(asyncio.ensure_future(_feed(proc.stdin, stdin_data)))
    if leader is not None:
        helpers.append(asyncio.ensure_future(_track(leader, tracked)))
    waiter = asyncio.ensure_future(_wait_exit(proc))
    cancel_waiter = asyncio.ensure_future(cancel_event.wait()) if cancel_event else None
    helpers.append(waiter)
    if cancel_waiter is not None:
        helpers.append(cancel_waiter)

    async def cleanup() -> list[int]:
        # The leader's descendants are snapshotted inside _terminate before any signal;
        # ``tracked`` adds those seen earlier that have since been re-parented.
        roots = ([leader] if leader is not None else []) + list(tracked.values())
        killed = await asyncio.to_thread(
            _terminate, roots, {info.pgid}, {marker}, grace_seconds, not_before
        )
        with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
            await asyncio.wait_for(asyncio.shield(waiter), _KILL_WAIT_S)
        # Every writer of the pipes is dead now; let the readers reach EOF (bounded: a
        # process we could not see or kill may still hold a pipe).
        pending = {r for r in readers if not r.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=_DRAIN_TIMEOUT_S)
        if pending:
            for r in pending:
                r.cancel()
            # Close our ends of the pipes now rather than at garbage collection (possibly
            # after the loop is closed); the process has exited, so close() kills nothing.
            transport = getattr(proc, "_transport", None)
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()
        for pump in pumps.values():
            with contextlib.suppress(Exception):
                pump.flush()
        return killed

    async def shielded_cleanup() -> list[int]:
        # Runs to completion even if our caller is cancelled (again) meanwhile.
        task = asyncio.ensure_future(cleanup())
        cancelled_again = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                cancelled_again = True
        if cancelled_again:
            task.result()
            raise asyncio.CancelledError
        return task.result()

    timed_out = cancelled = False
    error: BaseException | None = None
    try:
        if on_start is not None:
            on_start(info)
        deadline = None if timeout is None else started + max(0.0, timeout)
        watch = {waiter, *readers} | ({cancel_waiter} if cancel_waiter else set())
        while not waiter.done():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait(
                watch, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for r in done & readers:
                r.result()  # a failing on_line / log write: raise, the tree is killed below
            watch -= done & readers
            if waiter.done():
                break
            if cancel_waiter is not None and cancel_waiter.done():
                cancelled = True
                break
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                break
    except BaseException as exc:  # noqa: BLE001 — CancelledError too: clean up, re-raise below
        error = exc
    # Whatever happened above, the tree is terminated before we return or raise.
    try:
        killed = await shielded_cleanup()
    except BaseException:
        if error is None:
            raise
        killed = []
    finally:
        for h in helpers:
            if not h.done():
                h.cancel()
        for r in readers:
            if r.done() and not r.cancelled():
                r.exception()  # mark retrieved
    if error is not None:
        raise error

    for r in readers:
        if r.done() and not r.cancelled() and r.exception() is not None:
            raise r.exception()  # on_line failed while draining after exit
    stopped = timed_out or cancelled
    return ProcessResult(
        exit_code=None if stopped else waiter.result(),
        timed_out=timed_out,
        cancelled=cancelled,
        stdout=pumps["stdout"].text(),
        stderr=pumps["stderr"].text(),
        duration_s=time.monotonic() - started,
        pid=proc.pid,
        killed_pids=killed,
    )


def _create_time(p: psutil.Process | None) -> float:
    # 0.0 when the agent already exited and was reaped: reap() will then never match it.
    if p is None:
        return 0.0
    try:
        return p.create_time()
    except psutil.Error:
        return 0.0
