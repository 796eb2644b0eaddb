"""The planner: pure functions from a :class:`LoadedSpec` to a :class:`Plan`.

No I/O here. The graph is a networkx DiGraph over worker units (parent tasks):

* dependency edges ``a -> b`` (b needs a) from ``blocked_by``, the inverse of ``blocks``,
  context-summary ``dependencies`` and v4 ``depends_on`` (already merged by the format reader);
* conflict edges: two units whose files overlap never run at the same time, so the conflict
  becomes an ordering edge, oriented along one topological order of the dependency graph in
  which ties are broken by declared wave, then by task order. All edges therefore point forward
  in one linear order, so conflict edges can never create a cycle.
"""

from __future__ import annotations

import bisect
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from tasks_lib.errors import Problem
from tasks_lib.spec import LoadedSpec

DEFAULT_MAX_CONCURRENCY = 4
DOWNSTREAM_EXACT_LIMIT = 10_000  # units; above it Plan.downstream is all 0


@dataclass(frozen=True)
class Conflict:
    a: str
    b: str
    files: tuple[str, ...]


@dataclass
class PlannedWave:
    wave_id: int
    tasks: list[str]


@dataclass
class Plan:
    """What runs when, and how fast it can possibly go."""

    mode: str
    source: str  # "declared" (the spec's waves) or "computed"
    waves: list[PlannedWave]
    order: list[str]  # one topological order of all units (deps + conflict edges)
    predecessors: dict[str, list[str]]  # every edge the scheduler must respect
    dependency_edges: list[tuple[str, str]]
    conflict_edges: list[tuple[str, str]]
    conflicts: list[Conflict]
    weights: dict[str, float]
    estimate_unit: str
    critical_path: list[str]
    critical_path_length: float
    total_work: float
    lower_bound: float
    estimated_speedup: float
    max_concurrency: int
    remaining: dict[str, float]  # longest path from a unit to the end, itself included
    downstream: dict[str, int]  # number of units that (transitively) wait for this one
    wave_of: dict[str, int]
    warnings: list[Problem] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape of ``specwave plan --json`` (scripts read it: keep keys stable)."""
        return {
            "mode": self.mode,
            "source": self.source,
            "waves": [{"wave_id": w.wave_id, "tasks": list(w.tasks)} for w in self.waves],
            "critical_path": list(self.critical_path),
            "critical_path_length": round(self.critical_path_length, 3),
            "lower_bound": round(self.lower_bound, 3),
            "total_work": round(self.total_work, 3),
            "estimate_unit": self.estimate_unit,
            "estimated_speedup": round(self.estimated_speedup, 3),
            "max_concurrency": self.max_concurrency,
            "conflicts": [[c.a, c.b] for c in self.conflicts],
            "conflict_files": {f"{c.a}|{c.b}": list(c.files) for c in self.conflicts},
            "dependencies": {k: list(v) for k, v in self.predecessors.items()},
            "warnings": [str(w) for w in self.warnings],
        }


# ------------------------------------------------------------------------------ paths


class PathError(ValueError):
    pass


_WILDCARD = re.compile(r"[*?\[]")


def normalize_path(path: str) -> tuple[str, bool]:
    """Normalize a repository path. Returns (path, is_directory).

    ``src/api/`` names a directory (everything under it); a glob such as ``src/**/*.py``
    covers the directory before its first wildcard. Absolute paths and paths that leave the
    repository raise :class:`PathError`.
    """
    p = str(path).strip().replace("\\", "/")
    if not p:
        raise PathError("empty path")
    if p.startswith("/") or re.match(r"^[A-Za-z]:", p) or p.startswith("~"):
        raise PathError(f'path "{path}" is absolute')
    is_dir = p.endswith("/")
    if _WILDCARD.search(p):
        head = []
        for part in p.split("/"):
            if _WILDCARD.search(part):
                break
            head.append(part)
        p = "/".join(head) or "."
        is_dir = True
    norm = posixpath.normpath(p)
    if norm == ".." or norm.startswith("../"):
        raise PathError(f'path "{path}" leaves the repository')
    if norm == ".":
        return "", True
    return norm, is_dir


def find_conflicts(files: dict[str, list[str]]) -> list[Conflict]:
    """Pairs of units whose files overlap (a directory covers everything under it).

    Runs in O(n log n + conflicts) using a sorted path index, so 5,000 units stay fast.
    Invalid paths are skipped here (validation reports them).
    """
    by_path: dict[str, set[str]] = {}
    dirs: list[tuple[str, str]] = []
    for unit, paths in files.items():
        for raw in paths:
            try:
                norm, is_dir = normalize_path(raw)
            except PathError:
                continue
            by_path.setdefault(norm, set()).add(unit)
            if is_dir:
                dirs.append((norm, unit))
    keys = sorted(by_path)
    pairs: dict[tuple[str, str], set[str]] = {}

    def add(a: str, b: str, f: str) -> None:
        if a != b:
            pairs.setdefault((a, b) if a < b else (b, a), set()).add(f)

    for norm, owners in by_path.items():
        if len(owners) > 1:
            ordered = sorted(owners)
            for i, a in enumerate(ordered):
                for b in ordered[i + 1 :]:
                    add(a, b, norm)
    for d, unit in dirs:
        prefix = d + "/" if d else ""
        i = bisect.bisect_left(keys, prefix)
        while i < len(keys) and keys[i].startswith(prefix):
            for other in by_path[keys[i]]:
                add(unit, other, keys[i] if d == "" else (d + "/" if keys[i] == d else keys[i]))
            i += 1
    return [Conflict(a, b, tuple(sorted(fs))) for (a, b), fs in sorted(pairs.items())]


# ------------------------------------------------------------------------------ planning


def _mode_for(waves: list[PlannedWave]) -> str:
    if len(waves) <= 1:
        return "fully_parallel" if waves and len(waves[0].tasks) > 1 else "sequential"
    if all(len(w.tasks) == 1 for w in waves):
        return "sequential"
    return "parallel_waves"


def _weights(spec: LoadedSpec, ids: list[str]) -> tuple[dict[str, float], str]:
    by_id = {u.id: u for u in spec.units}  # spec.unit() is a linear scan: O(n^2) for 5,000
    units = [by_id[i] for i in ids]
    if units and all(u.estimate_minutes for u in units):
        return {u.id: float(u.estimate_minutes or 0) for u in units}, "minutes"
    if spec.declared_waves and units:
        per: dict[str, float] = {}
        for w in spec.declared_waves:
            if w.estimated_duration_minutes:
                for t in w.tasks:
                    per[t] = float(w.estimated_duration_minutes)
        if all(i in per for i in ids):
            return {i: per[i] for i in ids}, "minutes (wave estimates)"
    if units and all(u.estimated_tokens for u in units):
        return {u.id: float(u.estimated_tokens or 0) for u in units}, "tokens"
    return {i: 1.0 for i in ids}, "tasks"


def _cycle_text(cycle: Iterable[tuple[str, str]]) -> str:
    nodes = [a for a, _ in cycle]
    return " → ".join(f'"{n}"' for n in nodes + nodes[:1])


def plan_spec(
    spec: LoadedSpec, *, max_concurrency: int | None = None, replan: bool = False
) -> Plan:
    """Plan a spec. Problems go to ``plan.errors`` / ``plan.warnings``; nothing is raised."""
    from tasks_lib.store import display_path

    file = display_path(spec.tasks_path)  # the same label the loader's problems carry
    ids = [u.id for u in spec.units]
    index = {uid: i for i, uid in enumerate(ids)}
    errors: list[Problem] = []
    warnings: list[Problem] = list(spec.warnings)
    slots = max_concurrency or spec.max_concurrent_workers or DEFAULT_MAX_CONCURRENCY

    # --- files
    files: dict[str, list[str]] = {}
    for u in spec.units:
        files[u.id] = list(u.files)
        for raw in u.files:
            try:
                normalize_path(raw)
            except PathError as exc:
                errors.append(
                    Problem(
                        file,
                        f"{exc}",
                        task_id=u.id,
                        hint="use a path relative to the repository root",
                    )
                )

    # --- dependency graph
    dep = nx.DiGraph()
    dep.add_nodes_from(ids)
    for u in spec.units:
        for d in u.deps:
            if d in index and d != u.id:
                dep.add_edge(d, u.id)
    if not nx.is_directed_acyclic_graph(dep):
        for comp in nx.strongly_connected_components(dep):
            if len(comp) > 1 or any(dep.has_edge(n, n) for n in comp):
                cyc = nx.find_cycle(dep.subgraph(comp))
                errors.append(
                    Problem(
                        file,
                        f"dependency cycle {_cycle_text(cyc)}",
                        task_id=cyc[0][0],
                        hint="remove one of these dependencies",
                    )
                )
        return _empty_plan(spec, slots, warnings, errors)

    use_declared = bool(spec.declared_waves) and not replan
    wave_of: dict[str, int] = {}
    if use_declared:
        errors.extend(spec.wave_problems)
        for w in spec.declared_waves or []:
            for t in w.tasks:
                wave_of.setdefault(t, w.wave_id)
        for a, b in dep.edges:
            wa, wb = wave_of.get(a), wave_of.get(b)
            if wa is not None and wb is not None and wa >= wb:
                when = "with" if wa == wb else "before"
                errors.append(
                    Problem(
                        file,
                        f'wave {wb} runs it {when} task "{a}" (wave {wa}), which it depends on',
                        task_id=b,
                        hint=f"move it to a wave after {wa}, or run `specwave plan --replan`",
                    )
                )

    # --- conflicts, oriented along a topological order (ties: declared wave, task order)
    conflicts = find_conflicts(files)
    rank_key = {i: (wave_of.get(i, 0), index[i]) for i in ids}
    topo = list(nx.lexicographical_topological_sort(dep, key=lambda n: rank_key[n]))
    position = {n: k for k, n in enumerate(topo)}
    conflict_edges: list[tuple[str, str]] = []
    for c in conflicts:
        if use_declared and wave_of.get(c.a) is not None and wave_of.get(c.a) == wave_of.get(c.b):
            errors.append(
                Problem(
                    file,
                    f'shares {", ".join(c.files)} with task "{c.b}" in the same wave '
                    f"{wave_of[c.a]}",
                    task_id=c.a,
                    hint="move one of them to another wave, or run `specwave plan --replan`",
                )
            )
        a, b = (c.a, c.b) if position[c.a] < position[c.b] else (c.b, c.a)
        if not dep.has_edge(a, b):
            conflict_edges.append((a, b))

    graph = dep.copy()
    graph.add_edges_from(conflict_edges)

    # --- waves
    if use_declared:
        waves = [
            PlannedWave(w.wave_id, [t for t in w.tasks if t in index])
            for w in sorted(spec.declared_waves or [], key=lambda w: w.wave_id)
        ]
        mode = spec.declared_mode or _mode_for(waves)
        source = "declared"
        if spec.declared_mode and spec.declared_mode != _mode_for(waves) and len(ids) > 1:
            warnings.append(
                Problem(
                    file,
                    f'execution_strategy.mode is "{spec.declared_mode}" but the waves make '
                    f'it "{_mode_for(waves)}"',
                    severity="warning",
                    hint="fix the mode, or drop execution_strategy and let specwave plan it",
                )
            )
    else:
        waves = [
            PlannedWave(k + 1, sorted(gen, key=index.__getitem__))
            for k, gen in enumerate(nx.topological_generations(graph))
        ]
        wave_of = {t: w.wave_id for w in waves for t in w.tasks}
        mode = _mode_for(waves)
        source = "computed"

    # --- estimates, critical path, lower bound
    weights, unit = _weights(spec, ids)
    order = list(nx.lexicographical_topological_sort(graph, key=lambda n: rank_key[n]))
    finish: dict[str, float] = {}
    best_pred: dict[str, str | None] = {}
    for n in order:
        preds = list(graph.predecessors(n))
        p = max(preds, key=lambda x: finish[x]) if preds else None
        finish[n] = weights[n] + (finish[p] if p else 0.0)
        best_pred[n] = p
    remaining: dict[str, float] = {}
    downstream: dict[str, int] = {}
    for n in reversed(order):
        succ = list(graph.successors(n))
        remaining[n] = weights[n] + max((remaining[s] for s in succ), default=0.0)
    # a tie-breaker for the eager scheduler: how many units wait (transitively) on each one.
    # Reachability as int bitsets in reverse topological order: O(edges * n / 64) word
    # operations (tens of ms for 5,000 units); the memory is n^2 bits, so huge specs skip it.
    if len(ids) <= DOWNSTREAM_EXACT_LIMIT:
        reach: dict[str, int] = {}
        for n in reversed(order):  # a topological order of graph is one of dep too
            r = 0
            for s in dep.successors(n):
                r |= reach[s] | (1 << index[s])
            reach[n] = r
        for n in ids:
            downstream[n] = reach[n].bit_count()
    else:
        downstream = {n: 0 for n in ids}
    critical: list[str] = []
    if order:
        end = max(order, key=lambda x: (finish[x], -index[x]))
        cur: str | None = end
        while cur is not None:
            critical.append(cur)
            cur = best_pred[cur]
        critical.reverse()
    cp_len = finish[critical[-1]] if critical else 0.0
    total = sum(weights.values())
    lower = max(cp_len, total / slots) if ids else 0.0
    speedup = total / lower if lower else 1.0

    return Plan(
        mode=mode,
        source=source,
        waves=waves,
        order=order,
        predecessors={n: sorted(graph.predecessors(n), key=index.__getitem__) for n in ids},
        dependency_edges=list(dep.edges),
        conflict_edges=conflict_edges,
        conflicts=conflicts,
        weights=weights,
        estimate_unit=unit,
        critical_path=critical,
        critical_path_length=cp_len,
        total_work=total,
        lower_bound=lower,
        estimated_speedup=speedup,
        max_concurrency=slots,
        remaining=remaining,
        downstream=downstream,
        wave_of=wave_of,
        warnings=warnings,
        errors=errors,
    )


def _empty_plan(
    spec: LoadedSpec, slots: int, warnings: list[Problem], errors: list[Problem]
) -> Plan:
    return Plan(
        mode="sequential",
        source="computed",
        waves=[],
        order=[],
        predecessors={},
        dependency_edges=[],
        conflict_edges=[],
        conflicts=[],
        weights={},
        estimate_unit="tasks",
        critical_path=[],
        critical_path_length=0.0,
        total_work=0.0,
        lower_bound=0.0,
        estimated_speedup=1.0,
        max_concurrency=slots,
        remaining={},
        downstream={},
        wave_of={},
        warnings=warnings,
        errors=errors,
    )


def transitive_dependents(plan: Plan, task_id: str) -> list[str]:
    """Every unit that waits (through dependency edges) on ``task_id``, in plan order."""
    dependents: dict[str, list[str]] = {}
    for a, b in plan.dependency_edges:
        dependents.setdefault(a, []).append(b)
    seen: set[str] = set()
    stack = [task_id]
    while stack:
        for nxt in dependents.get(stack.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return [n for n in plan.order if n in seen]
