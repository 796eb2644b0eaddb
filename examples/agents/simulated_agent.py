"""A simulated coding agent for demos and benchmarks: it does no real work.

It reads the worker prompt on stdin, sleeps, and answers like a well-behaved worker (a fenced
json result, then TASK COMPLETE). Use it to see specwave schedule a spec without a model:

    specwave run SPEC --command "python examples/agents/simulated_agent.py --seconds 2"

--seconds S      how long each task "works" (default 1)
--minutes-scale  if set, sleep (the task's estimate in minutes) * scale seconds, reading the
                 estimate from the environment variable SPECWAVE_SIM_MINUTES_<TASK_ID> or the
                 JSON map given with --durations.
--durations F    a JSON file {task_id: seconds} (benchmarks write one)
--write PATH     also write PATH (relative to the working directory; e.g. notes/{task_id}.md,
                 specwave fills in the task id): a change for --isolation worktree to merge
"""

import argparse
import json
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--durations")
    ap.add_argument("--write")
    args = ap.parse_args()
    task = os.environ.get("SPECWAVE_TASK_ID", "?")
    sys.stdin.read()
    seconds = args.seconds
    if args.durations:
        with open(args.durations) as fh:
            seconds = float(json.load(fh).get(task, seconds))
    print(f"simulated agent: working on task {task} for {seconds:g} s", flush=True)
    time.sleep(seconds)
    created = []
    if args.write:
        os.makedirs(os.path.dirname(args.write) or ".", exist_ok=True)
        with open(args.write, "w") as fh:
            fh.write(f"task {task} was simulated here\n")
        created.append(args.write)
    result = {
        "status": "pass",
        "files_modified": [],
        "files_created": created,
        "test_results": {"ran": 0, "passed": 0, "failed": 0},
        "blocker": None,
        "notes": f"simulated: slept {seconds:g} s",
        "duration_minutes": round(seconds / 60, 3),
    }
    print("```json\n" + json.dumps(result) + "\n```\nTASK COMPLETE", flush=True)


if __name__ == "__main__":
    main()
