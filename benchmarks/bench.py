"""specwave's engine benchmarks: one command, one table per measure.

    python benchmarks/bench.py                 # everything (about 25 minutes on 2 cores)
    python benchmarks/bench.py makespan overhead --repeat 3
    python benchmarks/bench.py --quick         # smaller sizes, one repeat (a smoke run)

Measures (each in its own isolated Prefect home, so other Prefect users of the machine and
earlier runs do not interfere):

* ``makespan``: synthetic specs (benchmarks/synth.py) of 30, 100 and 300 tasks run by
  ``specwave run`` with the ``eager`` and the ``waves`` scheduler, one after the other on the
  same spec, agents = benchmarks/sim_agent.sh sleeping each task's duration. Reported: the
  plan's lower bound (max(critical path, work / slots)), each policy's makespan on a virtual
  clock (benchmarks/simulate.py: the policy alone) and measured (first agent start → last agent
  end, from the agents' own trace), as ratios to the lower bound.
* ``overhead``: the same N zero-work agents launched by a plain asyncio launcher
  (benchmarks/plain_launcher.py), by one bare Prefect task run each
  (benchmarks/prefect_launcher.py: Prefect's own floor) and by ``specwave run`` (N
  independent tasks), concurrency 16; (span − plain span) / N, the span being first agent
  start → last agent end (the agents' own trace).
* ``rss``: peak RSS (VmHWM) of the ``specwave run`` process with 64 concurrent sleeping agents.
* ``first-launch``: process start → first agent start, ``specwave run`` vs a trivial Prefect
  flow whose one task launches the same agent (benchmarks/trivial_flow.py), ephemeral API and
  local server.
* ``backpressure``: HTTP 503 responses (each one a client back-off and retry) counted in the
  ``specwave run`` process during a 500-task run, for each server configuration tried.

``--json FILE`` writes every raw measurement. Current figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from simulate import simulate  # noqa: E402
from synth import SynthParams, write_spec  # noqa: E402

SIM_AGENT = BENCH / "sim_agent.sh"
HOOKS = BENCH / "_hooks"
SPECWAVE = shutil.which("specwave") or "specwave"
ENGINE = ROOT  # the specwave code that runs (--engine: another checkout, e.g. a baseline)

TARGETS = {
    "makespan": 1.05,
    "overhead_ms": 10.0,
    "rss_mb": 300.0,
    "first_launch": 1.2,
    "http_503": 0,
}

# Server settings tried by the back-pressure measure (applied to the server process: the
# ephemeral one inherits them from `specwave run`, a local server gets them at start).
SERVER_CONFIGS: dict[str, dict[str, str]] = {
    "prefect defaults": {},
    "batched writes": {
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "500",
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "2",
    },
}


# ------------------------------------------------------------------------------ helpers


def log(msg: str) -> None:
    print(
        f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}",
        file=sys.stderr,
        flush=True,
    )


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    import prefect

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_mb": mem,
        "python": platform.python_version(),
        "prefect": prefect.__version__,
        "os": f"{platform.system()} {platform.release()}",
    }


def engine_rev() -> str:
    try:
        rev = subprocess.run(
            [
                "git",
                "-C",
                str(ENGINE),
                "log",
                "-1",
                "--format=%h %cd",
                "--date=format:%Y-%m-%d %H:%M",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ENGINE), "status", "--porcelain", "--", "flows", "tasks_lib"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return f"{ENGINE} @ {rev}" + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return str(ENGINE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prefect:
    """An isolated Prefect home; ``server=True`` also starts a local API server in it."""

    def __init__(
        self, tmp: Path, name: str, *, server: bool, settings: dict[str, str] | None = None
    ):
        self.home = tmp / f"prefect-{name}"
        self.home.mkdir(parents=True, exist_ok=True)
        self.server = server
        self.settings = settings or {}
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                "PYTHONPATH": str(ENGINE),
            }
        )
        env.update(self.settings)
        if self.url:
            env["PREFECT_API_URL"] = self.url
        env.update(extra)
        return env

    def __enter__(self) -> Prefect:
        if self.server:
            port = free_port()
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "WARNING",
                ],
                env=self.env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.url = f"http://127.0.0.1:{port}/api"
            import httpx

            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(Exception):
                    if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                        break
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the local Prefect server did not start ({self.url})")
                time.sleep(0.5)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def read_trace(path: Path) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                out[parts[0]] = (float(parts[1]), float(parts[2]))
    return out


def run_specwave(
    spec: Path,
    *,
    env: dict[str, str],
    j: int,
    scheduler: str = "eager",
    trace: Path | None = None,
    durations: Path | None = None,
    sample_rss: bool = False,
    timeout: float = 1800,
) -> dict[str, Any]:
    """``specwave run`` as a subprocess; returns wall, exit code, result JSON, the agent
    trace and (sample_rss) the process's peak RSS."""
    repo = spec.parent / "repo"
    repo.mkdir(exist_ok=True)
    cmd_agent = f"sh {SIM_AGENT} {durations or '-'} {trace or ''}".strip()
    argv = [
        SPECWAVE,
        "run",
        str(spec),
        "--command",
        cmd_agent,
        "-j",
        str(j),
        "--scheduler",
        scheduler,
        "--retries",
        "0",
        "--repo",
        str(repo),
        "--json",
    ]
    t0 = time.time()
    cpu0 = child_cpu()
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    peak = {"hwm_kb": 0, "server_kb": 0}
    stop = threading.Event()

    def sampler() -> None:
        import psutil

        try:
            me = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM"):
                        peak["hwm_kb"] = max(peak["hwm_kb"], int(line.split()[1]))
            with contextlib.suppress(psutil.Error):
                srv = sum(
                    c.memory_info().rss
                    for c in me.children(recursive=True)
                    if "uvicorn" in " ".join(c.cmdline())
                )
                peak["server_kb"] = max(peak["server_kb"], srv // 1024)
            stop.wait(0.05)

    th = threading.Thread(target=sampler, daemon=True) if sample_rss else None
    if th:
        th.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate()
        raise SystemExit(f"specwave run timed out on {spec}:\n{err[-3000:]}") from None
    except BaseException:  # interrupted: never leave the run (and its agents) behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        stop.set()
        if th:
            th.join()
    wall = time.time() - t0
    cpu = child_cpu() - cpu0
    try:
        result = json.loads(out)
    except json.JSONDecodeError:
        raise SystemExit(
            f"specwave run failed ({proc.returncode}) on {spec}:\n{out[-2000:]}\n{err[-3000:]}"
        ) from None
    if result.get("status") != "success":
        raise SystemExit(
            f"specwave run did not succeed on {spec}: {result.get('status')}\n{err[-3000:]}"
        )
    return {
        "t0": t0,
        "wall": wall,
        "cpu": cpu,
        "result": result,
        "stderr": err,
        "trace": read_trace(trace) if trace else {},
        "peak_rss_mb": peak["hwm_kb"] / 1024,
        "server_rss_mb": peak["server_kb"] / 1024,
    }


def dependency_gaps(plan: Any, trace: dict[str, tuple[float, float]], slots: int) -> list[float]:
    """The engine's latency on a chain: for each task whose last predecessor ended while a
    slot was free (fewer than ``slots`` other agents running then, so it waited for nothing
    else), its agent's start − that predecessor agent's end (exit seen, recorded, next task
    launched)."""
    out = []
    for tid, preds in plan.predecessors.items():
        if not preds or tid not in trace or not all(p in trace for p in preds):
            continue
        ready = max(trace[p][1] for p in preds)
        busy = sum(1 for t, (s, e) in trace.items() if t != tid and s < ready < e)
        if busy < slots:
            out.append(trace[tid][0] - ready)
    return out


def child_cpu() -> float:
    """CPU seconds (user + system) of every child process waited for so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def span(trace: dict[str, tuple[float, float]]) -> float:
    return max(e for _, e in trace.values()) - min(s for s, _ in trace.values())


def fresh_spec(tmp: Path, name: str, params: SynthParams) -> Path:
    folder = tmp / name
    if folder.exists():
        shutil.rmtree(folder)
    write_spec(folder / "spec", params)
    return folder / "spec"


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        title,
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in cells[1:]:
        lines.append(
            "| "
            + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            + " |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ measures


def bench_makespan(tmp: Path, args: argparse.Namespace, raw: dict) -> str:
    from tasks_lib.formats import load_spec
    from tasks_lib.planner import plan_spec

    sizes = args.ms_sizes or ([30, 100] if args.quick else [30, 100, 300])
    j = 8
    rows = []
    with Prefect(tmp, "makespan", server=True) as pf:
        for n in sizes:
            params = SynthParams(
                tasks=n,
                deps=1.0,
                window=30,
                conflicts=0.1,
                durations="lognormal",
                mean=args.mean,
                seed=args.seed,
            )
            spec = fresh_spec(tmp, f"ms-{n}", params)
            plan = plan_spec(load_spec(spec), max_concurrency=j)
            durations = json.loads((spec / "durations.json").read_text())
            lb = plan.lower_bound
            sim = {p: simulate(plan, durations, p, j)[0] for p in ("eager", "waves")}
            real: dict[str, list[float]] = {"eager": [], "waves": [], "eager-poll": []}
            gaps: list[float] = []
            gaps_poll: list[float] = []
            for rep in range(args.repeat):
                for policy in ("eager", "waves"):
                    spec = fresh_spec(tmp, f"ms-{n}", params)
                    trace = spec.parent / "trace.txt"
                    log(f"makespan: {n} tasks, {policy}, repeat {rep + 1}/{args.repeat}")
                    r = run_specwave(
                        spec,
                        env=pf.env(),
                        j=j,
                        scheduler=policy,
                        trace=trace,
                        durations=spec / "durations.txt",
                    )
                    assert len(r["trace"]) == n, (len(r["trace"]), n)
                    real[policy].append(span(r["trace"]))
                    if policy == "eager":
                        gaps += dependency_gaps(plan, r["trace"], j)
                if args.poll:  # what-if: the same eager run with a faster exit poll
                    spec = fresh_spec(tmp, f"ms-{n}", params)
                    trace = spec.parent / "trace.txt"
                    log(
                        f"makespan: {n} tasks, eager with exit poll {args.poll:g} s, "
                        f"repeat {rep + 1}/{args.repeat}"
                    )
                    env = pf.env(
                        SPECWAVE_BENCH_POLL_S=str(args.poll),
                        PYTHONPATH=f"{HOOKS}{os.pathsep}{ENGINE}",
                    )
                    r = run_specwave(
                        spec,
                        env=env,
                        j=j,
                        scheduler="eager",
                        trace=trace,
                        durations=spec / "durations.txt",
                    )
                    real["eager-poll"].append(span(r["trace"]))
                    gaps_poll += dependency_gaps(plan, r["trace"], j)
            raw.setdefault("makespan", []).append(
                {
                    "tasks": n,
                    "slots": j,
                    "params": params.label(),
                    "lower_bound": lb,
                    "critical_path": plan.critical_path_length,
                    "work": plan.total_work,
                    "sim": sim,
                    "real": real,
                    "eager_gaps_ms": [g * 1000 for g in gaps],
                    "eager_poll_gaps_ms": [g * 1000 for g in gaps_poll],
                    "poll": args.poll,
                    "load": os.getloadavg()[0],
                }
            )
            e, w = median(real["eager"]), median(real["waves"])
            rows.append(
                [
                    n,
                    f"{lb:.1f}",
                    f"{sim['eager'] / lb:.3f}",
                    f"{sim['waves'] / lb:.3f}",
                    f"{e:.1f}",
                    f"{e / lb:.3f}",
                    f"{w:.1f}",
                    f"{w / lb:.3f}",
                    f"{w / e:.2f}×",
                    f"{median(gaps) * 1000:.0f}",
                ]
                + (
                    [f"{median(real['eager-poll']) / lb:.3f}", f"{median(gaps_poll) * 1000:.0f}"]
                    if args.poll
                    else []
                )
                + [f"{os.getloadavg()[0]:.1f}"]
            )
    return table(
        f"makespan / lower bound ({j} slots, lognormal durations mean {args.mean:g} s, "
        f"median of {args.repeat}; target eager ≤ {TARGETS['makespan']})",
        [
            "tasks",
            "LB s",
            "sim eager",
            "sim waves",
            "eager s",
            "eager/LB",
            "waves s",
            "waves/LB",
            "waves/eager",
            "eager chain gap ms (median)",
        ]
        + ([f"eager/LB, exit poll {args.poll:g} s", "its chain gap ms"] if args.poll else [])
        + ["load"],
        rows,
    )


def bench_overhead(tmp: Path, args: argparse.Namespace, raw: dict) -> str:
    sizes = args.sizes or ([100] if args.quick else [100, 500])
    j = 16
    rows = []
    with Prefect(tmp, "overhead", server=True) as pf:
        for n in sizes:
            params = SynthParams(
                tasks=n, deps=0, window=0, conflicts=0, durations="constant", mean=0.0, seed=1
            )
            got: dict[str, list[float]] = {"plain": [], "prefect": [], "specwave": []}
            cpus: dict[str, list[float]] = {"plain": [], "prefect": [], "specwave": []}
            walls = []
            for rep in range(args.repeat):
                folder = tmp / f"launchers-{n}"
                folder.mkdir(exist_ok=True)
                for name, script in (
                    ("plain", "plain_launcher.py"),
                    ("prefect", "prefect_launcher.py"),
                ):
                    trace = folder / f"trace-{name}.txt"
                    trace.unlink(missing_ok=True)
                    log(f"overhead: {name} launcher, {n} agents, repeat {rep + 1}")
                    c0 = child_cpu()
                    subprocess.run(
                        [
                            sys.executable,
                            str(BENCH / script),
                            str(n),
                            "-j",
                            str(j),
                            "--trace",
                            str(trace),
                        ],
                        check=True,
                        cwd=folder,
                        env=pf.env(),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    cpus[name].append(child_cpu() - c0)
                    t = read_trace(trace)
                    assert len(t) == n, (name, len(t))
                    got[name].append(span(t))
                spec = fresh_spec(tmp, f"oh-{n}", params)
                trace = spec.parent / "trace.txt"
                log(f"overhead: specwave run, {n} agents, repeat {rep + 1}")
                r = run_specwave(spec, env=pf.env(), j=j, trace=trace)
                assert len(r["trace"]) == n
                got["specwave"].append(span(r["trace"]))
                cpus["specwave"].append(r["cpu"])
                walls.append(r["wall"])

            def per(a: str, b: str, n: int = n, got: dict = got) -> list[float]:
                return [(x - y) / n * 1000 for x, y in zip(got[a], got[b])]

            sw_plain, pf_plain, sw_pf = (
                per("specwave", "plain"),
                per("prefect", "plain"),
                per("specwave", "prefect"),
            )
            cpu_sw = [(x - y) / n * 1000 for x, y in zip(cpus["specwave"], cpus["plain"])]
            cpu_pf = [(x - y) / n * 1000 for x, y in zip(cpus["prefect"], cpus["plain"])]
            raw.setdefault("overhead", []).append(
                {
                    "tasks": n,
                    "j": j,
                    **got,
                    "cpu": cpus,
                    "cpu_specwave_minus_plain_ms": cpu_sw,
                    "cpu_prefect_minus_plain_ms": cpu_pf,
                    "walls": walls,
                    "specwave_minus_plain_ms": sw_plain,
                    "prefect_minus_plain_ms": pf_plain,
                    "specwave_minus_prefect_ms": sw_pf,
                    "load": os.getloadavg()[0],
                }
            )
            rows.append(
                [
                    n,
                    f"{median(got['plain']):.2f}",
                    f"{median(got['prefect']):.2f}",
                    f"{median(got['specwave']):.2f}",
                    f"{median(sw_plain):.1f}",
                    f"{min(sw_plain):.1f}–{max(sw_plain):.1f}",
                    f"{median(pf_plain):.1f}",
                    f"{median(sw_pf):.1f}",
                    f"{median(cpu_pf):.1f}",
                    f"{median(cpu_sw):.1f}",
                    f"{os.getloadavg()[0]:.1f}",
                ]
            )
    return table(
        f"engine overhead, zero-work agents, concurrency {j}, first agent start → last "
        f"agent end (median of {args.repeat}; target specwave − plain ≤ "
        f"{TARGETS['overhead_ms']:g} ms/task)",
        [
            "agents",
            "plain s",
            "prefect tasks s",
            "specwave s",
            "specwave − plain ms/task",
            "range",
            "prefect − plain ms/task",
            "specwave − prefect ms/task",
            "CPU prefect − plain ms/task",
            "CPU specwave − plain ms/task",
            "load",
        ],
        rows,
    )


def bench_rss(tmp: Path, args: argparse.Namespace, raw: dict) -> str:
    n = 64
    params = SynthParams(
        tasks=n, deps=0, window=0, conflicts=0, durations="constant", mean=args.rss_sleep, seed=1
    )
    rows = []
    for mode in ("ephemeral", "server"):
        peaks, servers = [], []
        with Prefect(tmp, f"rss-{mode}", server=mode == "server") as pf:
            for rep in range(args.repeat):
                spec = fresh_spec(tmp, "rss", params)
                trace = spec.parent / "trace.txt"
                log(f"rss: {n} sleeping agents ({mode}), repeat {rep + 1}")
                r = run_specwave(
                    spec,
                    env=pf.env(),
                    j=n,
                    trace=trace,
                    durations=spec / "durations.txt",
                    sample_rss=True,
                )
                peaks.append(r["peak_rss_mb"])
                servers.append(r["server_rss_mb"])
        raw.setdefault("rss", []).append(
            {"mode": mode, "agents": n, "peak_mb": peaks, "server_mb": servers}
        )
        rows.append(
            [
                mode,
                n,
                f"{median(peaks):.0f}",
                f"{max(peaks):.0f}",
                f"{median(servers):.0f}" if mode == "ephemeral" else "(separate)",
                f"{os.getloadavg()[0]:.1f}",
            ]
        )
    return table(
        f"orchestrator peak RSS (VmHWM of the `specwave run` process), {n} concurrent "
        f"agents sleeping {args.rss_sleep:g} s (target ≤ {TARGETS['rss_mb']:g} MB)",
        ["mode", "agents", "median MB", "max MB", "ephemeral server MB", "load"],
        rows,
    )


def bench_first_launch(tmp: Path, args: argparse.Namespace, raw: dict) -> str:
    params = SynthParams(
        tasks=1, deps=0, window=0, conflicts=0, durations="constant", mean=0.0, seed=1
    )
    rows = []
    for mode in args.modes:
        sw, tf = [], []
        with Prefect(tmp, f"first-{mode}", server=mode == "server") as pf:
            for rep in range(args.repeat + 2):
                spec = fresh_spec(tmp, "first", params)
                trace = spec.parent / "trace.txt"
                log(f"first launch ({mode}): specwave run, repeat {rep + 1}")
                r = run_specwave(spec, env=pf.env(), j=1, trace=trace)
                sw.append(min(s for s, _ in r["trace"].values()) - r["t0"])
                trace2 = spec.parent / "trace-trivial.txt"
                log(f"first launch ({mode}): trivial flow, repeat {rep + 1}")
                t0 = time.time()
                subprocess.run(
                    [sys.executable, str(BENCH / "trivial_flow.py"), str(trace2)],
                    env=pf.env(),
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                tf.append(min(s for s, _ in read_trace(trace2).values()) - t0)
        ratio = median(sw) / median(tf)
        raw.setdefault("first_launch", []).append({"mode": mode, "specwave": sw, "trivial": tf})
        rows.append(
            [
                mode,
                f"{median(tf):.2f}",
                f"{median(sw):.2f}",
                f"{ratio:.2f}",
                f"{os.getloadavg()[0]:.1f}",
            ]
        )
    return table(
        f"time to first agent launch, from process start (median of {args.repeat + 2}; "
        f"target ≤ {TARGETS['first_launch']}× Prefect's trivial flow)",
        ["mode", "trivial flow s", "specwave run s", "ratio", "load"],
        rows,
    )


def bench_backpressure(tmp: Path, args: argparse.Namespace, raw: dict) -> str:
    n = args.bp_tasks or (100 if args.quick else 500)
    params = SynthParams(
        tasks=n,
        deps=1.0,
        window=30,
        conflicts=0.1,
        durations="lognormal",
        mean=args.bp_mean,
        seed=args.seed,
    )
    j = 16
    rows = []
    for cfg_name, settings in SERVER_CONFIGS.items():
        if args.configs and cfg_name not in args.configs:
            continue
        for mode in args.modes:
            counts503, counts_all, walls = [], [], []
            with Prefect(
                tmp, f"bp-{mode}-{len(rows)}", server=mode == "server", settings=settings
            ) as pf:
                for rep in range(args.repeat):
                    spec = fresh_spec(tmp, "bp", params)
                    prefix = spec.parent / "http"
                    log(f"backpressure: {n} tasks, {mode}, {cfg_name}, repeat {rep + 1}")
                    env = pf.env(
                        SPECWAVE_BENCH_HTTP_LOG=str(prefix),
                        PYTHONPATH=f"{HOOKS}{os.pathsep}{ENGINE}",
                    )
                    r = run_specwave(
                        spec,
                        env=env,
                        j=j,
                        trace=spec.parent / "trace.txt",
                        durations=spec / "durations.txt",
                    )
                    walls.append(r["wall"])
                    c503, call = 0, 0
                    per_route: dict[str, int] = {}
                    for f in spec.parent.glob("http.*.json"):
                        data = json.loads(f.read_text())
                        for key, v in data["counts"].items():
                            call += v
                            if key.endswith(" 503"):
                                c503 += v
                                per_route[key] = per_route.get(key, 0) + v
                    counts503.append(c503)
                    counts_all.append(call)
                    raw.setdefault("backpressure", []).append(
                        {
                            "config": cfg_name,
                            "mode": mode,
                            "tasks": n,
                            "503": c503,
                            "requests": call,
                            "routes_503": per_route,
                            "wall": r["wall"],
                        }
                    )
            rows.append(
                [
                    cfg_name,
                    mode,
                    n,
                    "/".join(str(c) for c in counts503),
                    f"{median(counts_all):.0f}",
                    f"{median(walls):.1f}",
                    f"{os.getloadavg()[0]:.1f}",
                ]
            )
    return table(
        f"HTTP 503 back-offs during a {n}-task run (concurrency {j}; each repeat; "
        f"target {TARGETS['http_503']})",
        ["server settings", "mode", "tasks", "503s", "requests", "wall s", "load"],
        rows,
    )


MEASURES = {
    "makespan": bench_makespan,
    "overhead": bench_overhead,
    "rss": bench_rss,
    "first-launch": bench_first_launch,
    "backpressure": bench_backpressure,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "measures",
        nargs="*",
        choices=[[], *MEASURES],
        default=[],
        help=f"any of {', '.join(MEASURES)} (default: all)",
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mean", type=float, default=1.0, help="makespan: mean task seconds")
    ap.add_argument("--bp-mean", type=float, default=0.3, help="backpressure: mean task seconds")
    ap.add_argument(
        "--poll",
        type=float,
        help="makespan what-if: also run eager with agents.proctable.POLL_S set to this",
    )
    ap.add_argument("--bp-tasks", type=int, help="backpressure: tasks (default 500)")
    ap.add_argument(
        "--configs",
        nargs="+",
        choices=list(SERVER_CONFIGS),
        help="backpressure: server settings to try (default: all)",
    )
    ap.add_argument(
        "--modes",
        nargs="+",
        choices=["ephemeral", "server"],
        default=["ephemeral", "server"],
        help="backpressure, first-launch: API modes",
    )
    ap.add_argument("--rss-sleep", type=float, default=5.0)
    ap.add_argument("--sizes", type=int, nargs="+", help="overhead: agent counts (default 100 500)")
    ap.add_argument(
        "--ms-sizes", type=int, nargs="+", help="makespan: spec sizes (default 30 100 300)"
    )
    ap.add_argument(
        "--engine",
        type=Path,
        help="run `specwave` from this checkout (e.g. a git "
        "worktree of an older commit, for a baseline)",
    )
    ap.add_argument("--json", type=Path, help="write raw measurements here")
    ap.add_argument("--keep", type=Path, help="work here and keep the files")
    args = ap.parse_args()
    if args.quick:
        args.repeat = 1
    global ENGINE
    if args.engine:
        ENGINE = args.engine.resolve()
    chosen = args.measures or list(MEASURES)

    def on_term(signum: int, frame: Any) -> None:  # run the cleanups (finally blocks)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    info = machine()
    raw: dict[str, Any] = {"machine": info, "argv": sys.argv[1:], "engine": str(ENGINE)}
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="specwave-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    print(
        f"specwave benchmarks — {info['date']}; {info['cpu']}, {info['cores']} cores, "
        f"{info['mem_mb']} MB; Python {info['python']}, Prefect {info['prefect']}; "
        f"load at start {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}; engine {engine_rev()}",
        flush=True,
    )
    try:
        for name in chosen:
            t = time.time()
            out = MEASURES[name](tmp, args, raw)
            print("\n" + out + f"\n({name}: {time.time() - t:.0f} s)", flush=True)
    finally:
        raw["load_end"] = os.getloadavg()
        if args.json:
            args.json.write_text(json.dumps(raw, indent=2, default=str))
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
