"""kill -9 trials of ``specwave run`` (the reliability issue, item 1), one command:

    python benchmarks/reliability/kill9_trials.py                 # 20 trials, seeds 1..20
    python benchmarks/reliability/kill9_trials.py --trials 50 --seed 100 --json out.json

Each trial runs a 6-task spec, SIGKILLs the orchestrator at a seeded random moment, checks
the plan file, reruns, and checks that nothing was lost, run twice, counted twice, left
running or misreported (tests/reliability/kill9.py has the steps). Prints one line per trial
and a summary; exits 1 if any trial failed.

A temporary Prefect API (SQLite) is started for the trials; ``--api-url`` uses yours instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1, help="seed of the first trial")
    ap.add_argument(
        "--max-kill-after",
        type=float,
        default=5.0,
        help="kill at a random moment up to this long after the first agent",
    )
    ap.add_argument("--api-url", help="a running Prefect API (default: a temporary one)")
    ap.add_argument("--json", metavar="FILE", help="also write every trial as JSON")
    args = ap.parse_args()

    from tests.reliability.kill9 import run_trial

    def trials(api_url: str) -> list:
        out = []
        for i in range(args.trials):
            seed = args.seed + i
            with tempfile.TemporaryDirectory(prefix=f"kill9-{seed}-") as d:
                t = run_trial(seed, Path(d), api_url, max_kill_after=args.max_kill_after)
            print(t.line(), flush=True)
            out.append(t)
        return out

    started = time.time()
    if args.api_url:
        results = trials(args.api_url)
    else:
        from prefect.settings import PREFECT_API_URL
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            results = trials(PREFECT_API_URL.value())

    failed = [t for t in results if not t.ok]
    count = lambda attr: sum(1 for t in results if getattr(t, attr))  # noqa: E731
    print(
        f"\n{len(results)} trials in {time.time() - started:.0f} s: "
        f"{len(failed)} failed — {count('corrupt')} corrupt tasks.json, "
        f"{count('rerun_again')} re-ran a passed task, {count('double_counted')} "
        f"double-counted, {count('orphans')} left orphans, "
        f"{sum(1 for t in results if t.rerun_rc != 0)} reruns failed, "
        f"{sum(1 for t in results if not t.dead_run_reported)} misreported the dead run; "
        f"kills landed after 0-{args.max_kill_after:g} s with "
        f"{sum(len(t.proved_before_kill) for t in results)} passes proved before the kill, "
        f"{sum(t.alive_before_rerun for t in results)} agent processes orphaned by them "
        f"(all reaped by the reruns: {not any(t.orphans for t in results)})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps([t.to_dict() for t in results], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
