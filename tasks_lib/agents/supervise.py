"""Running one agent process: spawn, stream, time out, cancel, and kill the tree at the end.

Prefect's task ``timeout_seconds`` does not kill subprocesses, so specwave owns the timeout
and the kill. Every agent runs in its own session and process group
(``start_new_session=True``, never a shell). When a run ends — normally, by timeout, by
cancellation or by an exception — the whole tree is terminated
(:func:`tasks_lib.agents.kill.terminate`), so an agent cannot leave daemons behind; the pids
that had to be killed after a normal exit are reported in :attr:`ProcessResult.killed_pids`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from tasks_lib.agents import exits, kill, proctable
from tasks_lib.agents.proctable import MARKER_ENV, ProcessInfo

#: A line longer than this (no newline yet) is passed to ``on_line`` in pieces of this size.
MAX_LINE_BYTES = 1 << 20
_READ_CHUNK = 1 << 16
#: How often the tracker snapshots the running agent's descendants.
_TRACK_INTERVAL_S = 1.0
#: After the tree is dead, how long to wait for the output pipes to reach EOF.
_DRAIN_TIMEOUT_S = 5.0


class AgentLaunchError(RuntimeError):
    """The agent process could not be started (missing executable, no permission, bad cwd)."""


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


@dataclass
class _Limits:
    """What stops the agent besides its own exit, and how it is stopped."""

    timeout: float | None
    grace_seconds: float
    cancel_event: asyncio.Event | None


def _launch_error(argv0: str, cwd: Path, env: dict[str, str], exc: OSError) -> AgentLaunchError:
    if isinstance(exc, FileNotFoundError) and exc.filename == str(cwd):
        what = f"working directory {str(cwd)!r} does not exist — create it or fix the path"
    elif isinstance(exc, FileNotFoundError):
        if os.sep in argv0:
            what = f"{argv0!r} not found (no such file) — install it or fix the path"
        else:
            path = env.get("PATH", os.defpath)
            what = f"{argv0!r} not found (searched PATH={path}) — install it or give its full path"
    elif isinstance(exc, PermissionError):
        what = f"{argv0!r} is not executable (permission denied) — chmod +x it or check the path"
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


async def _track(leader: psutil.Process, tracked: dict[int, psutil.Process]) -> None:
    """Remember every descendant seen while the agent runs (they may be re-parented later)."""
    while True:
        await asyncio.sleep(_TRACK_INTERVAL_S)
        try:
            children = leader.children(recursive=True)
        except psutil.Error:
            return
        for pid in [pid for pid, p in tracked.items() if proctable.gone(p)]:
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
    now_ticks = proctable.boot_ticks()
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
        supervision = _Supervision(proc, argv[0], marker, started, spawn_ticks, on_line, log_file)
        return await supervision.run(
            stdin_data, on_start, _Limits(timeout, grace_seconds, cancel_event)
        )
    finally:
        if log_file is not None:
            log_file.close()


class _Supervision:
    """One started agent, from spawn to a dead tree: its identity, its output pumps, the
    tasks that feed, track and await it, and the cleanup that runs however it ends."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        argv0: str,
        marker: str,
        started: float,
        spawn_ticks: int | None,
        on_line: Callable[[str, str], None] | None,
        log_file: IO[bytes] | None,
    ) -> None:
        self.proc = proc
        self.marker = marker
        self.started = started
        self.leader = proctable.process(proc.pid)
        # Marker search after exit: only processes started since just before the spawn (see
        # proctable.scan_proc). The bound is taken from the leader's own start (its stat)
        # when it can be read, else from the clock read before spawning; the smaller wins.
        leader_stat = proctable.proc_stat(proc.pid)
        bounds = [
            b for b in (spawn_ticks, leader_stat[2] if leader_stat else None) if b is not None
        ]
        self.not_before = min(bounds) if bounds else 0
        self.info = ProcessInfo(
            pid=proc.pid,
            pgid=proc.pid,  # start_new_session: the agent leads its own session and group
            create_time=proctable.create_time(self.leader),
            argv0=argv0,
            marker=marker,
        )
        self.tracked: dict[int, psutil.Process] = {}
        self.pumps = {
            "stdout": _Pump("stdout", on_line, log_file),
            "stderr": _Pump("stderr", on_line, log_file),
        }
        assert proc.stdout is not None and proc.stderr is not None  # PIPE above
        self.readers: set[asyncio.Future[None]] = {
            asyncio.ensure_future(self.pumps["stdout"].run(proc.stdout)),
            asyncio.ensure_future(self.pumps["stderr"].run(proc.stderr)),
        }
        self.waiter = asyncio.ensure_future(exits.wait_exit(proc))
        self.helpers: list[asyncio.Future] = [self.waiter]

    async def run(
        self,
        stdin_data: bytes | None,
        on_start: Callable[[ProcessInfo], None] | None,
        limits: _Limits,
    ) -> ProcessResult:
        if stdin_data is not None:
            assert self.proc.stdin is not None  # PIPE when there is data
            self.helpers.append(asyncio.ensure_future(_feed(self.proc.stdin, stdin_data)))
        if self.leader is not None:
            self.helpers.append(asyncio.ensure_future(_track(self.leader, self.tracked)))
        cancel_waiter = None
        if limits.cancel_event is not None:
            cancel_waiter = asyncio.ensure_future(limits.cancel_event.wait())
            self.helpers.append(cancel_waiter)

        timed_out = cancelled = False
        error: BaseException | None = None
        try:
            if on_start is not None:
                on_start(self.info)
            timed_out, cancelled = await self._watch(limits.timeout, cancel_waiter)
        except BaseException as exc:  # noqa: BLE001 — CancelledError too: clean up, re-raise
            error = exc
        # Whatever happened above, the tree is terminated before we return or raise.
        try:
            killed = await self._shielded_cleanup(limits.grace_seconds)
        except BaseException:
            if error is None:
                raise
            killed = []
        finally:
            for h in self.helpers:
                if not h.done():
                    h.cancel()
            for r in self.readers:
                if r.done() and not r.cancelled():
                    r.exception()  # mark retrieved
        if error is not None:
            raise error

        for r in self.readers:
            if r.done() and not r.cancelled() and (failure := r.exception()) is not None:
                raise failure  # on_line failed while draining after exit
        stopped = timed_out or cancelled
        return ProcessResult(
            exit_code=None if stopped else self.waiter.result(),
            timed_out=timed_out,
            cancelled=cancelled,
            stdout=self.pumps["stdout"].text(),
            stderr=self.pumps["stderr"].text(),
            duration_s=time.monotonic() - self.started,
            pid=self.proc.pid,
            killed_pids=killed,
        )

    async def _watch(
        self,
        timeout: float | None,  # noqa: ASYNC109 — see run_process_group
        cancel_waiter: asyncio.Future | None,
    ) -> tuple[bool, bool]:
        """Until the leader exits, the time limit passes or the cancel event is set:
        (timed_out, cancelled). A failing reader (``on_line``, the log) raises."""
        deadline = None if timeout is None else self.started + max(0.0, timeout)
        watch: set[asyncio.Future] = {self.waiter, *self.readers}
        if cancel_waiter is not None:
            watch.add(cancel_waiter)
        while not self.waiter.done():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait(
                watch, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for r in done & self.readers:
                r.result()  # a failing on_line / log write: raise, the tree is killed after
            watch -= done & self.readers
            if self.waiter.done():
                break
            if cancel_waiter is not None and cancel_waiter.done():
                return False, True
            if deadline is not None and time.monotonic() >= deadline:
                return True, False
        return False, False

    async def _cleanup(self, grace_seconds: float) -> list[int]:
        # The leader's descendants are snapshotted inside terminate before any signal;
        # ``tracked`` adds those seen earlier that have since been re-parented.
        roots = ([self.leader] if self.leader is not None else []) + list(self.tracked.values())
        killed = await asyncio.to_thread(
            kill.terminate,
            roots,
            {self.info.pgid},
            {self.marker},
            grace_seconds,
            self.not_before,
        )
        with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
            await asyncio.wait_for(asyncio.shield(self.waiter), kill.KILL_WAIT_S)
        # Every writer of the pipes is dead now; let the readers reach EOF (bounded: a
        # process we could not see or kill may still hold a pipe).
        pending = {r for r in self.readers if not r.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=_DRAIN_TIMEOUT_S)
        if pending:
            for r in pending:
                r.cancel()
            # Close our ends of the pipes now rather than at garbage collection (possibly
            # after the loop is closed); the process has exited, so close() kills nothing.
            transport = getattr(self.proc, "_transport", None)
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()
        for pump in self.pumps.values():
            with contextlib.suppress(Exception):
                pump.flush()
        return killed

    async def _shielded_cleanup(self, grace_seconds: float) -> list[int]:
        # Runs to completion even if our caller is cancelled (again) meanwhile.
        task = asyncio.ensure_future(self._cleanup(grace_seconds))
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


__all__ = ["MAX_LINE_BYTES", "AgentLaunchError", "ProcessResult", "run_process_group"]
