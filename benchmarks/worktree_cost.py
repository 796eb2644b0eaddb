"""What ``--isolation worktree`` costs: per task on a small and a large repository, end to
end through the flow, and the eager makespan against the plan's lower bound.

    python benchmarks/worktree_cost.py                 # all three measures (about 15 min, 2 cores)
    python benchmarks/worktree_cost.py steps e2e --tasks 20 --files 50000
    python benchmarks/worktree_cost.py --quick         # small sizes, one repeat (a smoke run)

Measures:

* ``steps``: the git work worktree mode adds to each task, one task at a time, through the
  engine's own code (tasks_lib.workspaces: the workspace's ``enter`` and ``leave``, the
  isolation check of the user's checkout, the integration's ``merge``, and the merged
  worktree parked for the next task), on a small repository (``--small`` files, default 20)
  and a large one (``--files``, default 20,000 small text files in nested folders; built
  once per invocation in a temporary folder, packed, its build not counted). Each is run
  twice: worktrees reused (parked after the merge, taken by the next task: what the engine
  does) and a new worktree per task (each merged one removed: what it did before). Medians
  over ``--tasks`` tasks (default 10), the first task apart. The large repository is measured
  once more on tmpfs (/dev/shm; ``--no-tmpfs``: not), to tell the file system's per-file cost
  from git's.
* ``e2e``: the same spec (8 independent tasks + 4 dependent ones, 3 levels; agents =
  tests/fixtures/agents/fake_agent.py writing one file and sleeping ``--sleep`` s) run by
  ``specwave run --json`` on the large repository with ``--isolation shared`` and
  ``--isolation worktree``, interleaved (the order alternates), ``--repeat`` times, ephemeral
  API (one Prefect home, warmed up by one unmeasured run). Reported: process wall, the
  flow's own wall (``metrics.wall_seconds``: loop start → last merge), agent span (first
  agent start → last agent end), and (worktree − shared) / tasks.
* ``makespan``: benchmarks/bench.py's makespan measure (synthetic specs, 8 slots, lognormal
  durations, local server, LB = the planner's max(critical path, work / slots)) with the
  agents (benchmarks/sim_agent.sh, plus one file written in the workdir so every task has a
  commit to merge) run with ``--isolation worktree`` in a small git repository, and the same
  spec with ``--isolation shared`` beside it, interleaved. Makespan = first agent start → last
  agent end, from the agents' trace (bench.py's definition; in worktree mode the last merge
  comes after it and is in the flow wall column).

``--json FILE`` writes every raw measurement. Figures: docs/benchmarks.md, "Worktree isolation".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
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

import bench  # noqa: E402
from bench import (  # noqa: E402
    SIM_AGENT,
    SPECWAVE,
    Prefect,
    engine_rev,
    fresh_spec,
    log,
    machine,
    median,
    read_trace,
    span,
    table,
)
from simulate import simulate  # noqa: E402
from synth import SynthParams, generate  # noqa: E402

from tasks_lib.workspaces import git  # noqa: E402

FAKE_AGENT = ROOT / "tests" / "fixtures" / "agents" / "fake_agent.py"
TARGETS = {"per_task_s": 1.0, "makespan": 1.10}
STEPS = ("enter", "leave", "isolation check", "merge", "park")
IDENTITY = {"user.name": "bench", "user.email": "bench@localhost"}

# sim_agent.sh, plus one file written in the workdir first (a builtin echo: no fork), so that
# every task leaves something to commit and merge
WRITING_AGENT = """#!/bin/sh
echo "written by task $SPECWAVE_TASK_ID" > "bench_task_$SPECWAVE_TASK_ID.txt"
exec sh {sim} "$@"
"""


# ------------------------------------------------------------------------------ repositories


def file_create_us(folder: Path, n: int = 2000) -> float:
    """Microseconds to create (and close) one empty file in ``folder``: the file system's
    share of a checkout."""
    probe = Path(tempfile.mkdtemp(prefix="create-probe-", dir=folder))
    try:
        t = time.perf_counter()
        for i in range(n):
            (probe / f"f{i}").touch()
        return (time.perf_counter() - t) / n * 1e6
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def build_repo(path: Path, files: int) -> dict[str, float]:
    """A git repository of ``files`` small text files in nested folders (about 50 per folder,
    20 folders per level), one commit on ``main``, packed. Returns the build's timings."""
    t0 = time.monotonic()
    path.mkdir(parents=True)
    per_dir, fanout = 50, 20
    for i in range(files):
        d = i // per_dir
        rel = Path("src", f"pkg_{d // fanout % fanout:02d}", f"mod_{d % fanout:02d}")
        if d >= fanout * fanout:
            rel = Path("src", f"extra_{d // (fanout * fanout)}") / rel.relative_to("src")
        folder = path / rel
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file_{i:05d}.py").write_text(
            f'"""Generated module {i}."""\n\nVALUE_{i} = {i}\n\n\ndef f_{i}(x):\n'
            f"    return x + VALUE_{i}\n"
        )
    (path / "README.md").write_text("benchmark repository\n")
    t_write = time.monotonic() - t0

    def g(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)

    t1 = time.monotonic()
    g("init", "-q", "-b", "main")
    for k, v in IDENTITY.items():
        g("config", k, v)
    g("add", "-A")
    g("-c", "gc.auto=0", "commit", "-q", "-m", "initial")  # no auto-gc in the background
    t_commit = time.monotonic() - t1
    t2 = time.monotonic()
    g("gc", "-q")  # as a clone would be: packed, so no auto-gc runs during the measure
    t_pack = time.monotonic() - t2
    return {
        "path": str(path),
        "create_us": file_create_us(path.parent),
        "files": files + 1,
        "write_s": t_write,
        "add_commit_s": t_commit,
        "pack_s": t_pack,
        "total_s": time.monotonic() - t0,
    }


def reset_repo(repo: Path) -> None:
    """Back to the built state between runs: no specwave worktrees or branches, no files the
    agents left (shared mode writes into the checkout itself)."""
    for w in git.worktree_list(repo)[1:]:
        git.worktree_remove(repo, w.path)
    git.worktree_prune(repo)
    refs = git.run_git(["for-each-ref", "--format=%(refname:short)", "refs/heads/specwave/"], repo)
    for name in refs.out.split():
        git.delete_branch(repo, name, force=True)
    git.run_git(["reset", "-q", "--hard", "HEAD"], repo)
    git.run_git(["clean", "-q", "-f", "-d"], repo)


# ------------------------------------------------------------------------------ steps


def timed(fn: Any, *a: Any, **kw: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t, out


class GitCounter:
    """Counts the git processes the git layer starts (every call goes through run_git)."""

    def __init__(self) -> None:
        self.calls = 0
        self._orig = git.run_git

    def __enter__(self) -> GitCounter:
        def counted(*a: Any, **kw: Any) -> Any:
            self.calls += 1
            return self._orig(*a, **kw)

        git.run_git = counted  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: Any) -> None:
        git.run_git = self._orig  # type: ignore[assignment]


def measure_steps(repo: Path, n: int, *, reuse: bool = True) -> dict[str, Any]:
    """``n`` tasks one after the other, each through the code worktree mode runs (the
    workspace's ``enter`` / ``leave``, the integration's ``merge``, the isolation check, the
    merged worktree parked for the next task). ``reuse=False``: each merged worktree is
    removed instead (a new worktree per task: what the engine did before parking)."""
    from tasks_lib.records import AttemptRecord, Outcome
    from tasks_lib.workspaces.integration import Integration
    from tasks_lib.workspaces.worktree import CheckoutWatch, WorktreeCheckout, worktree_spec

    spec = worktree_spec(str(repo), "bench")
    spec.run_id = "bench"
    integ = Integration(spec)
    t_int_add, _ = timed(integ.prepare)
    watch = CheckoutWatch(str(repo), [])
    rows: list[dict[str, float]] = []
    for i in range(n):
        tid = f"t{i + 1}"
        r: dict[str, float] = {}
        counter = GitCounter().__enter__()
        cpu0 = bench.child_cpu()
        checkout = WorktreeCheckout(spec)  # one per worker, as each worker opens its own
        checkout._title[tid] = f"benchmark task {tid}"
        r["enter"], path = timed(checkout._enter, tid, 1)
        # the agent's work: one new file (not timed)
        out = Path(path, "src", "feature", f"task_{tid}.py")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"# written by task {tid}\n")
        now = time.time()
        record = AttemptRecord(task_id=tid, attempt=1, outcome=Outcome.PASS, started=now, ended=now)
        r["leave"], record = timed(checkout._leave, tid, 1, record)
        assert record.work is not None and record.work.changed
        r["isolation check"], changed = timed(watch.new_changes)
        assert not changed, f"the checkout changed: {changed}"
        r["merge"], (info, _) = timed(integ.merge, tid, record.work.branch, f"task {tid}")
        assert info.status == "merged", info
        if reuse:
            r["park"], _ = timed(integ.remove_task, record.work.worktree, record.work.branch)
        else:
            r["park"], _ = timed(
                lambda w=record.work: (
                    git.worktree_remove(repo, w.worktree),
                    git.delete_branch(repo, w.branch, force=True),
                )
            )
        counter.__exit__()
        r["git_calls"] = counter.calls
        r["git_cpu"] = bench.child_cpu() - cpu0  # the git processes' own CPU (user + system)
        r["all"] = sum(r[s] for s in STEPS)
        rows.append(r)
    t_int_rm, _ = timed(integ.close)
    merged = len(git.commits_between(repo, "main", spec.integration_branch or ""))
    reset_repo(repo)
    return {
        "tasks": rows,
        "reuse": reuse,
        "integration_add_s": t_int_add,
        "integration_remove_s": t_int_rm,
        "commits_on_integration": merged,
    }


def bench_steps(tmp: Path, args: argparse.Namespace, raw: dict, repos: dict) -> str:
    rows = []
    for label in [k for k in ("small", "large", "large-tmpfs") if k in repos]:
        repo, build = repos[label]
        for reuse in (True, False):
            how = "reused" if reuse else "new each task"
            log(f"steps: {args.tasks} tasks on the {label} repository, worktrees {how}")
            m = measure_steps(repo, args.tasks, reuse=reuse)
            m["build"] = build
            m["load"] = os.getloadavg()[0]
            raw.setdefault("steps", {})[f"{label}, {how}"] = m
            med = {k: median([t[k] * 1000 for t in m["tasks"]]) for k in m["tasks"][0]}
            mean_all = sum(t["all"] for t in m["tasks"]) / len(m["tasks"]) * 1000
            med["git_calls"] /= 1000
            rows.append(
                [
                    f"{label} ({build['files']:,} files), {how}",
                    *(f"{med[s]:.0f}" for s in STEPS),
                    f"**{med['all']:.0f}**",
                    f"{m['tasks'][0]['all'] * 1000:.0f}",
                    f"{max(t['all'] for t in m['tasks']) * 1000:.0f}",
                    f"{mean_all:.0f}",
                    f"{med['git_calls']:.0f} / {med['git_cpu']:.0f}",
                    f"{m['integration_add_s'] * 1000:.0f} / {m['integration_remove_s'] * 1000:.0f}",
                    f"{m['load']:.1f}",
                ]
            )
    return table(
        f"git work added per task by worktree isolation, ms (median of {args.tasks} tasks, one "
        f"at a time; target ≤ {TARGETS['per_task_s'] * 1000:.0f} ms on the large repo)",
        [
            "repository, worktrees",
            *STEPS,
            "total (median)",
            "first task",
            "max",
            "mean",
            "git processes / their CPU ms",
            "per run: prepare / close",
            "load",
        ],
        rows,
    )


# ------------------------------------------------------------------------------ runs


def run_cli(
    spec: Path,
    repo: Path,
    *,
    env: dict[str, str],
    isolation: str,
    agent: list[str],
    j: int,
    timeout: float = 1800,
) -> dict[str, Any]:
    """``specwave run SPEC --isolation ISOLATION --json`` as a subprocess (its own process
    group, killed with it on interrupt); the result JSON and the wall."""
    argv = [
        SPECWAVE,
        "run",
        str(spec),
        "--agent-json",
        json.dumps({"kind": "command", "command": agent, "grace_seconds": 1.0}),
        "-j",
        str(j),
        "--retries",
        "0",
        "--repo",
        str(repo),
        "--isolation",
        isolation,
        "--json",
    ]
    t0 = time.time()
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:  # timed out or interrupted: never leave the run and its agents
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    wall = time.time() - t0
    try:
        result = json.loads(out)
    except json.JSONDecodeError:
        raise SystemExit(
            f"specwave run failed ({proc.returncode}) on {spec}:\n{out[-2000:]}\n{err[-3000:]}"
        ) from None
    if result.get("status") != "success":
        raise SystemExit(f"specwave run did not succeed on {spec}: {result.get('status')}")
    if isolation == "worktree":
        merges = (result.get("integration") or {}).get("merges", [])
        bad = [m for m in merges if m["status"] != "merged"]
        if bad or len(merges) != result["metrics"]["total_tasks"]:
            raise SystemExit(f"worktree run on {spec}: not every task merged: {bad[:3]}")
    return {"t0": t0, "wall": wall, "result": result}


def e2e_spec(folder: Path, sleep: float) -> Path:
    """8 independent tasks, then 9 ← 1 2, 10 ← 3 4, 11 ← 5 6 7 8, 12 ← 9 10 (3 levels)."""
    doc, _ = generate(
        SynthParams(
            tasks=12, deps=0, window=0, conflicts=0, durations="constant", mean=sleep, seed=1
        )
    )
    deps = {"9": ["1", "2"], "10": ["3", "4"], "11": ["5", "6", "7", "8"], "12": ["9", "10"]}
    for t in doc["tasks"]:
        t["parallelization"]["blocked_by"] = deps.get(t["id"], [])
        t["parallelization"]["blocks"] = [k for k, v in deps.items() if t["id"] in v]
    doc["spec"] = "e2e"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "tasks.json").write_text(json.dumps(doc, indent=2) + "\n")
    return folder


def fake_trace_span(path: Path) -> float:
    ev = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return max(e["end"] for e in ev) - min(e["start"] for e in ev)


def bench_e2e(tmp: Path, args: argparse.Namespace, raw: dict, repos: dict) -> str:
    repo, build = repos["large"]
    n, j = 12, 8
    got: dict[str, dict[str, list[float]]] = {
        m: {"wall": [], "flow": [], "span": []} for m in ("shared", "worktree")
    }
    with Prefect(tmp, "e2e", server=False) as pf:
        for rep in range(-1, args.repeat):  # rep -1: the warm-up (the Prefect database)
            order = ("shared", "worktree") if rep % 2 == 0 else ("worktree", "shared")
            for mode in order if rep >= 0 else ("shared",):
                reset_repo(repo)
                spec = e2e_spec(tmp / "e2e" / "spec", args.sleep)
                trace = tmp / "e2e" / "trace.jsonl"
                trace.unlink(missing_ok=True)
                agent = [
                    sys.executable,
                    str(FAKE_AGENT),
                    "--default",
                    "write:src/feature/task_{task_id}.py",
                    "--sleep",
                    str(args.sleep),
                    "--trace",
                    str(trace),
                ]
                what = "warm-up" if rep < 0 else f"repeat {rep + 1}/{args.repeat}"
                log(f"e2e: {n} tasks, --isolation {mode}, large repo, {what}")
                r = run_cli(spec, repo, env=pf.env(), isolation=mode, agent=agent, j=j)
                if rep < 0:
                    continue
                got[mode]["wall"].append(r["wall"])
                got[mode]["flow"].append(r["result"]["metrics"]["wall_seconds"])
                got[mode]["span"].append(fake_trace_span(trace))
        reset_repo(repo)
    per = {
        k: [(w - s) / n for w, s in zip(got["worktree"][k], got["shared"][k])]
        for k in ("wall", "flow", "span")
    }
    raw["e2e"] = {
        "tasks": n,
        "j": j,
        "sleep": args.sleep,
        "files": build["files"],
        **got,
        "per_task_s": per,
        "load": os.getloadavg()[0],
    }
    rows = [
        [
            mode,
            f"{median(got[mode]['wall']):.2f}",
            f"{median(got[mode]['flow']):.2f}",
            f"{median(got[mode]['span']):.2f}",
        ]
        for mode in ("shared", "worktree")
    ]
    rows.append(
        [
            "**(worktree − shared) / task**",
            f"{median(per['wall']):.3f} ({min(per['wall']):.3f}–{max(per['wall']):.3f})",
            f"**{median(per['flow']):.3f}** ({min(per['flow']):.3f}–{max(per['flow']):.3f})",
            f"{median(per['span']):.3f} ({min(per['span']):.3f}–{max(per['span']):.3f})",
        ]
    )
    return table(
        f"end to end, {n} tasks (8 independent + 4 dependent, 3 levels), -j {j}, agents write "
        f"one file and sleep {args.sleep:g} s, large repo ({build['files']:,} files), ephemeral "
        f"API, median of {args.repeat} interleaved (load {os.getloadavg()[0]:.1f})",
        ["isolation", "process wall s", "flow wall s", "agent span s"],
        rows,
    )


def bench_makespan(tmp: Path, args: argparse.Namespace, raw: dict, repos: dict) -> str:
    from tasks_lib.formats import load_spec
    from tasks_lib.planner import plan_spec

    repo, build = repos["small"]
    sizes = args.ms_sizes or ([30] if args.quick else [30, 100, 300])
    j = 8
    agent_sh = tmp / "writing_agent.sh"
    agent_sh.write_text(WRITING_AGENT.format(sim=SIM_AGENT))
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
            sim = simulate(plan, durations, "eager", j)[0]
            got: dict[str, dict[str, list[float]]] = {
                m: {"span": [], "flow": [], "wall": []} for m in ("shared", "worktree")
            }
            for rep in range(args.repeat):
                order = ("worktree", "shared") if rep % 2 == 0 else ("shared", "worktree")
                for mode in order:
                    reset_repo(repo)
                    spec = fresh_spec(tmp, f"ms-{n}", params)
                    trace = spec.parent / "trace.txt"
                    log(f"makespan: {n} tasks, --isolation {mode}, repeat {rep + 1}/{args.repeat}")
                    r = run_cli(
                        spec,
                        repo,
                        env=pf.env(),
                        isolation=mode,
                        agent=["sh", str(agent_sh), str(spec / "durations.txt"), str(trace)],
                        j=j,
                    )
                    t = read_trace(trace)
                    assert len(t) == n, (len(t), n)
                    if args.keep:  # the next run of the other mode starts the folder afresh
                        shutil.copy(trace, tmp / f"trace-ms-{n}-{mode}-{rep + 1}.txt")
                        kept = tmp / f"tasks-ms-{n}-{mode}-{rep + 1}.json"
                        shutil.copy(spec / "tasks.json", kept)
                    got[mode]["span"].append(span(t))
                    got[mode]["flow"].append(r["result"]["metrics"]["wall_seconds"])
                    got[mode]["wall"].append(r["wall"])
            reset_repo(repo)
            raw.setdefault("makespan", []).append(
                {
                    "tasks": n,
                    "slots": j,
                    "params": params.label(),
                    "repo_files": build["files"],
                    "lower_bound": lb,
                    "critical_path": plan.critical_path_length,
                    "work": plan.total_work,
                    "sim_eager": sim,
                    **got,
                    "load": os.getloadavg()[0],
                }
            )
            w, s = got["worktree"], got["shared"]
            rows.append(
                [
                    n,
                    f"{lb:.1f}",
                    f"{sim / lb:.3f}",
                    f"{median(s['span']):.1f}",
                    f"{median(s['span']) / lb:.3f}",
                    f"{median(w['span']):.1f}",
                    f"**{median(w['span']) / lb:.3f}** ("
                    + " / ".join(f"{x / lb:.3f}" for x in w["span"])
                    + ")",
                    f"{median(w['flow']) / lb:.3f}",
                    f"{median(s['flow']) / lb:.3f}",
                    f"{os.getloadavg()[0]:.1f}",
                ]
            )
    return table(
        f"eager makespan / lower bound, --isolation worktree ({j} slots, lognormal durations mean "
        f"{args.mean:g} s, small repo of {build['files']} files, local server, median of "
        f"{args.repeat}; target worktree ≤ {TARGETS['makespan']:.2f})",
        [
            "tasks",
            "LB s",
            "sim eager/LB",
            "shared s",
            "shared/LB",
            "worktree s",
            "worktree/LB",
            "worktree flow wall/LB",
            "shared flow wall/LB",
            "load",
        ],
        rows,
    )


MEASURES = {"steps": bench_steps, "e2e": bench_e2e, "makespan": bench_makespan}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "measures",
        nargs="*",
        choices=[[], *MEASURES],
        default=[],
        help=f"any of {', '.join(MEASURES)} (default: all)",
    )
    ap.add_argument("--tasks", type=int, default=10, help="steps: tasks per repository")
    ap.add_argument("--files", type=int, default=20_000, help="files of the large repository")
    ap.add_argument("--small", type=int, default=20, help="files of the small repository")
    ap.add_argument("--repeat", type=int, default=3, help="e2e, makespan: repeats")
    ap.add_argument("--sleep", type=float, default=0.5, help="e2e: each agent's sleep, s")
    ap.add_argument("--ms-sizes", type=int, nargs="+", help="makespan: spec sizes (30 100 300)")
    ap.add_argument("--mean", type=float, default=1.0, help="makespan: mean task seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="3 tasks, 5,000 files, 1 repeat, 30")
    ap.add_argument(
        "--no-tmpfs",
        action="store_true",
        help="steps: skip the large repository's second copy on tmpfs (/dev/shm)",
    )
    ap.add_argument("--json", type=Path, help="write raw measurements here")
    ap.add_argument("--keep", type=Path, help="work here and keep the files")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.tasks = 1, 3
        if args.files == ap.get_default("files"):
            args.files = 5_000
    chosen = args.measures or list(MEASURES)

    def on_term(signum: int, frame: Any) -> None:  # run the cleanups (finally blocks)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    info = machine()
    info["git"] = ".".join(map(str, git.git_version()))
    raw: dict[str, Any] = {"machine": info, "argv": sys.argv[1:], "engine": str(bench.ENGINE)}
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="specwave-wtcost-"))
    tmp.mkdir(parents=True, exist_ok=True)
    shm = None  # steps: the large repository once more on tmpfs, to set the disk apart
    if not args.no_tmpfs and Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        shm = Path(tempfile.mkdtemp(prefix="specwave-wtcost-", dir="/dev/shm"))
    load0 = os.getloadavg()
    print(
        f"specwave worktree cost — {info['date']}; {info['cpu']}, {info['cores']} cores, "
        f"{info['mem_mb']} MB; {info['os']}; Python {info['python']}, Prefect "
        f"{info['prefect']}, git {info['git']}; load at start "
        f"{load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}; engine {engine_rev()}",
        flush=True,
    )
    try:
        repos: dict[str, tuple[Path, dict[str, Any]]] = {}
        need = set()
        if "steps" in chosen:
            need |= {"small", "large"} | ({"large-tmpfs"} if shm else set())
        if "e2e" in chosen:
            need.add("large")
        if "makespan" in chosen:
            need.add("small")
        for label, files, where in (
            ("small", args.small, tmp),
            ("large", args.files, tmp),
            ("large-tmpfs", args.files, shm),
        ):
            if label in need and where is not None:
                log(f"building the {label} repository ({files} files) in {where}")
                path = where / f"repo-{label}"
                repos[label] = (path, build_repo(path, files))
                b = repos[label][1]
                print(
                    f"\n{label} repository ({where}): {b['files']:,} files built in "
                    f"{b['total_s']:.1f} s (write {b['write_s']:.1f} s, add + commit "
                    f"{b['add_commit_s']:.1f} s, gc {b['pack_s']:.1f} s; not counted); "
                    f"creating one file there takes {b['create_us']:.0f} µs",
                    flush=True,
                )
        raw["repos"] = {k: v[1] for k, v in repos.items()}
        for name in chosen:
            t = time.time()
            out = MEASURES[name](tmp, args, raw, repos)
            print("\n" + out + f"\n({name}: {time.time() - t:.0f} s)", flush=True)
    finally:
        raw["load_end"] = os.getloadavg()
        load1 = raw["load_end"]
        print(f"\nload at end {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(raw, indent=2, default=str))
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        if shm is not None:
            shutil.rmtree(shm, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
