"""The run's watchdog: EOF on its pipe (the orchestrator died) kills every process carrying
the run's marker; a goodbye (a clean end) kills nothing. Real processes, real signals."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import psutil

from tasks_lib.agents.process import MARKER_ENV
from tasks_lib.agents.watchdog import Watchdog
from tests.agents.test_process import agent, env_for, pids_announced, survivors


def _marked(tag: str, marker: str, *actions: str) -> subprocess.Popen:
    """An 'agent' of the run: carries the run's marker (plus its own), in its own session."""
    return subprocess.Popen(
        agent(tag, *actions),
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
        env={**env_for(tag), MARKER_ENV: f"{marker},{uuid.uuid4().hex}"},
    )


def _wait_marked(pid: int) -> None:
    deadline = time.monotonic() + 30
    while MARKER_ENV not in psutil.Process(pid).environ():
        assert time.monotonic() < deadline, "the agent never exec'd"
        time.sleep(0.02)


def test_eof_without_goodbye_kills_every_marked_process_and_only_those(tag):
    marker = f"run-{uuid.uuid4().hex}"
    dog = Watchdog(marker, grace_seconds=1.0)
    dog.start()
    ours = _marked(tag, marker, "announce", "leader", "daemon", "setsid-child", "sleep", "120")
    stranger = _marked(tag, f"run-{uuid.uuid4().hex}", "sleep", "120")
    try:
        pids: dict[str, int] = {}
        while len(pids) < 3:  # the leader, its daemon and its setsid child announce themselves
            pids.update(pids_announced(ours.stdout.readline()))
        _wait_marked(stranger.pid)
        watchdog = dog.proc
        assert watchdog is not None and watchdog.stdin is not None
        start = time.monotonic()
        watchdog.stdin.close()  # what the kernel does when the orchestrator dies
        assert watchdog.wait(30) == 0
        took = time.monotonic() - start
        assert ours.wait(10) < 0  # killed by a signal
        for kind in ("daemon", "setsid-child"):
            assert (
                not psutil.pid_exists(pids[kind])
                or psutil.Process(pids[kind]).status() == psutil.STATUS_ZOMBIE
            ), kind
        assert stranger.poll() is None, "a process of another run was killed"
        assert took < 20, took
    finally:
        for p in (ours, stranger):
            p.kill()
            p.wait()
            p.stdout.close()
    assert survivors(tag) == []


def test_goodbye_kills_nothing_and_the_watchdog_exits(tag):
    marker = f"run-{uuid.uuid4().hex}"
    dog = Watchdog(marker)
    dog.start()
    pid = dog.pid
    ours = _marked(tag, marker, "sleep", "120")
    try:
        _wait_marked(ours.pid)
        dog.stop()
        assert dog.proc is None and not psutil.pid_exists(pid)  # exited and reaped
        time.sleep(0.5)
        assert ours.poll() is None, "a clean stop killed the run's agent"
    finally:
        ours.kill()
        ours.wait()
        ours.stdout.close()
    assert survivors(tag) == []


def test_the_watchdog_holds_no_marker_and_its_own_session():
    dog = Watchdog(f"run-{uuid.uuid4().hex}")
    dog.start()
    try:
        p = psutil.Process(dog.pid)
        assert MARKER_ENV not in p.environ()
        assert os.getsid(dog.pid) == dog.pid != os.getsid(0)
    finally:
        dog.stop()
