"""Pure builders for what a run reports: blocker texts, metrics, artifact tables and markdown."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from tasks_lib.results import tail


def slug(text: str) -> str:
    """Artifact keys must be lowercase letters, digits and dashes."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or "spec"


def artifact_keys(spec_name: str) -> dict[str, str]:
    base = slug(spec_name)[:40]
    return {"progress": f"{base}-progress", "table": f"{base}-tasks",
            "summary": f"{base}-summary"}


def _secs(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:.0f} s" if x >= 10 else f"{x:.1f} s"


def final_blocker(attempts: list[dict[str, Any]]) -> str | None:
    """Why a task did not pass, from its attempt records
    ("timeout after 2 attempts (30 s, 60 s)")."""
    if not attempts:
        return None
    last = attempts[-1]
    outcome = last.get("outcome")
    if outcome == "pass":
        return None
    reason = last.get("reason") or ""
    if outcome in ("fail", "blocked"):
        result = last.get("result") or {}
        return result.get("blocker") or reason or outcome
    n = len(attempts)
    if outcome == "timeout":
        limits = ", ".join(_secs(a.get("timeout_seconds")) for a in attempts)
        return f"timeout after {n} attempt{'s' if n > 1 else ''} ({limits})"
    if outcome == "crashed":
        codes = ", ".join(f"exit {a.get('exit_code')}" for a in attempts)
        return f"crashed after {n} attempt{'s' if n > 1 else ''} ({codes}): {reason}"
    return f"{outcome} after {n} attempt{'s' if n > 1 else ''}: {reason}"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Largest number of intervals open at once (start inclusive, end exclusive)."""
    events = [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals]
    events.sort(key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def compute_metrics(*, wall_seconds: float, task_records: dict[str, list[dict[str, Any]]],
                    final_status: dict[str, str], plan_json: dict[str, Any],
                    spec_estimate: float | None, waves: int, max_running: int,
                    scheduler: str, events: list[str]) -> dict[str, Any]:
    """The run's metrics (the original PARALLEL_METRICS, measured, not estimated)."""
    attempts = [a for recs in task_records.values() for a in recs]
    worker_seconds = sum(a.get("duration_s") or 0.0 for a in attempts)
    intervals = [(a["started"], a["ended"]) for a in attempts
                 if a.get("started") is not None and a.get("ended") is not None]
    counts: dict[str, int] = {}
    for s in final_status.values():
        counts[s] = counts.get(s, 0) + 1
    return {
        "wall_seconds": round(wall_seconds, 3),
        "worker_seconds_sum": round(worker_seconds, 3),
        "measured_speedup": round(worker_seconds / wall_seconds, 3) if wall_seconds > 0 else None,
        "spec_estimated_speedup": spec_estimate,
        "plan_best_speedup": plan_json.get("estimated_speedup"),
        "scheduler": scheduler,
        "total_tasks": len(final_status),
        "passed": counts.get("pass", 0),
        "failed": counts.get("fail", 0),
        "blocked": counts.get("blocked", 0),
        "already_done": counts.get("done", 0),
        "not_started": counts.get("pending", 0),
        "waves": waves,
        "workers_spawned": len(attempts),
        "workers_succeeded": sum(1 for a in attempts if a.get("outcome") == "pass"),
        "workers_failed": sum(1 for recs in task_records.values()
                              if recs and recs[-1].get("outcome") != "pass"),
        "workers_retried": sum(max(0, len(recs) - 1) for recs in task_records.values()),
        "max_concurrent_observed": max_overlap(intervals) if intervals else 0,
        "max_concurrent_scheduled": max_running,
        "events": list(events),
    }


TABLE_COLUMNS = ["id", "description", "wave", "status", "outcome", "attempts", "duration_s",
                 "files", "tests", "cost_usd", "turns", "blocker"]


def table_rows(units: list[Any], wave_of: dict[str, int], status: dict[str, str],
               records: dict[str, list[dict[str, Any]]],
               blockers: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for u in units:
        recs = records.get(u.id, [])
        last = recs[-1] if recs else {}
        result = last.get("result") or {}
        files = (result.get("files_modified") or []) + (result.get("files_created") or [])
        tr = result.get("test_results") or {}
        tests = f"{tr.get('passed', 0)}/{tr.get('ran', 0)}" if tr else ""
        info = last.get("info") or {}
        cost = sum((r.get("info") or {}).get("total_cost_usd") or 0.0 for r in recs)
        rows.append({
            "id": u.id,
            "description": u.description[:80],
            "wave": wave_of.get(u.id),
            "status": status.get(u.id, "pending"),
            "outcome": last.get("outcome", ""),
            "attempts": len(recs),
            "duration_s": round(sum(r.get("duration_s") or 0 for r in recs), 1) if recs else None,
            "files": ", ".join(files[:6]) or ", ".join(u.files[:3]),
            "tests": tests,
            "cost_usd": round(cost, 4) if cost else None,
            "turns": info.get("num_turns"),
            "blocker": blockers.get(u.id) or "",
        })
    return rows


def summary_markdown(*, spec_name: str, plan_json: dict[str, Any], metrics: dict[str, Any],
                     rows: list[dict[str, Any]], records: dict[str, list[dict[str, Any]]],
                     run_dir: str, status_line: str) -> str:
    m = metrics
    lines = [f"# specwave: {spec_name}", "", f"**{status_line}**", "",
             "## Plan", "",
             f"- mode: `{plan_json.get('mode')}` ({plan_json.get('source')} waves), scheduler "
             f"`{m.get('scheduler')}`",
             "- waves: " + "; ".join(f"{w['wave_id']}: {', '.join(w['tasks'])}"
                                     for w in plan_json.get("waves", [])),
             f"- critical path: {' → '.join(plan_json.get('critical_path', []))}",
             f"- best possible speed-up with {plan_json.get('max_concurrency')} workers: "
             f"{plan_json.get('estimated_speedup')}×", "",
             "## Metrics", "",
             "| metric | value |", "|---|---|"]
    for key in ("wall_seconds", "worker_seconds_sum", "measured_speedup", "spec_estimated_speedup",
                "total_tasks", "passed", "failed", "blocked", "already_done", "not_started",
                "workers_spawned", "workers_retried", "max_concurrent_observed"):
        lines.append(f"| {key} | {m.get(key)} |")
    total_cost = sum((r.get("info") or {}).get("total_cost_usd") or 0.0
                     for recs in records.values() for r in recs)
    if total_cost:
        lines.append(f"| total_cost_usd | {total_cost:.4f} |")
    for e in m.get("events") or []:
        lines.append(f"\n> {e}")
    failures = [r for r in rows if r["status"] in ("fail", "blocked")]
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures:
            lines.append(f"### {r['id']}: {r['description']}")
            lines.append(f"- status: `{r['status']}` — {r['blocker']}")
            recs = records.get(r["id"]) or []
            if recs and recs[-1].get("output_tail"):
                lines += ["", "```text", tail(recs[-1]["output_tail"], 30, 3000), "```"]
            lines.append("")
    lines += ["", f"Run folder: `{run_dir}`"]
    return "\n".join(lines)
