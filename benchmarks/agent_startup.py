"""Start-up time and peak memory per worker: the Codex CLI beside Claude Code.

    python benchmarks/agent_startup.py                     # 5 repeats, 1 and 4 workers at once
    python benchmarks/agent_startup.py --repeat 10 --workers 1 2 4 --json startup.json
    python benchmarks/agent_startup.py --agents codex      # one agent only

Each worker is one attempt of the real agent class (``ClaudeAgent`` / ``CodexAgent``: the same
process runner, private config home and stream parsing a specwave worker pays for) against
its scripted server on 127.0.0.1 (``tasks_lib.scripted_model`` for Claude Code,
``tasks_lib.scripted_openai`` for Codex), with the same one-response scenario for both
(``bench-answer``: the model waits ``--answer-seconds`` (default 1.5), then answers once with
a report, no tool), so what is measured is the CLI, not the model. Per worker:

* **start-up**: spawn (``on_start``) -> the CLI's first request reaches the server (for the
  Codex CLI's built-in provider that first request is its websocket attempt, answered 426);
* **overhead**: spawn -> the process tree is gone, minus the model's wait (start-up, request,
  parsing the answer, teardown);
* **peak RSS**: the agent's whole process tree (RssSampler, 4 samples a second, so the wait
  is there for it to see the started CLI; pages shared between processes count in each).

The Claude Code CLI is the one bundled in the claude-agent-sdk wheel; the Codex CLI is found
as the codex agent finds it (PATH, else ``~/.cache/specwave/codex-<version>``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks_lib.agents import make_agent  # noqa: E402
from tasks_lib.agents.base import AgentRequest  # noqa: E402

CODEX_MODEL = "gpt-5.5"


def _request(root: Path, agent: str, n: int) -> AgentRequest:
    tid = f"{agent}-{n}-{uuid.uuid4().hex[:6]}"
    base = root / tid
    repo, spec = base / "repo", base / "spec"
    repo.mkdir(parents=True)
    spec.mkdir()
    return AgentRequest(
        task_id=tid,
        prompt=f"- **ID**: {tid}\nspecwave-scenario: bench-answer\n",
        prompt_file=str(spec / "prompt.md"),
        workdir=str(repo),
        spec_dir=str(spec),
        timeout_seconds=120,
    )


async def _one(agent_kind: str, config: dict[str, Any], req: AgentRequest, server: Any) -> dict:
    spawned: list[float] = []
    agent = make_agent(config)
    run = await agent.run(req, on_start=lambda info: spawned.append(time.time()))
    ended = time.time()
    session = run.info.get("thread_id") if agent_kind == "codex" else run.info.get("session_id")
    mine = [r for r in server.requests if r.get("session_id") == session and session]
    first = min((r["started"] for r in mine), default=None)
    t0 = spawned[0] if spawned else None
    return {
        "agent": agent_kind,
        "exit_code": run.exit_code,
        "startup_s": round(first - t0, 3) if first is not None and t0 is not None else None,
        "wall_s": round(ended - t0, 3) if t0 is not None else None,
        "peak_rss_mb": run.info.get("peak_rss_mb"),
        "version": run.info.get("codex_version") or run.info.get("claude_code_version"),
        "requests": len(mine),
    }


REPORT = (
    'Nothing to do.\n\n```json\n{"status": "fail", "blocker": "benchmark"}\n```\n\nTASK COMPLETE'
)


def _scenario(agent_kind: str, answer_s: float) -> dict[str, Any]:
    """One answer after ``answer_s``, in each server's own scenario format."""
    if agent_kind == "claude":
        turn = {"content": [{"type": "text", "text": REPORT}], "stop_reason": "end_turn"}
    else:
        turn = {"output": [{"type": "text", "text": REPORT}]}
    return {"bench-answer": {"turns": [dict(turn, sleep=answer_s)]}}


async def measure(
    agent_kind: str, workers: int, repeat: int, root: Path, answer_s: float
) -> list[dict]:
    if agent_kind == "claude":
        from tasks_lib.scripted_model import ScriptedModelServer

        server_cls: Any = ScriptedModelServer
    else:
        from tasks_lib.scripted_openai import ScriptedOpenAIServer

        server_cls = ScriptedOpenAIServer
    out: list[dict] = []
    with server_cls(_scenario(agent_kind, answer_s)) as server:
        if agent_kind == "claude":
            os.environ["ANTHROPIC_BASE_URL"] = server.base_url
            os.environ["ANTHROPIC_API_KEY"] = "sk-ant-bench-" + uuid.uuid4().hex
            config: dict[str, Any] = {"kind": "claude", "max_turns": 2}
        else:
            os.environ["OPENAI_API_KEY"] = "sk-bench-" + uuid.uuid4().hex
            config = {"kind": "codex", "model": CODEX_MODEL, "base_url": server.base_url + "/v1"}
        # one warm-up worker: page cache, the bundled binary's first mapping
        await _one(agent_kind, config, _request(root, agent_kind, -1), server)
        for r in range(repeat):
            reqs = [_request(root, agent_kind, r * workers + i) for i in range(workers)]
            rows = await asyncio.gather(*(_one(agent_kind, config, q, server) for q in reqs))
            for row in rows:
                row.update(workers=workers, repeat=r)
                if row["wall_s"] is not None:
                    row["overhead_s"] = round(row["wall_s"] - answer_s, 3)
            out.extend(rows)
    return out


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def _p90(rows: list[dict], key: str) -> float | None:
    values = sorted(r[key] for r in rows if r.get(key) is not None)
    if not values:
        return None
    return round(values[min(len(values) - 1, int(0.9 * len(values)))], 2)


def table(rows: list[dict]) -> str:
    lines = [
        "| agent (version) | workers at once | start-up s median / p90 | overhead s median / p90 "
        "| peak RSS MB per worker median / max | runs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for agent in ("claude", "codex"):
        for workers in sorted({r["workers"] for r in rows}):
            sel = [r for r in rows if r["agent"] == agent and r["workers"] == workers]
            if not sel:
                continue
            rss = [r["peak_rss_mb"] for r in sel if r["peak_rss_mb"]]
            name = "Claude Code" if agent == "claude" else "Codex CLI"
            lines.append(
                f"| {name} ({sel[0]['version']}) | {workers} | {_median(sel, 'startup_s')} / "
                f"{_p90(sel, 'startup_s')} | {_median(sel, 'overhead_s')} / "
                f"{_p90(sel, 'overhead_s')} | "
                f"{_median(sel, 'peak_rss_mb')} / {max(rss) if rss else None} | {len(sel)} |"
            )
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", nargs="+", default=["claude", "codex"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--answer-seconds", type=float, default=1.5, help="how long the model takes to answer"
    )
    parser.add_argument("--json", help="write every worker's figures to this file")
    args = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="specwave-bench-startup-") as tmp:
        for agent in args.agents:
            for workers in args.workers:
                rows += await measure(agent, workers, args.repeat, Path(tmp), args.answer_seconds)
    bad = [r for r in rows if r["exit_code"] != 0 or r["startup_s"] is None]
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {platform.platform()} · "
        f"{os.cpu_count()} CPUs · load {os.getloadavg()[0]:.2f}"
    )
    print(table(rows))
    if bad:
        print(f"\n{len(bad)} worker(s) did not run cleanly: {bad[:3]}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
