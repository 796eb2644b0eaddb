"""Dispatch latency of ``--dispatch pool`` on a process pool, against local dispatch.

    python benchmarks/pool_dispatch.py                  # 12 tasks, -j 4, 0.5 s agents
    python benchmarks/pool_dispatch.py --tasks 24 -j 8 --json out.json

One local Prefect server (private home, ``PREFECT_WORKER_QUERY_SECONDS=1``), ``specwave
deploy`` of this checkout, one process worker on ``specwave-process``, a bare git remote and a
clone of it. The same spec of independent tasks (agents: ``benchmarks/sim_agent.sh`` plus one
file written, so every task commits and merges) is run with ``--isolation worktree`` and
local dispatch, then with ``--dispatch pool``. Latency per task = the agent's start (its trace)
− the moment the orchestrator handed the task on: the worker task run's creation (local) or
the ``run-task`` flow run's creation (pool), read from the API. p50 / p95 / max.
Figures: docs/benchmarks.md, "Pool dispatch".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from bench import SIM_AGENT, SPECWAVE, Prefect, engine_rev, machine  # noqa: E402

AGENT = """#!/bin/sh
echo "written by task $SPECWAVE_TASK_ID" > "bench_task_$SPECWAVE_TASK_ID.txt"
exec sh {sim} "$@"
"""


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def make_spec(folder: Path, n: int, seconds: float) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tasks = [
        {
            "id": str(i),
            "type": "parent",
            "description": f"Benchmark task {i}",
            "status": "pending",
            "attempts": 0,
            "parallelization": {"blocked_by": [], "shared_files": []},
        }
        for i in range(1, n + 1)
    ]
    (folder / "tasks.json").write_text(
        json.dumps({"version": "2.0", "spec": "pooled", "tasks": tasks}, indent=2)
    )
    (folder / "durations.txt").write_text("".join(f"{i} {seconds}\n" for i in range(1, n + 1)))
    return folder


def trace_starts(path: Path) -> dict[str, float]:
    out = {}
    for line in path.read_text().splitlines():
        tid, start, _ = line.split()
        out[tid] = float(start)
    return out


async def handed_on(api: str, mode: str, run_id: str) -> dict[str, float]:
    """Task id -> when the orchestrator handed it on (creation time in the API)."""
    from prefect.client.orchestration import PrefectClient

    out: dict[str, float] = {}
    async with PrefectClient(api) as c:
        if mode == "pool":
            for fr in await c.read_flow_runs(limit=200):
                w = ((fr.parameters or {}).get("attempt") or {}).get("worker") or {}
                if w.get("run_id") == run_id and fr.created:
                    out[w["task_id"]] = fr.created.timestamp()
        else:
            for tr in await c.read_task_runs(limit=200):
                tid = tr.name.split(":", 1)[0]
                if tid.isdigit() and tr.created and tr.name.startswith(f"{tid}: Benchmark"):
                    out.setdefault(tid, tr.created.timestamp())
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=12)
    ap.add_argument("-j", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=0.5, help="each agent's sleep")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    info = machine()
    tmp = Path(tempfile.mkdtemp(prefix="specwave-pool-"))
    print(
        f"specwave pool dispatch — {info['date']}; {info['cpu']}, {info['cores']} cores; "
        f"Prefect {info['prefect']}; load {os.getloadavg()[0]:.1f}; engine {engine_rev()}",
        flush=True,
    )
    raw: dict[str, Any] = {"machine": info, "args": vars(args) | {"json": None}}
    worker = None
    try:
        with Prefect(
            tmp,
            "pool",
            server=True,
            settings={
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "SPECWAVE_CACHE_DIR": str(tmp / "cache"),
            },
        ) as pf:
            env = pf.env()
            assert pf.url
            subprocess.run(
                [SPECWAVE, "deploy", "--repo", str(ROOT)],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                timeout=600,
            )
            worker = subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", "specwave-process"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            remote, app = tmp / "remote.git", tmp / "app"
            git(tmp, "init", "-q", "--bare", "-b", "main", str(remote))
            git(tmp, "clone", "-q", str(remote), str(app))
            git(app, "commit", "-q", "--allow-empty", "-m", "start")
            git(app, "push", "-q", "origin", "main")
            agent_sh = tmp / "agent.sh"
            agent_sh.write_text(AGENT.format(sim=SIM_AGENT))
            rows = []
            for mode in ("local", "pool"):
                spec = make_spec(tmp / f"spec-{mode}", args.tasks, args.seconds)
                trace = tmp / f"trace-{mode}.txt"
                agent = ["sh", str(agent_sh), str(spec / "durations.txt"), str(trace)]
                argv = [
                    SPECWAVE, "run", str(spec), "--repo", str(app), "--isolation", "worktree",
                    "--agent-json", json.dumps({"kind": "command", "command": agent}),
                    "-j", str(args.j), "--retries", "0", "--json",
                    *(["--dispatch", "pool"] if mode == "pool" else []),
                ]  # fmt: skip
                t0 = time.time()
                proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
                wall = time.time() - t0
                result = json.loads(proc.stdout)
                if result.get("status") != "success":
                    raise SystemExit(f"{mode}: {result.get('status')}\n{proc.stderr[-2000:]}")
                starts = trace_starts(trace)
                handed = asyncio.run(handed_on(pf.url, mode, result["run_id"]))
                lat = [starts[t] - handed[t] for t in starts if t in handed]
                raw[mode] = {"wall": wall, "latency": lat, "flow_wall": result["metrics"]}
                rows.append(
                    f"| {mode} | {len(lat)} | {statistics.median(lat):.2f} | {pct(lat, 0.95):.2f} "
                    f"| {max(lat):.2f} | {result['metrics']['wall_seconds']:.1f} |"
                )
            print(
                f"\ndispatch latency (handed on → agent started), s; {args.tasks} independent "
                f"tasks, -j {args.j}, agents {args.seconds} s, process pool, one worker "
                f"(load at end {os.getloadavg()[0]:.1f})"
            )
            print("| dispatch | tasks | p50 | p95 | max | flow wall s |")
            print("|---|---:|---:|---:|---:|---:|")
            print("\n".join(rows))
    finally:
        if worker is not None:
            for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(worker.pid, sig)
                    worker.wait(5)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        if args.json:
            args.json.write_text(json.dumps(raw, indent=1, default=str))
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
