"""Pure builders for what a run reports: blocker texts, metrics, artifact tables and markdown."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tasks_lib.records import AttemptRecord
from tasks_lib.results import Outcome, tail
from tasks_lib.state import TaskStatus, status_of_outcome
from tasks_lib.store import TaskUpdate


def slug(text: str) -> str:
    """Artifact keys must be lowercase letters, digits and dashes."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or "spec"


def artifact_keys(spec_name: str) -> dict[str, str]:
    base = slug(spec_name)[:40]
    return {"progress": f"{base}-progress", "table": f"{base}-tasks", "summary": f"{base}-summary"}


def _secs(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:.0f} s" if x >= 10 else f"{x:.1f} s"


def final_blocker(attempts: Sequence[AttemptRecord]) -> str | None:
    """Why a task did not pass, from its attempt records
    ("timeout after 2 attempts (30 s, 60 s)")."""
    if not attempts:
        return None
    last = attempts[-1]
    outcome = last.outcome
    if outcome == Outcome.PASS:
        return last.merge.reason() if last.merge is not None and last.merge_failed else None
    reason = last.reason
    if outcome in (Outcome.FAIL, Outcome.BLOCKED):
        return (last.result.blocker if last.result else None) or reason or outcome.value
    n = len(attempts)
    tries = f"{n} attempt{'s' if n > 1 else ''}"
    if outcome == Outcome.TIMEOUT:
        limits = ", ".join(_secs(a.timeout_seconds) for a in attempts)
        return f"timeout after {tries} ({limits})"
    if outcome == Outcome.CRASHED:
        codes = ", ".join(f"exit {a.exit_code}" for a in attempts)
        return f"crashed after {tries} ({codes}): {reason}"
    return f"{outcome.value} after {tries}: {reason}"


ARTIFACT_FIELDS = (
    "files_modified",
    "files_created",
    "functions_created",
    "exports_added",
    "test_files",
)


def task_status(recs: Sequence[AttemptRecord]) -> TaskStatus:
    """A finished task's status from its attempts: the last one's outcome, except that a pass
    whose work could not be merged (worktree isolation) is a fail."""
    last = recs[-1]
    return TaskStatus.FAIL if last.merge_failed else status_of_outcome(last.outcome)


def result_update(task_id: str, prior_attempts: int, recs: Sequence[AttemptRecord]) -> TaskUpdate:
    """The plan-file update that records a task's finished attempts (its last one decides):
    status, attempts (``prior_attempts`` from earlier runs plus these), times, measured
    duration, blocker, the worker's notes and artifacts."""
    last = recs[-1]
    status = task_status(recs)
    passed = status == TaskStatus.PASS
    result = last.result
    arts = {k: list(getattr(result, k)) for k in ARTIFACT_FIELDS if result and getattr(result, k)}
    return TaskUpdate(
        task_id,
        status=status.value,
        attempts=prior_attempts + len(recs),
        started_at=iso(recs[0].started),
        completed_at=iso(last.ended),
        duration_minutes=round(sum(r.duration_s for r in recs) / 60, 2),
        blocker=final_blocker(recs),
        clear_blocker=passed,
        notes=result.notes if result else None,
        artifacts=arts or None,
        subtasks_status=TaskStatus.PASS.value if passed else None,
    )


def worker_counts(records: Mapping[str, Sequence[AttemptRecord]]) -> dict[str, int]:
    """The plan file's ``orchestrator_state`` counters: attempts started, tasks whose last
    attempt passed / did not, attempts that were retries."""
    return {
        "workers_spawned": sum(len(r) for r in records.values()),
        "workers_completed": sum(1 for r in records.values() if r and _passed(r[-1])),
        "workers_failed": sum(1 for r in records.values() if r and not _passed(r[-1])),
        "workers_retried": sum(max(0, len(r) - 1) for r in records.values()),
    }


def _passed(rec: AttemptRecord) -> bool:
    return rec.passed and not rec.merge_failed


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Largest number of intervals open at once (start inclusive, end exclusive)."""
    events = [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals]
    events.sort(key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def compute_metrics(
    *,
    wall_seconds: float,
    task_records: Mapping[str, Sequence[AttemptRecord]],
    final_status: Mapping[str, TaskStatus],
    plan_json: dict[str, Any],
    spec_estimate: float | None,
    waves: int,
    max_running: int,
    scheduler: str,
    events: list[str],
) -> dict[str, Any]:
    """The run's metrics (the original PARALLEL_METRICS, measured, not estimated)."""
    attempts = [a for recs in task_records.values() for a in recs]
    worker_seconds = sum(a.duration_s for a in attempts)
    intervals = [(a.started, a.ended) for a in attempts]
    counts: dict[TaskStatus, int] = {}
    for s in final_status.values():
        counts[s] = counts.get(s, 0) + 1
    workers = worker_counts(task_records)
    return {
        "wall_seconds": round(wall_seconds, 3),
        "worker_seconds_sum": round(worker_seconds, 3),
        "measured_speedup": round(worker_seconds / wall_seconds, 3) if wall_seconds > 0 else None,
        "spec_estimated_speedup": spec_estimate,
        "plan_best_speedup": plan_json.get("estimated_speedup"),
        "scheduler": scheduler,
        "total_tasks": len(final_status),
        "passed": counts.get(TaskStatus.PASS, 0),
        "failed": counts.get(TaskStatus.FAIL, 0),
        "blocked": counts.get(TaskStatus.BLOCKED, 0),
        "already_done": counts.get(TaskStatus.DONE, 0),
        "not_started": counts.get(TaskStatus.PENDING, 0),
        "waves": waves,
        "workers_spawned": workers["workers_spawned"],
        "workers_succeeded": sum(1 for a in attempts if a.passed),
        "workers_failed": workers["workers_failed"],
        "workers_retried": workers["workers_retried"],
        "max_concurrent_observed": max_overlap(intervals) if intervals else 0,
        "max_concurrent_scheduled": max_running,
        "events": list(events),
    }


TABLE_COLUMNS = [
    "id",
    "description",
    "wave",
    "status",
    "outcome",
    "attempts",
    "duration_s",
    "files",
    "tests",
    "cost_usd",
    "turns",
    "tokens_in",
    "tokens_out",
    "blocker",
]


def table_rows(
    units: list[Any],
    wave_of: Mapping[str, int],
    status: Mapping[str, TaskStatus],
    records: Mapping[str, Sequence[AttemptRecord]],
    blockers: Mapping[str, str],
    worktree: bool = False,
) -> list[dict[str, Any]]:
    """One row per task (TABLE_COLUMNS), plain values: the UI escapes them for markdown.
    ``worktree``: also each task's branch, commit, merge outcome and, for work not merged,
    the worktree it was left in (WORKTREE_COLUMNS)."""
    rows = []
    for u in units:
        recs = records.get(u.id, [])
        last = recs[-1] if recs else None
        result = last.result if last else None
        files = (result.files_modified + result.files_created) if result else []
        tr = result.test_results if result else None
        costs = [c for r in recs if (c := r.cost_usd)]
        tokens = sum_tokens(recs)
        rows.append(
            {
                "id": u.id,
                "description": u.description[:80],
                "wave": wave_of.get(u.id),
                "status": status.get(u.id, TaskStatus.PENDING).value,
                "outcome": last.outcome.value if last else "",
                "attempts": len(recs),
                "duration_s": round(sum(r.duration_s for r in recs), 1) if recs else None,
                "files": ", ".join(files[:6]) or ", ".join(u.files[:3]),
                "tests": f"{tr.passed}/{tr.ran}" if tr else "",
                "cost_usd": round(sum(costs), 4) if costs else None,
                "turns": last.info.get("num_turns") if last else None,
                "tokens_in": tokens["input"] if tokens else None,
                "tokens_out": tokens["output"] if tokens else None,
                "blocker": blockers.get(u.id) or "",
            }
        )
        if worktree:
            rows[-1].update(worktree_cells(last))
    return rows


#: The token counts every agent's attempts are summed in (see AttemptRecord.tokens).
TOKEN_KEYS = ("input", "cached", "output", "reasoning")


def sum_tokens(recs: Sequence[AttemptRecord]) -> dict[str, int] | None:
    """The tokens of these attempts added up (input, cached, output, reasoning; see
    AttemptRecord.tokens); None when none of them reported any."""
    counts = [t for r in recs if (t := r.tokens)]
    if not counts:
        return None
    return {k: sum(t.get(k, 0) for t in counts) for k in TOKEN_KEYS}


def tokens_text(tokens: Mapping[str, int]) -> str:
    """ "in 2,000 (cached 800), out 100 (reasoning 20)"."""
    return (
        f"in {tokens.get('input', 0):,} (cached {tokens.get('cached', 0):,}), "
        f"out {tokens.get('output', 0):,} (reasoning {tokens.get('reasoning', 0):,})"
    )


WORKTREE_COLUMNS = ["branch", "commit", "merge", "worktree"]


def worktree_cells(last: AttemptRecord | None) -> dict[str, Any]:
    """A task's worktree columns: its branch and commit, what the merge queue did ("merged",
    "conflict", "verify_failed", "no change" for a pass that changed nothing) and, when its
    work was not merged, where its worktree is kept."""
    work = last.work if last else None
    merge = last.merge if last else None
    if work is None:
        return dict.fromkeys(WORKTREE_COLUMNS, "")
    if merge is None:
        outcome = ""
    elif merge.status == "up_to_date":
        outcome = "no change"
    else:
        outcome = merge.status
    kept = "" if merge is not None and merge.ok else work.worktree
    return {"branch": work.branch, "commit": work.commit[:12], "merge": outcome, "worktree": kept}


# characters markdown may read as markup anywhere; "_" only where it can open or close
# emphasis (not between two letters or digits: "reset_token.py" stays as it is); "#" at the
# start; "&" before what reads as an entity ("&copy;")
_MD_SPECIAL = re.compile(r"[\\`*\[\]<>|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|^#|&(?=#?\w+;)")


def md_escape(text: str) -> str:
    """Text that markdown shows as itself (a file named ``__init__.py`` is not bold
    "init.py"): markup characters get a backslash, everything else is left alone.

    Example:
        >>> print(md_escape("__init__.py, reset_token.py"))
        \\_\\_init\\_\\_.py, reset_token.py
    """
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def summary_markdown(
    *,
    spec_name: str,
    plan_json: dict[str, Any],
    metrics: dict[str, Any],
    rows: list[dict[str, Any]],
    records: Mapping[str, Sequence[AttemptRecord]],
    run_dir: str,
    status_line: str,
    integration: Mapping[str, Any] | None = None,
) -> str:
    """The run's summary artifact: plan, metrics, cost, events, and each failure with the
    tail of its output (task text escaped: it is markdown)."""
    m = metrics
    lines = [
        f"# specwave: {spec_name}",
        "",
        f"**{status_line}**",
        "",
        "## Plan",
        "",
        f"- mode: `{plan_json.get('mode')}` ({plan_json.get('source')} waves), scheduler "
        f"`{m.get('scheduler')}`",
        "- waves: "
        + "; ".join(f"{w['wave_id']}: {', '.join(w['tasks'])}" for w in plan_json.get("waves", [])),
        f"- critical path: {' → '.join(plan_json.get('critical_path', []))}",
        f"- best possible speed-up with {plan_json.get('max_concurrency')} workers: "
        f"{plan_json.get('estimated_speedup')}×",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in (
        "wall_seconds",
        "worker_seconds_sum",
        "measured_speedup",
        "spec_estimated_speedup",
        "total_tasks",
        "passed",
        "failed",
        "blocked",
        "already_done",
        "not_started",
        "workers_spawned",
        "workers_retried",
        "max_concurrent_observed",
    ):
        lines.append(f"| {key} | {m.get(key)} |")
    total_cost = sum(r.cost_usd or 0.0 for recs in records.values() for r in recs)
    if total_cost:
        lines.append(f"| total_cost_usd | {total_cost:.4f} |")
    if tokens := sum_tokens([r for recs in records.values() for r in recs]):
        lines.append(f"| tokens | {tokens_text(tokens)} |")
    for e in m.get("events") or []:
        lines.append(f"\n> {e}")
    failures = [r for r in rows if r["status"] in ("fail", "blocked")]
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures:
            lines.append(f"### {md_escape(r['id'])}: {md_escape(r['description'])}")
            lines.append(f"- status: `{r['status']}` — {md_escape(r['blocker'])}")
            recs = records.get(r["id"]) or []
            if recs and recs[-1].output_tail:
                lines += ["", "```text", tail(recs[-1].output_tail, 30, 3000), "```"]
            lines.append("")
    if integration:
        lines += [
            "",
            "## Merge log",
            "",
            "| # | task | outcome | commit | files |",
            "|---|---|---|---|---|",
        ]
        for n, entry in enumerate(integration.get("merges") or [], 1):
            lines.append(
                f"| {n} | {md_escape(entry['task'])} | {entry['status']} | "
                f"`{(entry.get('commit') or '')[:12]}` | "
                f"{md_escape(', '.join(entry.get('files') or []))} |"
            )
        head = (integration.get("commit") or "?")[:12]
        lines += [
            "",
            f"Integration branch `{integration['branch']}` at `{head}`: take the "
            f"work with `{integration['take']}`.",
        ]
    lines += ["", f"Run folder: `{run_dir}`"]
    return "\n".join(lines)
