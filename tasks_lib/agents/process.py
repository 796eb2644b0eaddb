"""Agent processes, behind one interface: run one, kill a tree, reap what a dead run left.

Everything an agent kind needs from the operating system is imported from here; the work is
split by job:

* :mod:`tasks_lib.agents.supervise` — :func:`run_process_group`: spawn in a new session
  and process group (never a shell), stream stdout/stderr line by line, enforce the timeout
  and cancellation, and kill the whole tree when the agent ends, however it ends;
* :mod:`tasks_lib.agents.exits` — see the leader's exit the moment it happens (pidfd), with a
  poll where pidfds are not usable;
* :mod:`tasks_lib.agents.kill` — :func:`kill_tree` and :func:`reap`: snapshot a tree, SIGTERM,
  grace, SIGKILL, until nothing is left;
* :mod:`tasks_lib.agents.proctable` — read the process table (``/proc`` fast path, psutil
  fallback): groups, descendants, and the processes carrying a run's marker;
* :mod:`tasks_lib.agents.watchdog` — a per-run process that kills the run's agents when the
  orchestrator dies without cleaning up (even by SIGKILL).

Every agent's environment carries :data:`MARKER_ENV` (the run's marker and its own), inherited
by everything it starts, so a grandchild that called ``setsid()`` and was re-parented to init
is still found. If the orchestrator is SIGKILLed, nothing in this process runs: the run's
watchdog reaps by the run's marker, and a later run of the spec reaps what it finds recorded.

PR_SET_PDEATHSIG is deliberately not used: it needs ``preexec_fn`` (unsafe in a threaded
program such as a Prefect worker, and it disables the fast spawn path), and Linux delivers it
when the *thread* that forked the child exits, not the process — a child started from a
Prefect task's event-loop thread is SIGKILLed as soon as that thread ends (measured here), and
it never covers grandchildren anyway.
"""

from __future__ import annotations

from tasks_lib.agents.kill import kill_tree, reap
from tasks_lib.agents.proctable import MARKER_ENV, ProcessInfo
from tasks_lib.agents.supervise import (
    MAX_LINE_BYTES,
    AgentLaunchError,
    ProcessResult,
    run_process_group,
)

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
