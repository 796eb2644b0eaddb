"""Tests for tasks_lib.agents.process: real subprocesses, real signals, psutil checks.

Every process a test starts carries the test's unique tag (in argv and in the
environment); each test asserts that no tagged process survives, and the ``tag``
fixture SIGKILLs any that did, so a failing test does not leak processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tasks_lib.agents import exits, proctable
from tasks_lib.agents.process import (
    MARKER_ENV,
    MAX_LINE_BYTES,
    AgentLaunchError,
    ProcessInfo,
    ProcessResult,
    kill_tree,
    reap,
    run_process_group,
)

SCRIPTS = Path(__file__).parent / "scripts"
AGENT = SCRIPTS / "fake_agent.py"
REPO = Path(__file__).resolve().parents[2]


def tagged(tag: str) -> list[psutil.Process]:
    """Live (non-zombie) processes carrying ``tag`` in argv or environment."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            in_env = tag in p.environ().get("SPECWAVE_TEST_TAG", "")
            if in_env or any(tag in a for a in p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def survivors(tag: str) -> list[tuple[int, list[str]]]:
    out = []
    for p in tagged(tag):
        try:
            out.append((p.pid, p.cmdline()))
        except psutil.Error:
            pass
    return out


@pytest.fixture
def tag():
    value = f"swtest-{uuid.uuid4().hex}"
    yield value
    for p in tagged(value):  # leak guard only; tests assert survivors() == [] themselves
        try:
            p.kill()
        except psutil.Error:
            pass


def agent(tag: str, *actions: str) -> list[str]:
    return [sys.executable, str(AGENT), "--tag", tag, *actions]


def env_for(tag: str) -> dict[str, str]:
    return {**os.environ, "SPECWAVE_TEST_TAG": tag}


def pids_announced(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        if line.startswith("PID "):
            _, kind, pid = line.split()
            out[kind] = int(pid)
    return out


async def run(tag: str, *actions: str, tmp: Path, **kw) -> ProcessResult:
    return await run_process_group(agent(tag, *actions), cwd=tmp, env=env_for(tag), **kw)


# ------------------------------------------------------------------ normal runs


async def test_normal_exit_returns_code_output_and_leaves_nothing(tag, tmp_path):
    res = await run(tag, "lines", "3", "exit", "3", tmp=tmp_path)
    assert res.exit_code == 3
    assert not res.timed_out and not res.cancelled
    assert res.stdout == "out 0\nout 1\nout 2\n"
    assert res.stderr == "err 0\nerr 1\nerr 2\n"
    assert res.killed_pids == []
    assert res.duration_s > 0
    assert survivors(tag) == []


async def test_agent_leads_its_own_session_and_group_and_gets_marker(tag, tmp_path):
    res = await run(tag, "session", tmp=tmp_path)
    _, pid, pgid, sid = res.stdout.split()
    assert int(pid) == int(pgid) == int(sid) == res.pid
    assert res.pid != os.getpid() and int(sid) != os.getsid(0)


async def test_marker_env_is_added_and_nested_marker_kept(tag, tmp_path):
    seen: list[ProcessInfo] = []
    argv = [sys.executable, "-c", f"import os; print(os.environ[{MARKER_ENV!r}])"]
    env = {**env_for(tag), MARKER_ENV: "outer"}
    res = await run_process_group(argv, cwd=tmp_path, env=env, on_start=seen.append)
    assert res.stdout.strip() == f"outer,{seen[0].marker}"
    assert len(seen[0].marker) == 32
    assert env[MARKER_ENV] == "outer"  # the caller's dict is not modified


async def test_on_start_reports_identity(tag, tmp_path):
    infos: list[ProcessInfo] = []
    snapshot = {}

    def on_start(info: ProcessInfo) -> None:
        infos.append(info)
        p = psutil.Process(info.pid)
        snapshot["create_time"] = p.create_time()
        snapshot["pgid"] = os.getpgid(info.pid)

    res = await run(tag, "sleep", "0.2", tmp=tmp_path, on_start=on_start)
    (info,) = infos
    assert info.pid == res.pid
    assert info.pgid == snapshot["pgid"] == info.pid
    assert info.create_time == snapshot["create_time"]
    assert info.argv0 == sys.executable


def test_process_info_round_trips_through_json():
    info = ProcessInfo(pid=12, pgid=12, create_time=1712345678.123456, argv0="claude", marker="ab")
    assert ProcessInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    old = {"pid": 1, "pgid": 1, "create_time": 2.5, "argv0": "x"}  # no marker: older record
    assert ProcessInfo.from_dict(old).marker == ""
    with pytest.raises(ValueError, match="damaged"):
        ProcessInfo.from_dict({"pid": 1})


async def test_on_line_order_per_stream(tag, tmp_path):
    got: list[tuple[str, str]] = []
    res = await run(tag, "lines", "300", tmp=tmp_path, on_line=lambda s, l: got.append((s, l)))
    assert [l for s, l in got if s == "stdout"] == [f"out {i}" for i in range(300)]
    assert [l for s, l in got if s == "stderr"] == [f"err {i}" for i in range(300)]
    assert res.stdout.splitlines() == [l for s, l in got if s == "stdout"]


async def test_on_line_is_called_while_the_agent_runs(tag, tmp_path):
    first_line_at: list[float] = []
    start = time.monotonic()
    res = await run(
        tag,
        "lines",
        "1",
        "sleep",
        "2",
        tmp=tmp_path,
        on_line=lambda s, l: first_line_at.append(time.monotonic() - start),
    )
    assert res.duration_s >= 2
    assert first_line_at and first_line_at[0] < res.duration_s - 1.0


async def test_log_path_gets_combined_output_appended(tag, tmp_path):
    log = tmp_path / "agent.log"
    log.write_bytes(b"earlier run\n")
    await run(tag, "lines", "50", "garbage", tmp=tmp_path, log_path=log)
    data = log.read_bytes()
    assert data.startswith(b"earlier run\n")
    lines = data.splitlines()[1:]
    assert [l for l in lines if l.startswith(b"out ")] == [b"out %d" % i for i in range(50)]
    assert [l for l in lines if l.startswith(b"err ")] == [b"err %d" % i for i in range(50)]
    assert b"ok \xff\xfe bad \xc3(" in lines  # raw bytes, not re-encoded
    assert len(lines) == 102


async def test_log_is_written_while_the_agent_runs(tag, tmp_path):
    log = tmp_path / "agent.log"
    task = asyncio.ensure_future(
        run(
            tag,
            "lines",
            "2",
            "sleep",
            "30",
            tmp=tmp_path,
            log_path=log,
            timeout=60,
            grace_seconds=1,
        )
    )
    try:

        def lines_now() -> int:
            return log.read_bytes().count(b"\n") if log.exists() else 0

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and lines_now() < 4:
            await asyncio.sleep(0.05)
        assert sorted(log.read_bytes().splitlines()) == [b"err 0", b"err 1", b"out 0", b"out 1"]
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert survivors(tag) == []


async def test_several_megabytes_on_both_streams_do_not_deadlock(tag, tmp_path):
    # stderr first: a runner that read stdout to EOF before stderr would block forever.
    count = {"stdout": 0, "stderr": 0}

    def on_line(stream: str, line: str) -> None:
        count[stream] += 1

    res = await run(
        tag,
        "big-stderr",
        "5",
        "big-stdout",
        "5",
        tmp=tmp_path,
        on_line=on_line,
        log_path=tmp_path / "big.log",
        timeout=120,
    )
    n = 5 * 1024 * 1024 // 100
    assert res.exit_code == 0 and not res.timed_out
    assert len(res.stdout) == len(res.stderr) == n * 100
    assert count == {"stdout": n, "stderr": n}
    assert (tmp_path / "big.log").stat().st_size == 2 * n * 100


async def test_long_line_without_newline_arrives_in_pieces(tag, tmp_path):
    size = 3 * MAX_LINE_BYTES + 123
    got: list[str] = []
    res = await run(
        tag,
        "long-line",
        str(size),
        tmp=tmp_path,
        on_line=lambda s, l: got.append(l),
        log_path=tmp_path / "l.log",
    )
    assert res.stdout == "x" * size
    assert [len(x) for x in got] == [MAX_LINE_BYTES] * 3 + [123]
    assert (tmp_path / "l.log").read_bytes().replace(b"\n", b"") == b"x" * size


async def test_invalid_utf8_is_replaced_not_raised(tag, tmp_path):
    got: list[tuple[str, str]] = []
    res = await run(tag, "garbage", tmp=tmp_path, on_line=lambda s, l: got.append((s, l)))
    assert res.stdout == "ok \ufffd\ufffd bad \ufffd(\n"
    assert res.stderr == "\ufffd\ufffd\n"
    assert got == [
        ("stdout", "ok \ufffd\ufffd bad \ufffd("),
        ("stderr", "\ufffd\ufffd"),
    ] or got == [("stderr", "\ufffd\ufffd"), ("stdout", "ok \ufffd\ufffd bad \ufffd(")]


async def test_stdin_is_fed_then_closed(tag, tmp_path):
    data = os.urandom(300_000).hex().encode()  # bigger than a pipe buffer
    res = await run(tag, "echo-stdin", tmp=tmp_path, stdin_data=data)
    assert res.exit_code == 0 and res.stdout.encode() == data


async def test_without_stdin_data_stdin_is_devnull(tag, tmp_path):
    res = await run(tag, "echo-stdin", tmp=tmp_path, timeout=30)
    assert res.exit_code == 0 and res.stdout == "" and not res.timed_out


async def test_agent_that_does_not_read_stdin_does_not_break_the_run(tag, tmp_path):
    res = await run(tag, "exit", "0", tmp=tmp_path, stdin_data=b"z" * 2_000_000)
    assert res.exit_code == 0


# ------------------------------------------------------------------ killing


async def test_timeout_kills_group_and_escaped_grandchild(tag, tmp_path):
    res = await run(
        tag, "child", "setsid-child", "sleep", "120", tmp=tmp_path, timeout=2, grace_seconds=5
    )
    pids = pids_announced(res.stdout)
    assert set(pids) == {"child", "setsid-child"}
    assert res.timed_out and res.exit_code is None and not res.cancelled
    assert {res.pid, pids["child"], pids["setsid-child"]} <= set(res.killed_pids)
    assert res.duration_s < 60
    assert survivors(tag) == []


async def test_sigterm_ignored_escalates_to_sigkill_after_grace(tag, tmp_path):
    # The leader and an escaped grandchild both ignore SIGTERM.
    res = await run(
        tag,
        "ignore-term",
        "setsid-child",
        "sleep",
        "120",
        tmp=tmp_path,
        timeout=1,
        grace_seconds=0.5,
    )
    pids = pids_announced(res.stdout)
    assert res.timed_out and res.exit_code is None
    assert {res.pid, pids["setsid-child"]} <= set(res.killed_pids)
    # timeout 1 s + grace 0.5 s before SIGKILL: shorter means the grace was skipped; 60 s or
    # more means nothing was killed (the processes sleep 120 s)
    assert 1.5 <= res.duration_s < 60
    assert survivors(tag) == []


async def test_sigterm_is_sent_first(tag, tmp_path):
    # A plain sleeper dies from SIGTERM well within a long grace; no need to wait for it.
    res = await run(tag, "sleep", "120", tmp=tmp_path, timeout=0.5, grace_seconds=30)
    assert res.timed_out and res.duration_s < 20
    assert survivors(tag) == []


async def test_normal_exit_kills_background_daemon_and_group_leftovers(tag, tmp_path):
    res = await run(
        tag,
        "child",
        "setsid-child",
        "daemon",
        "sleep",
        "1.5",
        "exit",
        "0",
        tmp=tmp_path,
        grace_seconds=2,
        timeout=60,
    )
    pids = pids_announced(res.stdout)
    assert set(pids) == {"child", "setsid-child", "daemon"}
    assert res.exit_code == 0 and not res.timed_out
    assert set(res.killed_pids) == set(pids.values())
    assert res.pid not in res.killed_pids
    assert survivors(tag) == []


async def test_daemon_started_just_before_exit_is_found_by_marker(tag, tmp_path):
    # The leader exits before the tracker's first snapshot: only the marker finds it.
    res = await run(tag, "daemon", "exit", "0", tmp=tmp_path, grace_seconds=2, timeout=60)
    pids = pids_announced(res.stdout)
    assert res.exit_code == 0
    assert res.killed_pids == [pids["daemon"]]
    assert survivors(tag) == []


async def test_tracker_finds_escaped_child_without_marker(tag, tmp_path):
    # env={} and setsid: neither group nor marker finds it once the leader has exited;
    # the once-a-second descendant snapshot taken while the leader ran does.
    res = await run(tag, "scrubbed-child", "sleep", "3", tmp=tmp_path, timeout=60)
    pids = pids_announced(res.stdout)
    assert res.exit_code == 0
    assert res.killed_pids == [pids["scrubbed-child"]]
    assert survivors(tag) == []


async def test_task_cancel_kills_tree_and_reraises(tag, tmp_path):
    started = asyncio.Event()
    lines: list[str] = []

    def on_line(stream: str, line: str) -> None:
        lines.append(line)
        if len([l for l in lines if l.startswith("PID ")]) == 2:
            started.set()

    task = asyncio.ensure_future(
        run(
            tag,
            "child",
            "setsid-child",
            "sleep",
            "120",
            tmp=tmp_path,
            on_line=on_line,
            grace_seconds=5,
        )
    )
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert survivors(tag) == []


async def test_cleanup_finishes_even_when_cancelled_twice(tag, tmp_path):
    seen = asyncio.Event()
    task = asyncio.ensure_future(
        run(
            tag,
            "ignore-term",
            "setsid-child",
            "sleep",
            "120",
            tmp=tmp_path,
            grace_seconds=1,
            on_line=lambda s, l: seen.set(),
        )
    )
    await asyncio.wait_for(seen.wait(), 30)
    task.cancel()
    await asyncio.sleep(0.2)  # now inside the (1 s) grace period
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert survivors(tag) == []


async def test_wait_for_timeout_of_caller_also_kills(tag, tmp_path):
    # The caller's own timeout (Prefect cancelling the task run) is a cancellation too.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(run(tag, "child", "sleep", "120", tmp=tmp_path), 1.5)
    assert survivors(tag) == []


async def test_cancel_event_stops_and_returns_result(tag, tmp_path):
    stop = asyncio.Event()

    def on_line(stream: str, line: str) -> None:
        if line.startswith("PID"):
            stop.set()

    res_task = asyncio.ensure_future(
        run(
            tag,
            "lines",
            "1",
            "child",
            "sleep",
            "120",
            tmp=tmp_path,
            cancel_event=stop,
            on_line=on_line,
        )
    )
    res = await asyncio.wait_for(res_task, 60)
    assert res.cancelled and not res.timed_out and res.exit_code is None
    assert res.pid in res.killed_pids
    assert "out 0" in res.stdout
    assert survivors(tag) == []


async def test_failing_on_line_kills_tree_and_raises(tag, tmp_path):
    def on_line(stream: str, line: str) -> None:
        if line.startswith("PID child"):
            raise RuntimeError("logger broke")

    with pytest.raises(RuntimeError, match="logger broke"):
        await run(tag, "child", "sleep", "120", tmp=tmp_path, on_line=on_line)
    assert survivors(tag) == []


async def test_failing_on_start_kills_tree_and_raises(tag, tmp_path):
    def on_start(info: ProcessInfo) -> None:
        raise OSError("run folder not writable")

    with pytest.raises(OSError, match="not writable"):
        await run(tag, "child", "sleep", "120", tmp=tmp_path, on_start=on_start)
    assert survivors(tag) == []


# ------------------------------------------------------------------ launch errors


async def test_missing_executable_is_a_launch_error(tmp_path):
    name = f"no-such-agent-{uuid.uuid4().hex[:8]}"
    match = rf"cannot start agent: '{name}' not found \(searched PATH="
    with pytest.raises(AgentLaunchError, match=match):
        await run_process_group([name, "-p"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})


async def test_missing_executable_path_is_a_launch_error(tmp_path):
    missing = str(tmp_path / "bin" / "claude")
    with pytest.raises(AgentLaunchError, match="not found .no such file. — install it or fix"):
        await run_process_group([missing], cwd=tmp_path, env={})


async def test_non_executable_file_is_a_launch_error(tmp_path):
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    match = r"is not executable \(permission denied\) — chmod \+x"
    with pytest.raises(AgentLaunchError, match=match):
        await run_process_group([str(script)], cwd=tmp_path, env={})


async def test_missing_cwd_is_a_launch_error(tmp_path):
    with pytest.raises(AgentLaunchError, match="working directory .* does not exist"):
        await run_process_group([sys.executable, "-V"], cwd=tmp_path / "gone", env={})


async def test_empty_argv_is_a_launch_error(tmp_path):
    with pytest.raises(AgentLaunchError, match="empty command"):
        await run_process_group([], cwd=tmp_path, env={})


# ------------------------------------------------------------------ reap / kill_tree


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_reap_kills_agents_of_a_kill9ed_orchestrator(tag, tmp_path):
    info_path, log_path = tmp_path / "procs.json", tmp_path / "agent.log"
    launcher = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "orphan_launcher.py"), str(info_path), str(log_path), tag],
        env={**env_for(tag), "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    try:
        wait_for(
            lambda: (
                info_path.exists()
                and log_path.exists()
                and len(pids_announced(log_path.read_text())) == 3
            ),
            60,
            "agent tree",
        )
    finally:
        launcher.kill()  # SIGKILL: the launcher's own cleanup never runs
        launcher.wait()
    pids = pids_announced(log_path.read_text())
    (info,) = [ProcessInfo.from_dict(d) for d in json.loads(info_path.read_text())]
    assert psutil.pid_exists(info.pid)
    assert {p.pid for p in tagged(tag)} >= {info.pid, *pids.values()}  # the tree outlived it

    killed = reap([info], grace_seconds=2)
    assert set(killed) == {info.pid, *pids.values()}
    assert survivors(tag) == []
    assert reap([info]) == []  # second call: nothing left, nothing signalled


def test_reap_leaves_alone_a_pid_with_another_create_time(tag):
    other = subprocess.Popen(agent(tag, "sleep", "120"), start_new_session=True)
    try:
        ctime = psutil.Process(other.pid).create_time()
        stale = ProcessInfo(pid=other.pid, pgid=other.pid, create_time=ctime - 60, argv0="claude")
        assert reap([stale], grace_seconds=0.5) == []
        time.sleep(0.3)
        assert other.poll() is None  # still running
        fresh = ProcessInfo(pid=other.pid, pgid=other.pid, create_time=ctime, argv0="claude")
        assert reap([fresh], grace_seconds=2) == [other.pid]
        assert other.wait(timeout=10) == -signal.SIGTERM
    finally:
        other.kill()
        other.wait()
    assert survivors(tag) == []


def test_reap_finds_daemons_by_marker_after_their_leader_exited(tag):
    marker = uuid.uuid4().hex
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    daemon = subprocess.Popen(
        agent(tag, "sleep", "120"),
        start_new_session=True,
        env={**env_for(tag), MARKER_ENV: f"outer,{marker}"},
    )
    bystander = subprocess.Popen(
        agent(tag, "sleep", "120"),
        start_new_session=True,
        env={**env_for(tag), MARKER_ENV: uuid.uuid4().hex},
    )
    try:
        wait_for(lambda: MARKER_ENV in psutil.Process(daemon.pid).environ(), 30, "daemon exec")
        info = ProcessInfo(
            pid=dead.pid, pgid=dead.pid, create_time=0.0, argv0="claude", marker=marker
        )
        assert reap([info], grace_seconds=2) == [daemon.pid]
        assert daemon.wait(timeout=10) == -signal.SIGTERM
        assert bystander.poll() is None
    finally:
        for p in (daemon, bystander):
            p.kill()
            p.wait()
    assert survivors(tag) == []


def test_reap_of_dead_pid_without_marker_is_a_no_op():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert reap([ProcessInfo(pid=p.pid, pgid=p.pid, create_time=time.time(), argv0="x")]) == []


def test_kill_tree_kills_group_and_escaped_descendants(tag):
    leader = subprocess.Popen(
        agent(tag, "ignore-term", "child", "setsid-child", "sleep", "120"),
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pids = {}
        while len(pids) < 2:
            pids.update(pids_announced(leader.stdout.readline()))
        start = time.monotonic()
        killed = kill_tree(leader.pid, leader.pid, grace_seconds=0.5)
        assert time.monotonic() - start >= 0.5  # the leader ignored SIGTERM: waited, then SIGKILL
        assert set(killed) == {leader.pid, *pids.values()}
        assert leader.wait(timeout=10) == -signal.SIGKILL
    finally:
        leader.kill()
        leader.wait()
        leader.stdout.close()
    assert survivors(tag) == []


def test_kill_tree_never_signals_the_caller_or_its_group():
    # A damaged record naming the orchestrator itself must not make it kill itself.
    code = (
        "import os; from tasks_lib.agents.process import kill_tree; "
        "print(kill_tree(os.getpid(), os.getpgrp(), grace_seconds=0.1))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ exit detection, sweep cost

PIDFD = hasattr(os, "pidfd_open") and hasattr(os, "P_PIDFD")


def _pidfd_works() -> bool:
    if not PIDFD:
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
        return True
    except OSError:
        return False


needs_pidfd = pytest.mark.skipif(not _pidfd_works(), reason="no pidfd here (Linux >= 5.4)")


@needs_pidfd
async def test_leader_exit_is_an_event_not_a_poll(tag, tmp_path, monkeypatch):
    # With the fallback poll set to 60 s, only the pidfd can see the exits this soon.
    monkeypatch.setattr(proctable, "POLL_S", 60.0)
    res = await run(tag, "sleep", "0.3", "exit", "5", tmp=tmp_path, timeout=120)
    assert res.exit_code == 5 and res.duration_s < 30
    argv = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    res = await run_process_group(argv, cwd=tmp_path, env=env_for(tag), timeout=120)
    assert res.exit_code == -signal.SIGKILL and res.duration_s < 30
    assert survivors(tag) == []


@needs_pidfd
def test_peek_child_reads_the_exit_code_without_reaping(tag):
    child = subprocess.Popen(agent(tag, "sleep", "120"), start_new_session=True)
    fd = os.pidfd_open(child.pid)
    try:
        assert exits.peek_child(fd) == ("running", None)
        child.kill()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        assert poller.poll(30_000), "pidfd never became readable"
        assert exits.peek_child(fd) == ("exited", -signal.SIGKILL)
        assert exits.peek_child(fd) == ("exited", -signal.SIGKILL)  # still not reaped
        assert child.wait(timeout=10) == -signal.SIGKILL  # the owner reaps it as usual
        assert exits.peek_child(fd) == ("reaped", None)
    finally:
        os.close(fd)
        child.kill()
        child.wait()
    assert survivors(tag) == []


@pytest.mark.parametrize("pidfd_open_error", [None, ProcessLookupError, PermissionError])
async def test_exit_code_without_a_usable_pidfd(tag, tmp_path, monkeypatch, pidfd_open_error):
    # No pidfd support at all; the leader already reaped when pidfd_open runs (ESRCH); a
    # pidfd_open refused (seccomp). Each falls back to asyncio's returncode; leftovers die.
    if pidfd_open_error is None:
        monkeypatch.setattr(proctable, "HAVE_PIDFD", False)
    else:

        def refuse(pid: int) -> int:
            raise pidfd_open_error(f"pidfd_open({pid}) refused by the test")

        monkeypatch.setattr(proctable, "HAVE_PIDFD", True)
        monkeypatch.setattr(proctable.os, "pidfd_open", refuse, raising=False)
    res = await run(
        tag, "daemon", "sleep", "0.2", "exit", "4", tmp=tmp_path, grace_seconds=2, timeout=60
    )
    pids = pids_announced(res.stdout)
    assert res.exit_code == 4 and not res.timed_out
    assert res.killed_pids == [pids["daemon"]]
    assert survivors(tag) == []


async def test_exit_code_of_a_leader_that_exits_at_once(tag, tmp_path):
    # Often reaped by asyncio's watcher before the pidfd can be opened: the code still comes.
    for code in (0, 1, 7):
        argv = [sys.executable, "-S", "-c", f"raise SystemExit({code})"]
        res = await run_process_group(argv, cwd=tmp_path, env=env_for(tag), timeout=60)
        assert res.exit_code == code
    assert survivors(tag) == []


@needs_pidfd
def test_kill_waits_for_exits_as_events(tag, monkeypatch):
    # Group member, setsid'd grandchild (not our child) and the leader (our child, left a
    # zombie until reaped) all die on SIGTERM; a 60 s fallback poll would show.
    monkeypatch.setattr(proctable, "POLL_S", 60.0)
    leader = subprocess.Popen(
        agent(tag, "child", "setsid-child", "sleep", "120"),
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pids = {}
        while len(pids) < 2:
            pids.update(pids_announced(leader.stdout.readline()))
        start = time.monotonic()
        killed = kill_tree(leader.pid, leader.pid, grace_seconds=30)
        assert time.monotonic() - start < 20
        assert set(killed) == {leader.pid, *pids.values()}
        assert leader.wait(timeout=10) == -signal.SIGTERM
    finally:
        leader.kill()
        leader.wait()
        leader.stdout.close()
    assert survivors(tag) == []


def test_proc_scan_finds_group_members_and_marked_processes(tag):
    marker = uuid.uuid4().hex
    before = proctable.boot_ticks()
    marked = subprocess.Popen(
        agent(tag, "sleep", "120"),
        start_new_session=True,
        env={**env_for(tag), MARKER_ENV: f"outer,{marker}"},
    )
    other = subprocess.Popen(
        agent(tag, "sleep", "120"),
        start_new_session=True,
        env={**env_for(tag), MARKER_ENV: uuid.uuid4().hex},
    )
    try:
        wait_for(lambda: MARKER_ENV in psutil.Process(marked.pid).environ(), 30, "exec")
        wait_for(lambda: MARKER_ENV in psutil.Process(other.pid).environ(), 30, "exec")
        scan = proctable.scan_proc
        assert scan(set(), {marker}, set(), 0) == [marked.pid]
        assert scan(set(), {marker}, set(), before) == [marked.pid]
        assert sorted(scan({other.pid}, {marker}, set(), 0)) == sorted([marked.pid, other.pid])
        assert scan(set(), {marker}, {marked.pid}, 0) == []
        # The start-time bound only limits the marker search, never the group's members.
        assert scan({other.pid}, {marker}, set(), before + 10**9) == [other.pid]
        # The same answer as the portable (psutil) search.
        exclude = proctable.own_lineage()
        fast = proctable.collect([], {other.pid}, {marker}, exclude, before)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(proctable, "scan_proc", lambda *a: None)
            slow = proctable.collect([], {other.pid}, {marker}, exclude)
        assert sorted(fast) == sorted(slow) == sorted([marked.pid, other.pid])
        # A zombie counts as gone.
        marked.kill()
        wait_for(lambda: psutil.Process(marked.pid).status() == psutil.STATUS_ZOMBIE, 30, "zombie")
        assert scan(set(), {marker}, set(), 0) == []
    finally:
        for p in (marked, other):
            p.kill()
            p.wait()
    assert survivors(tag) == []


def test_own_lineage_matches_psutil():
    expected = {os.getpid()} | {p.pid for p in psutil.Process().parents()}
    assert proctable.own_lineage() == expected
