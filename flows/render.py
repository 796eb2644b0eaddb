"""Terminal rendering (rich) for the CLI: plans, run progress, final tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tasks_lib.planner import Plan
from tasks_lib.spec import LoadedSpec


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def render_plan(spec: LoadedSpec, plan: Plan, console: Console | None = None) -> None:
    console = console or Console()
    critical = set(plan.critical_path)
    conflicted = {c.a for c in plan.conflicts} | {c.b for c in plan.conflicts}
    table = Table(title=f"{spec.name} — {plan.mode} ({plan.source} waves)", title_justify="left")
    table.add_column("wave", justify="right")
    table.add_column("task")
    table.add_column("description")
    table.add_column("after")
    table.add_column("files")
    table.add_column("status")
    for w in plan.waves:
        for i, tid in enumerate(w.tasks):
            u = spec.unit(tid)
            mark = "★ " if tid in critical else "  "
            files = ", ".join(u.files[:3]) + (f" +{len(u.files) - 3}" if len(u.files) > 3 else "")
            if tid in conflicted:
                files = f"[yellow]{files}[/yellow]"
            table.add_row(
                str(w.wave_id) if i == 0 else "",
                mark + tid,
                _short(u.description),
                ", ".join(plan.predecessors.get(tid, [])),
                files,
                u.status.value,
            )
        table.add_section()
    console.print(table)
    unit = plan.estimate_unit
    console.print(
        f"critical path (★): {' → '.join(plan.critical_path)} "
        f"= {plan.critical_path_length:g} {unit}"
    )
    console.print(
        f"total work: {plan.total_work:g} {unit}; lower bound on the makespan with "
        f"{plan.max_concurrency} workers: {plan.lower_bound:g} {unit}"
    )
    console.print(f"best possible speed-up over sequential: {plan.estimated_speedup:.2f}×")
    if plan.conflicts:
        console.print(
            "file conflicts (never run together): "
            + "; ".join(f"{c.a}↔{c.b} ({', '.join(c.files)})" for c in plan.conflicts[:10])
            + (f" … +{len(plan.conflicts) - 10}" if len(plan.conflicts) > 10 else "")
        )
