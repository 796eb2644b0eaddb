"""Where does a worker's start time go? Instrument one ``execute_spec`` run, in process.

    python benchmarks/probe_latency.py [SPEC] [--seconds 0.5] [-j N] [--scheduler eager]

Without SPEC it runs a copy of examples/checkout-api. Each task's timeline is stamped, without
changing the engine, by wrapping:

* ``Scheduler.start``            → t0 (the flow loop decided to start it)
* ``RunFolder.attempts`` in tasks_lib.tasks (first line of the ``run_worker`` body) → t1
* ``RunFolder.record_agent``     → t2 (the agent process exists)
* ``RunFolder.write_attempt``    → t3 (the agent ended, the record is written)
* ``Scheduler.finish``           → t4 (the flow loop saw the task run end)

and prints percentiles of t1-t0 (task-run start), t2-t1 (launch), t3-t2 (agent),
t4-t3 (task-run end), plus event-loop lag (a 10 ms ticker) and the HTTP requests made,
per path and status (httpx hook).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIM = ROOT / "examples" / "agents" / "simulated_agent.py"


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?")
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--durations")
    ap.add_argument(
        "--sh",
        action="store_true",
        help="agent = benchmarks/sim_agent.sh (durations from SPEC/durations.txt)",
    )
    ap.add_argument("-j", "--max-concurrency", type=int, default=None)
    ap.add_argument("--scheduler", default="eager")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="cProfile the event-loop thread; print the top N by own time",
    )
    ap.add_argument(
        "--poll",
        type=float,
        default=None,
        help="what-if: agents.proctable.POLL_S (exit poll where no pidfd is usable)",
    )
    ap.add_argument(
        "--quiet-logs",
        action="store_true",
        help="PREFECT_LOGGING_LEVEL=WARNING (no per-line logs to the API)",
    )
    a = ap.parse_args()
    if a.quiet_logs:
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    for h in ("", "_FLOW_RUNS", "_TASK_RUNS"):  # as `specwave run` does (console only)
        os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_CONSOLE{h}_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    import httpx

    import tasks_lib.tasks as tasks_mod
    from flows.execute_spec import execute_spec
    from tasks_lib.runfolder import RunFolder
    from tasks_lib.scheduler import Scheduler

    stamps: dict[str, dict[str, float]] = collections.defaultdict(dict)
    cpu: dict[str, float] = {}
    requests: collections.Counter = collections.Counter()
    slow: list[tuple[float, str]] = []

    orig_start, orig_finish = Scheduler.start, Scheduler.finish

    def start(self, n):
        stamps[n]["t0"] = time.perf_counter()
        cpu.setdefault("first", time.process_time())
        return orig_start(self, n)

    def finish(self, n, *args, **kw):
        stamps[n]["t4"] = time.perf_counter()
        cpu["last"] = time.process_time()
        return orig_finish(self, n, *args, **kw)

    Scheduler.start, Scheduler.finish = start, finish

    class ProbeFolder(RunFolder):
        def attempts(self, task_id):
            stamps[task_id].setdefault("t1", time.perf_counter())
            return super().attempts(task_id)

        def record_agent(self, info):
            stamps[info["task_id"]]["t2"] = time.perf_counter()
            pid_task[info["pid"]] = info["task_id"]
            return super().record_agent(info)

        def write_attempt(self, record):
            stamps[record.task_id]["t3"] = time.perf_counter()
            return super().write_attempt(record)

    tasks_mod.RunFolder = ProbeFolder

    # Prefect's task engine: tag concurrency-limit acquisition (one lookup per tag set)
    import contextlib

    import prefect.task_engine as te
    from prefect.context import TaskRunContext

    orig_acq = te._aconcurrency

    @contextlib.asynccontextmanager
    async def aconcurrency(*args, **kw):
        holder = kw.get("holder")
        tid = _tid_of(holder)
        if tid:
            stamps[tid]["c0"] = time.perf_counter()
        async with orig_acq(*args, **kw):
            if tid:
                stamps[tid]["c1"] = time.perf_counter()
            yield

    te._aconcurrency = aconcurrency

    # agents.process: when the leader's exit is seen, when the cleanup sweep (a thread) runs
    from tasks_lib.agents import exits, kill, proctable

    orig_wait_exit, orig_terminate = exits.wait_exit, kill.terminate
    pid_task: dict[int, str] = {}

    async def wait_exit(proc):
        code = await orig_wait_exit(proc)
        tid = pid_task.get(proc.pid)
        if tid:
            stamps[tid]["x1"] = time.perf_counter()
        return code

    def terminate(roots, pgids, *args, **kwargs):  # whatever else kill.terminate takes
        tid = next((pid_task.get(g) for g in pgids if g in pid_task), None)
        if tid:
            stamps[tid]["x2"] = time.perf_counter()
        c0 = time.thread_time()
        try:
            return orig_terminate(roots, pgids, *args, **kwargs)
        finally:
            cpu["sweeps"] = cpu.get("sweeps", 0.0) + time.thread_time() - c0
            if tid:
                stamps[tid]["x3"] = time.perf_counter()

    exits.wait_exit, kill.terminate = wait_exit, terminate
    if a.poll is not None:
        proctable.POLL_S = a.poll

    # the plan file: how many writes, how long (wall and the writing thread's CPU)
    from tasks_lib.store import PlanStore

    orig_apply = PlanStore.apply

    def apply(self, *updates, **kw):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return orig_apply(self, *updates, **kw)
        finally:
            cpu["store_n"] = cpu.get("store_n", 0) + 1
            cpu["store_wall"] = cpu.get("store_wall", 0.0) + time.perf_counter() - t
            cpu["store_cpu"] = cpu.get("store_cpu", 0.0) + time.thread_time() - c

    PlanStore.apply = apply

    def _tid_of(holder):
        ctx = TaskRunContext.get()
        if ctx is None:
            return None
        name = ctx.task_run.name or ""
        return name.split(":", 1)[0] if ":" in name else None

    orig_send = httpx.AsyncClient.send

    async def send(self, request, *args, **kw):
        t = time.perf_counter()
        try:
            resp = await orig_send(self, request, *args, **kw)
        except Exception as exc:
            requests[(request.method, _route(request.url.path), type(exc).__name__)] += 1
            raise
        dt = time.perf_counter() - t
        requests[(request.method, _route(request.url.path), resp.status_code)] += 1
        if dt > 0.2:
            slow.append((dt, f"{request.method} {request.url.path} {resp.status_code}"))
        return resp

    httpx.AsyncClient.send = send
    orig_sync_send = httpx.Client.send

    def sync_send(self, request, *args, **kw):
        t = time.perf_counter()
        try:
            resp = orig_sync_send(self, request, *args, **kw)
        except Exception as exc:
            requests[("sync " + request.method, _route(request.url.path), type(exc).__name__)] += 1
            raise
        dt = time.perf_counter() - t
        requests[("sync " + request.method, _route(request.url.path), resp.status_code)] += 1
        if dt > 0.2:
            slow.append((dt, f"sync {request.method} {request.url.path} {resp.status_code}"))
        return resp

    httpx.Client.send = sync_send

    tmp = Path(tempfile.mkdtemp(prefix="specwave-probe-"))
    src = Path(a.spec) if a.spec else ROOT / "examples" / "checkout-api"
    folder = tmp / src.name
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns(".specwave"))
    (tmp / "repo").mkdir()
    cmd = [sys.executable, str(SIM)] + (
        ["--durations", a.durations] if a.durations else ["--seconds", str(a.seconds)]
    )
    if a.sh:
        cmd = ["sh", str(ROOT / "benchmarks" / "sim_agent.sh"), str(folder / "durations.txt")]
    lags: list[float] = []
    T0 = [0.0, 0.0]

    async def ticker():
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    async def go():
        tick = asyncio.create_task(ticker())
        t = T0[0] = time.perf_counter()
        state = await execute_spec(
            str(folder),
            agent={"kind": "command", "command": cmd},
            repo=str(tmp / "repo"),
            max_concurrency=a.max_concurrency,
            scheduler=a.scheduler,
            return_state=True,
        )
        T0[1] = time.perf_counter()
        wall = T0[1] - t
        tick.cancel()
        return state, wall

    load = os.getloadavg()[0]
    if a.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        state, wall = prof.runcall(asyncio.run, go())
    else:
        state, wall = asyncio.run(go())
    print(
        f"state {state.type.value}; wall {wall:.2f} s; load {load:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    t_first = min(s["t0"] for s in stamps.values() if "t0" in s)
    t_last = max(s["t4"] for s in stamps.values() if "t4" in s)
    print(
        f"flow call → first start {t_first - T0[0]:.2f} s; first start → last finish "
        f"{t_last - t_first:.2f} s; last finish → flow return {T0[1] - t_last:.2f} s"
    )
    print(
        f"orchestrator CPU (all threads) first start → last finish: "
        f"{(cpu['last'] - cpu['first']) * 1000 / len(stamps):.1f} ms per task, of which "
        f"process-tree sweeps (threads) {cpu.get('sweeps', 0) * 1000 / len(stamps):.1f} ms"
    )
    print(
        f"plan file: {cpu.get('store_n', 0)} writes, {cpu.get('store_wall', 0):.2f} s wall, "
        f"{cpu.get('store_cpu', 0):.2f} s CPU"
    )
    rows = [
        ("c0-t0 start→tagconc", "t0", "c0"),
        ("c1-c0 tag conc.", "c0", "c1"),
        ("t1-c1 →body", "c1", "t1"),
        ("t1-t0 start→body", "t0", "t1"),
        ("t2-t1 body→spawn", "t1", "t2"),
        ("x1-t2 spawn→exit seen", "t2", "x1"),
        ("x2-x1 →sweep start", "x1", "x2"),
        ("x3-x2 sweep", "x2", "x3"),
        ("t3-x3 →record", "x3", "t3"),
        ("t3-t2 agent", "t2", "t3"),
        ("t4-t3 end→flow", "t3", "t4"),
        ("t4-t0 total", "t0", "t4"),
    ]
    print(f"{'phase':<20}{'n':>4}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}{'mean ms':>9}")
    for label, x, y in rows:
        d = [(s[y] - s[x]) * 1000 for s in stamps.values() if x in s and y in s]
        print(
            f"{label:<20}{len(d):>4}{pct(d, 0.5):>9.1f}{pct(d, 0.9):>9.1f}"
            f"{max(d, default=0):>9.1f}{statistics.fmean(d) if d else 0:>9.1f}"
        )
    print(
        f"event-loop lag: p50 {pct(lags, 0.5) * 1000:.1f} ms, p99 {pct(lags, 0.99) * 1000:.1f} ms, "
        f"max {max(lags, default=0) * 1000:.1f} ms"
    )
    order = sorted((s for s in stamps.values() if "t0" in s and "t4" in s), key=lambda s: s["t0"])
    gaps = [b["t0"] - a["t4"] for a, b in zip(order, order[1:]) if b["t0"] > a["t4"]]
    if gaps:
        print(
            f"chain gap (flow saw a task end → it started the next), when sequential: "
            f"p50 {pct(gaps, 0.5) * 1000:.1f} ms over {len(gaps)}"
        )
    print("HTTP requests:")
    for (m, path, code), n in sorted(requests.items(), key=lambda kv: -kv[1]):
        print(f"  {n:5d}  {m:6} {path} -> {code}")
    for dt, what in sorted(slow, reverse=True)[:10]:
        print(f"  slow {dt * 1000:.0f} ms: {what}")
    if a.profile:
        prof.dump_stats(str(Path(tempfile.gettempdir()) / "specwave-probe.prof"))
        pstats.Stats(prof).sort_stats("tottime").print_stats(a.profile)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(a.profile)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _route(path: str) -> str:
    import re

    return re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "{id}", path)


if __name__ == "__main__":
    raise SystemExit(main())
