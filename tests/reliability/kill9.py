"""One kill -9 trial (item 1), shared by tests/reliability/test_kill9.py (a few trials in CI)
and benchmarks/reliability/kill9_trials.py (20+ trials, one command).

A trial:

1. ``specwave run`` a 6-task, 3-wave spec whose agents sleep a seeded random 0.3-2 s and each
   leave two grandchildren running (one in the agent's group, one escaped with ``setsid``);
2. once the first agent is recorded, wait a seeded random 0-5 s and SIGKILL the orchestrator
   (nothing of ours runs after that: no cleanup, no lock release);
3. check: tasks.json loads and validates; note which tasks the killed run had *proved*
   passed (an attempt record with outcome ``pass``) and which of its agents are still alive;
4. rerun ``specwave run`` with agents that pass at once; check: it exits 0 with every task
   ``pass``; no task the killed run had proved passed is run again, and its attempts are not
   double-counted; no process of the killed run survives the rerun; no temp file is left;
   the dead run's run.json says ``died`` and its flow run is Crashed in the API (or, when the
   kill landed after the run's last write, ``success`` and Completed).

Both runs use the Prefect API at ``api_url`` (a killed ``specwave run`` on the ephemeral API
would leave Prefect's own server process behind: Prefect's, not an agent).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.fixtures.fake import TAG_ENV, fake_config

ROOT = Path(__file__).resolve().parents[2]
SPECWAVE = [
    sys.executable,
    "-c",
    "import sys; from flows.cli import main; sys.argv[0] = 'specwave'; main()",
]
WAVES = [["1", "2", "3"], ["4", "5"], ["6"]]
DEPS = {"4": ["1"], "5": ["2", "3"], "6": ["4", "5"]}


@dataclass
class Trial:
    seed: int
    kill_after_s: float = 0.0
    proved_before_kill: list[str] = field(default_factory=list)
    alive_before_rerun: int = 0
    corrupt: bool = False
    rerun_again: list[str] = field(default_factory=list)  # proved passes run again
    double_counted: list[str] = field(default_factory=list)
    orphans: list[Any] = field(default_factory=list)  # killed run's processes after the rerun
    rerun_rc: int | None = None
    rerun_not_pass: list[str] = field(default_factory=list)
    stray_temp: list[str] = field(default_factory=list)
    dead_run_reported: bool = True
    finished_before_kill: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return not (
            self.corrupt
            or self.rerun_again
            or self.double_counted
            or self.orphans
            or self.rerun_rc != 0
            or self.rerun_not_pass
            or self.stray_temp
            or not self.dead_run_reported
            or self.error
        )

    def line(self) -> str:
        flags = [
            k
            for k, bad in (
                ("CORRUPT", self.corrupt),
                ("RE-RUN", self.rerun_again),
                ("DOUBLE", self.double_counted),
                ("ORPHANS", self.orphans),
                ("RERUN-FAILED", self.rerun_rc != 0 or self.rerun_not_pass),
                ("TEMP", self.stray_temp),
                ("MISREPORTED", not self.dead_run_reported),
                ("ERROR", self.error),
            )
            if bad
        ]
        return (
            f"trial seed={self.seed:<4} kill after {self.kill_after_s:4.1f} s  proved "
            f"{len(self.proved_before_kill)}/6  orphans before rerun "
            f"{self.alive_before_rerun:2d}"
            + ("  (the run had finished)" if self.finished_before_kill else "")
            + f"  -> {'ok' if self.ok else ' '.join(flags)}"
            + (f" ({self.error})" if self.error else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def write_spec(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    for w, ids in enumerate(WAVES, 1):
        for tid in ids:
            tasks.append(
                {
                    "id": tid,
                    "type": "parent",
                    "description": f"Task {tid}",
                    "status": "pending",
                    "attempts": 0,
                    "parallelization": {
                        "wave": w,
                        "blocked_by": DEPS.get(tid, []),
                        "shared_files": [f"src/t{tid}.py"],
                    },
                }
            )
    doc = {
        "version": "2.0",
        "spec": "kill9",
        "created": "2025-01-01T00:00:00Z",
        "updated": "2025-01-01T00:00:00Z",
        "execution_strategy": {
            "mode": "parallel_waves",
            "waves": [{"wave_id": i, "tasks": ids} for i, ids in enumerate(WAVES, 1)],
            "max_concurrent_workers": 3,
        },
        "tasks": tasks,
        "summary": {},
    }
    (folder / "tasks.json").write_text(json.dumps(doc, indent=2) + "\n")
    return folder


def tagged(tag: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get(TAG_ENV) == tag:
                out.append(p)
        except psutil.Error:
            continue
    return out


def kill_tagged(tag: str) -> None:
    for p in tagged(tag):
        try:
            p.kill()
        except psutil.Error:
            pass


def agent(tag: str, trace: Path, plan: dict[str, str], default: str = "pass") -> str:
    return json.dumps(fake_config(trace, plan, default, tag=tag))


def _records(spec: Path, run_id: str | None = None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    runs = spec / ".specwave" / "runs"
    for p in runs.glob(f"{run_id or '*'}/tasks/*/attempt-*.json"):
        try:
            rec = json.loads(p.read_text())
        except ValueError:
            continue
        out.setdefault(str(rec.get("task_id")), []).append(rec)
    return out


def _first_agent_recorded(spec: Path) -> bool:
    runs = spec / ".specwave" / "runs"
    return any(f.stat().st_size > 0 for f in runs.glob("*/agents.jsonl"))


def _flow_run_state(api_url: str, flow_run_id: str) -> str | None:
    import asyncio
    from uuid import UUID

    async def read() -> str | None:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            run = await client.read_flow_run(UUID(flow_run_id))
            return run.state.type.value if run.state else None

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        return asyncio.run(read())


def run_trial(
    seed: int, workdir: Path, api_url: str, *, max_kill_after: float = 5.0, timeout: float = 300
) -> Trial:
    from tasks_lib.formats import load_spec
    from tasks_lib.planner import plan_spec
    from tasks_lib.store import stray_temp_files

    rng = random.Random(seed)
    t = Trial(seed=seed)
    spec = write_spec(workdir / "spec")
    repo = workdir / "repo"
    repo.mkdir(exist_ok=True)
    tag1, tag2 = uuid.uuid4().hex, uuid.uuid4().hex
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    plan = {tid: f"grandchild+sleep:{rng.uniform(0.3, 2.0):.2f}" for ids in WAVES for tid in ids}
    t.kill_after_s = round(rng.uniform(0.0, max_kill_after), 2)
    first = subprocess.Popen(
        [
            *SPECWAVE,
            "run",
            str(spec),
            "--agent-json",
            agent(tag1, workdir / "trace1.jsonl", plan),
            "--repo",
            str(repo),
            "--json",
            "--timeout",
            "120",
        ],
        cwd=workdir,
        env={**env, TAG_ENV: tag1},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not _first_agent_recorded(spec):
            if first.poll() is not None:
                t.error = f"the first run exited ({first.returncode}) before any agent started"
                return t
            if time.monotonic() > deadline:
                t.error = "no agent started"
                return t
            time.sleep(0.05)
        time.sleep(t.kill_after_s)
        first.send_signal(signal.SIGKILL)
        t.finished_before_kill = first.wait(30) != -signal.SIGKILL
        holder = json.loads((spec / ".specwave" / "locks" / "run.lock").read_text())
        dead_run = holder["flow_run_id"]

        try:  # 3. right after the kill
            s = load_spec(spec)
            if plan_spec(s).errors:
                t.corrupt = True
        except Exception as exc:  # noqa: BLE001 - any failure to load is corruption
            t.corrupt, t.error = True, f"tasks.json: {exc}"
        proved = {
            tid
            for tid, recs in _records(spec, dead_run).items()
            if any(r.get("outcome") == "pass" for r in recs)
        }
        t.proved_before_kill = sorted(proved)
        t.alive_before_rerun = len(tagged(tag1))

        # 4. the rerun
        trace2 = workdir / "trace2.jsonl"
        second = subprocess.run(
            [
                *SPECWAVE,
                "run",
                str(spec),
                "--agent-json",
                agent(tag2, trace2, {}),
                "--repo",
                str(repo),
                "--json",
            ],
            cwd=workdir,
            env={**env, TAG_ENV: tag2},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        t.rerun_rc = second.returncode
        if second.returncode != 0:
            t.error = (second.stderr.strip().splitlines() or ["?"])[-1][:200]
        doc = json.loads((spec / "tasks.json").read_text())
        tasks = {str(x["id"]): x for x in doc["tasks"]}
        t.rerun_not_pass = sorted(k for k, x in tasks.items() if x["status"] != "pass")
        rerun = (
            {json.loads(line)["task"] for line in trace2.read_text().splitlines() if line}
            if trace2.exists()
            else set()
        )
        t.rerun_again = sorted(proved & rerun)
        first_attempts = {tid: len(recs) for tid, recs in _records(spec, dead_run).items()}
        t.double_counted = sorted(
            tid for tid in proved if tasks[tid].get("attempts") != first_attempts.get(tid)
        )
        time.sleep(0.5)
        t.orphans = [(p.pid, " ".join(p.cmdline())[:80]) for p in tagged(tag1)]
        t.stray_temp = [p.name for p in stray_temp_files(spec, "tasks.json")]
        dead_json = json.loads((spec / ".specwave" / "runs" / dead_run / "run.json").read_text())
        state = _flow_run_state(api_url, dead_run)
        # killed mid-run: run.json "died", flow run Crashed; killed after its last write (or
        # not at all, it had finished): "success" and Completed — never "running" / Running
        expected = {"died": "CRASHED", "success": "COMPLETED"}.get(dead_json.get("status"))
        t.dead_run_reported = expected is not None and state == expected
        if not t.dead_run_reported:
            t.error = t.error or f"dead run: run.json {dead_json.get('status')}, flow run {state}"
        return t
    except Exception as exc:  # noqa: BLE001 - a harness failure is a failed trial
        t.error = f"{type(exc).__name__}: {exc}"
        return t
    finally:
        if first.poll() is None:
            first.kill()
        kill_tagged(tag1)
        kill_tagged(tag2)
