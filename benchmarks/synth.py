"""Synthetic spec folders for benchmarks: a random DAG with file conflicts and durations.

    python benchmarks/synth.py OUT_DIR --tasks 100 --deps 1.5 --conflicts 0.1 \
        --durations lognormal --mean 1.0 --seed 7

writes ``OUT_DIR/tasks.json`` (Agent OS 2.0: ``blocked_by``/``blocks``, ``shared_files``,
``estimated_minutes``; no declared waves, so the planner computes them), and each task's
duration for the simulated agents: ``OUT_DIR/durations.txt`` ("id seconds" lines, for
``benchmarks/sim_agent.sh``) and ``OUT_DIR/durations.json`` ({task_id: seconds}, for
``examples/agents/simulated_agent.py --durations``).

Shape of the graph:

* ``deps``: mean number of dependencies per task (Poisson), each drawn from the ``window``
  tasks before it, so the graph has depth and width (a window of 0 means "any earlier task");
* ``conflicts``: the fraction of tasks that also touch one file of a small shared pool
  (``n // 8`` files, at least 2): two tasks sharing a file never run at the same time;
* ``durations``: ``constant``, ``uniform`` (0.5..1.5 × mean), ``lognormal`` (sigma 0.6,
  rescaled to the mean) or ``bimodal`` (80 % short at 0.5 × mean, 20 % long at 3 × mean);
  each task's estimate in minutes equals its duration in seconds (one "minute" of estimate
  is one simulated second), so the planner's critical path is in seconds too.

Import ``generate(...)`` / ``write_spec(...)`` from other benchmark scripts.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

DISTRIBUTIONS = ("constant", "uniform", "lognormal", "bimodal")


@dataclass(frozen=True)
class SynthParams:
    tasks: int = 100
    deps: float = 1.5
    window: int = 12
    conflicts: float = 0.1
    durations: str = "lognormal"
    mean: float = 1.0
    seed: int = 7

    def label(self) -> str:
        return (
            f"n={self.tasks} deps={self.deps:g} window={self.window} "
            f"conflicts={self.conflicts:g} {self.durations} mean={self.mean:g}s "
            f"seed={self.seed}"
        )


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _duration(rng: random.Random, kind: str, mean: float) -> float:
    if kind == "constant":
        d = mean
    elif kind == "uniform":
        d = rng.uniform(0.5 * mean, 1.5 * mean)
    elif kind == "lognormal":
        sigma = 0.6
        d = mean * rng.lognormvariate(0.0, sigma) / math.exp(sigma * sigma / 2)
    elif kind == "bimodal":
        d = 3.0 * mean if rng.random() < 0.2 else 0.5 * mean
    else:
        raise ValueError(
            f'unknown duration distribution "{kind}" — use one of {", ".join(DISTRIBUTIONS)}'
        )
    return round(max(0.05 * mean, d), 3)


def generate(p: SynthParams) -> tuple[dict, dict[str, float]]:
    """Return (tasks.json document, {task_id: seconds})."""
    rng = random.Random(p.seed)
    ids = [str(i + 1) for i in range(p.tasks)]
    blocked_by: dict[str, list[str]] = {t: [] for t in ids}
    blocks: dict[str, list[str]] = {t: [] for t in ids}
    for i, tid in enumerate(ids):
        lo = max(0, i - p.window) if p.window > 0 else 0
        pool = ids[lo:i]
        k = min(len(pool), _poisson(rng, p.deps))
        for d in sorted(rng.sample(pool, k), key=int):
            blocked_by[tid].append(d)
            blocks[d].append(tid)
    shared = [f"src/shared/module_{k}.py" for k in range(max(2, p.tasks // 8))]
    durations = {tid: _duration(rng, p.durations, p.mean) for tid in ids}
    tasks = []
    for tid in ids:
        files = [f"src/feature/task_{tid}.py"]
        if rng.random() < p.conflicts:
            files.append(rng.choice(shared))
        tasks.append(
            {
                "id": tid,
                "type": "parent",
                "subtasks": [],
                "description": f"Synthetic unit {tid} ({durations[tid]:g} s)",
                "status": "pending",
                "attempts": 0,
                "started_at": None,
                "completed_at": None,
                "duration_minutes": None,
                "notes": None,
                "blocker": None,
                "estimated_minutes": durations[tid],
                "parallelization": {
                    "wave": None,
                    "can_parallel_with": [],
                    "blocked_by": blocked_by[tid],
                    "blocks": blocks[tid],
                    "shared_files": files,
                    "isolation_score": 0.5,
                },
            }
        )
    doc = {
        "version": "2.0",
        "spec": f"synthetic-{p.tasks}-s{p.seed}",
        "created": "2026-01-01T00:00:00Z",
        "updated": "2026-01-01T00:00:00Z",
        "tasks": tasks,
        "summary": {
            "total_tasks": p.tasks,
            "parent_tasks": p.tasks,
            "subtasks": 0,
            "completed": 0,
            "in_progress": 0,
            "blocked": 0,
            "pending": p.tasks,
            "overall_percent": 0,
        },
    }
    return doc, durations


def write_spec(folder: Path, p: SynthParams) -> tuple[Path, Path]:
    """Write tasks.json, durations.json and durations.txt ("id seconds" lines, for
    benchmarks/sim_agent.sh) into ``folder``; returns (tasks.json, durations.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    doc, durations = generate(p)
    tasks = folder / "tasks.json"
    tasks.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    dur = folder / "durations.json"
    dur.write_text(json.dumps(durations) + "\n", encoding="utf-8")
    (folder / "durations.txt").write_text(
        "".join(f"{k} {v:g}\n" for k, v in durations.items()), encoding="utf-8"
    )
    return tasks, dur


def main() -> int:
    ap = argparse.ArgumentParser(description="Write a synthetic spec folder for benchmarks.")
    ap.add_argument("out", type=Path)
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--deps", type=float, default=1.5, help="mean dependencies per task")
    ap.add_argument(
        "--window",
        type=int,
        default=12,
        help="dependencies come from the previous N tasks (0: any)",
    )
    ap.add_argument(
        "--conflicts", type=float, default=0.1, help="fraction of tasks touching a shared file"
    )
    ap.add_argument("--durations", choices=DISTRIBUTIONS, default="lognormal")
    ap.add_argument("--mean", type=float, default=1.0, help="mean task duration, seconds")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    p = SynthParams(a.tasks, a.deps, a.window, a.conflicts, a.durations, a.mean, a.seed)
    tasks, dur = write_spec(a.out, p)
    print(f"{tasks}\n{dur}\n{p.label()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
