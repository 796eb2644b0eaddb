"""Agents die with their orchestrator, even when no later run comes to reap them.

Regression (README "Limits" until this test): when ``specwave run`` was SIGKILLed and nothing
ran the spec again, its agents ran on until they ended by themselves — working on the user's
checkout with nobody recording what they did. Every agent tree (the agent, a child in its
group, one that escaped with ``setsid``, a double-forked daemon) must now be gone within a few
seconds of the orchestrator's death, with no later run.
"""

from __future__ import annotations

import signal
import time

from tests.reliability.conftest import agents_recorded, wait_for
from tests.reliability.test_cancellation import hanging_spec

#: orchestrator SIGKILL -> every agent process gone (the guard's own bound is ~1 s; this
#: leaves room for a loaded 2-core machine)
GONE_WITHIN_S = 15.0


def test_sigkill_of_the_orchestrator_kills_every_agent_without_a_later_run(rig, tmp_path):
    spec = hanging_spec(tmp_path)
    proc = rig.cli(
        "run",
        str(spec),
        *rig.agent_args(default="grandchild+daemon+hang"),
        "--repo",
        str(rig.repo),
        "--timeout",
        "600",
        "--json",
    )

    def agents_and_descendants() -> list:
        return [p for p in rig.processes() if p.pid != proc.pid]

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"specwave exited early: {proc.communicate()}")
        # 2 agents (wave 1), each with a child in its group, a setsid child and a daemon
        return (
            len(agents_recorded(spec)) >= 2
            and len(
                [
                    p
                    for p in agents_and_descendants()
                    if "sleep(3600)" in " ".join(p.cmdline())
                    or "fake_agent" in " ".join(p.cmdline())
                ]
            )
            >= 8
        )

    wait_for(ready, 120, "2 agents, each with 3 descendants")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    left = rig.survivors(wait=GONE_WITHIN_S)
    took = time.monotonic() - t0
    print(f"orchestrator SIGKILL -> last agent process gone in {took:.1f} s")
    assert left == [], f"agents outlived their orchestrator by {GONE_WITHIN_S} s: {left}"
