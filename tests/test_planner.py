"""The planner: waves, conflicts, critical path and bounds, checked against brute-force oracles."""

from __future__ import annotations

import itertools
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks_lib.planner import (
    DEFAULT_MAX_CONCURRENCY,
    Conflict,
    PathError,
    find_conflicts,
    normalize_path,
    plan_spec,
    transitive_dependents,
)
from tasks_lib.spec import DeclaredWave, LoadedSpec, SpecUnit


def make_spec(
    units: list[SpecUnit],
    *,
    declared: list[DeclaredWave] | None = None,
    mode: str | None = None,
    slots: int | None = None,
) -> LoadedSpec:
    return LoadedSpec(
        name="t",
        folder=Path("."),
        tasks_path=Path("tasks.json"),
        format="agent-os",
        units=units,
        declared_waves=declared,
        declared_mode=mode,
        max_concurrent_workers=slots,
    )


def unit(
    uid: str, deps=(), files=(), minutes: float | None = None, tokens: int | None = None
) -> SpecUnit:
    return SpecUnit(
        id=uid,
        description=f"task {uid}",
        deps=list(deps),
        files=list(files),
        estimate_minutes=minutes,
        estimated_tokens=tokens,
    )


# ----------------------------------------------------------------------- normalize_path


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("src/app.py", ("src/app.py", False)),
        ("./src/app.py", ("src/app.py", False)),
        ("src//app.py", ("src/app.py", False)),
        ("src/./app.py", ("src/app.py", False)),
        ("src/lib/../app.py", ("src/app.py", False)),
        ("src\\win\\path.py", ("src/win/path.py", False)),
        ("  src/app.py  ", ("src/app.py", False)),
        ("src/", ("src", True)),
        ("src/api//", ("src/api", True)),
        ("./", ("", True)),
        ("src/..", ("", True)),
        ("src/**/*.py", ("src", True)),
        ("src/api/*.ts", ("src/api", True)),
        ("tests/test_?.py", ("tests", True)),
        ("tests/[ab].py", ("tests", True)),
        ("*.md", ("", True)),
        ("**", ("", True)),
    ],
)
def test_normalize_path(raw: str, expected: tuple[str, bool]):
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        ("/etc/passwd", "is absolute"),
        ("/", "is absolute"),
        ("C:\\Users\\x.py", "is absolute"),
        ("c:/x.py", "is absolute"),
        ("~/notes.md", "is absolute"),
        ("..", "leaves the repository"),
        ("../sibling/x.py", "leaves the repository"),
        ("src/../../x.py", "leaves the repository"),
        ("./../x.py", "leaves the repository"),
        ("", "empty path"),
        ("   ", "empty path"),
    ],
)
def test_normalize_path_rejects(raw: str, message: str):
    with pytest.raises(PathError, match=message):
        normalize_path(raw)


# ----------------------------------------------------------------------- find_conflicts


@pytest.mark.parametrize(
    "files, expected",
    [
        # equal files, however they are spelled
        ({"a": ["src/x.py"], "b": ["./src//x.py"]}, [Conflict("a", "b", ("src/x.py",))]),
        # a directory covers a file under it (at any depth)
        ({"a": ["src/"], "b": ["src/deep/er/x.py"]}, [Conflict("a", "b", ("src/deep/er/x.py",))]),
        # a directory covers a directory under it
        ({"a": ["src/api/v1/"], "b": ["src/"]}, [Conflict("a", "b", ("src/api/v1",))]),
        # the same directory twice
        ({"a": ["src/"], "b": ["src/"]}, [Conflict("a", "b", ("src",))]),
        # a glob covers what is under its fixed part
        ({"a": ["src/**/*.py"], "b": ["src/x/y.py"]}, [Conflict("a", "b", ("src/x/y.py",))]),
        # the repository root covers everything
        (
            {"a": ["./"], "b": ["x.py"], "c": ["deep/y/"]},
            [Conflict("a", "b", ("x.py",)), Conflict("a", "c", ("deep/y",))],
        ),
        # one unit listing a file and its folder does not conflict with itself
        ({"a": ["src/", "src/x.py"], "b": ["docs/"]}, []),
        # a shared prefix is not a shared folder
        ({"a": ["src/api/"], "b": ["src/api2/x.py", "src/api.py", "src/ap/"]}, []),
        # a file is not a folder: "src/x.py" does not cover "src/x.py.bak"
        ({"a": ["src/x.py"], "b": ["src/x.py.bak"]}, []),
        # paths that validation rejects are ignored here
        ({"a": ["/etc/"], "b": ["/etc/passwd"], "c": ["../x"], "d": ["../x"]}, []),
        # several shared files are all named, sorted
        (
            {"b": ["z.py", "a.py", "m/"], "a": ["a.py", "z.py", "m/n.py"]},
            [Conflict("a", "b", ("a.py", "m/n.py", "z.py"))],
        ),
        # three owners of one file: every pair
        (
            {"c": ["f"], "a": ["f"], "b": ["f"]},
            [Conflict("a", "b", ("f",)), Conflict("a", "c", ("f",)), Conflict("b", "c", ("f",))],
        ),
    ],
)
def test_find_conflicts(files: dict[str, list[str]], expected: list[Conflict]):
    assert find_conflicts(files) == expected


def covers(p: tuple[str, bool], q: tuple[str, bool]) -> bool:
    """Brute-force overlap of two normalized paths."""
    (a, a_dir), (b, b_dir) = p, q
    if a == b:
        return True
    if a_dir and (a == "" or b.startswith(a + "/")):
        return True
    return b_dir and (b == "" or a.startswith(b + "/"))


def conflict_oracle(files: dict[str, list[str]]) -> set[tuple[str, str]]:
    norm = {u: [normalize_path(f) for f in fs] for u, fs in files.items()}
    return {
        (a, b) if a < b else (b, a)
        for a, b in itertools.combinations(files, 2)
        if any(covers(p, q) for p in norm[a] for q in norm[b])
    }


PATH_POOL = [
    "x/",
    "x/a.py",
    "x/b.py",
    "x/sub/",
    "x/sub/c.py",
    "y.py",
    "./y.py",
    "z/d.py",
    "z//d.py",
    "z/",
    "w/e.py",
    "w/f.py",
    "src/**/*.ts",
    "src/app.ts",
    "src2/app.ts",
    "docs/readme.md",
    "docs/",
]


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([f"t{i}" for i in range(12)]),
        st.lists(st.sampled_from(PATH_POOL), max_size=4),
        max_size=12,
    )
)
def test_find_conflicts_matches_brute_force(files: dict[str, list[str]]):
    found = find_conflicts(files)
    assert {(c.a, c.b) for c in found} == conflict_oracle(files)
    assert all(c.a < c.b and c.files for c in found)


# ------------------------------------------------------------------- planning random DAGs


@st.composite
def random_specs(draw) -> tuple[LoadedSpec, int | None]:
    n = draw(st.integers(min_value=1, max_value=25))
    ids = [f"{i + 1}" for i in range(n)]
    edge_p = draw(st.sampled_from([0.0, 0.1, 0.3, 0.6]))
    weights_kind = draw(st.sampled_from(["none", "minutes", "tokens"]))
    units = []
    for j, uid in enumerate(ids):
        deps = [ids[i] for i in range(j) if draw(st.floats(0, 1)) < edge_p]
        files = draw(st.lists(st.sampled_from(PATH_POOL), max_size=3))
        units.append(
            unit(
                uid,
                deps,
                files,
                minutes=draw(st.integers(1, 60)) if weights_kind == "minutes" else None,
                tokens=draw(st.integers(100, 9000)) if weights_kind == "tokens" else None,
            )
        )
    # the task list order need not be a topological order
    units = draw(st.permutations(units))
    slots = draw(st.none() | st.integers(min_value=1, max_value=6))
    return make_spec(units), slots


def longest_path(nodes: list[str], preds: dict[str, list[str]], w: dict[str, float]) -> float:
    best: dict[str, float] = {}

    def finish(n: str) -> float:
        if n not in best:
            best[n] = w[n] + max((finish(p) for p in preds[n]), default=0.0)
        return best[n]

    return max((finish(n) for n in nodes), default=0.0)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_specs())
def test_computed_plan_is_valid(case):
    spec, slots = case
    plan = plan_spec(spec, max_concurrency=slots)
    ids = [u.id for u in spec.units]
    assert plan.errors == []
    assert plan.source == "computed"

    # every unit in exactly one wave; waves numbered 1..k
    placed = [t for w in plan.waves for t in w.tasks]
    assert sorted(placed) == sorted(ids)
    assert [w.wave_id for w in plan.waves] == list(range(1, len(plan.waves) + 1))
    assert all(w.tasks for w in plan.waves)
    wave_of = {t: w.wave_id for w in plan.waves for t in w.tasks}
    assert plan.wave_of == wave_of

    # every dependency edge goes forward
    dep_edges = {(d, u.id) for u in spec.units for d in u.deps}
    assert set(plan.dependency_edges) == dep_edges
    for a, b in dep_edges:
        assert wave_of[a] < wave_of[b], (a, b)

    # conflicting units never share a wave, and every conflict is found
    files = {u.id: u.files for u in spec.units}
    assert {(c.a, c.b) for c in plan.conflicts} == conflict_oracle(files)
    for c in plan.conflicts:
        assert wave_of[c.a] != wave_of[c.b], c

    # predecessors = dependency edges + conflict edges, all respected by waves and order
    position = {t: i for i, t in enumerate(plan.order)}
    assert sorted(plan.order) == sorted(ids)
    all_edges = {(p, n) for n, ps in plan.predecessors.items() for p in ps}
    assert dep_edges <= all_edges
    assert all_edges == dep_edges | set(plan.conflict_edges)
    for a, b in all_edges:
        assert position[a] < position[b] and wave_of[a] < wave_of[b]

    # the critical path is a real path of maximal length, and the bounds follow from it
    cp = plan.critical_path
    assert cp and len(set(cp)) == len(cp)
    for a, b in zip(cp, cp[1:]):
        assert (a, b) in all_edges
    assert plan.critical_path_length == pytest.approx(sum(plan.weights[t] for t in cp))
    assert plan.critical_path_length == pytest.approx(
        longest_path(ids, plan.predecessors, plan.weights)
    )
    expected_slots = slots or DEFAULT_MAX_CONCURRENCY
    assert plan.max_concurrency == expected_slots
    assert plan.total_work == pytest.approx(sum(plan.weights.values()))
    assert plan.lower_bound == pytest.approx(
        max(plan.critical_path_length, plan.total_work / expected_slots)
    )
    assert plan.estimated_speedup == pytest.approx(plan.total_work / plan.lower_bound)
    # an invariant of any plan: never slower than sequential, never more than the slots
    assert 1.0 <= plan.estimated_speedup + 1e-9 <= expected_slots + 1e-9

    # weights come from the estimates when every unit has one
    if all(u.estimate_minutes for u in spec.units):
        assert plan.estimate_unit == "minutes"
        assert plan.weights == {u.id: float(u.estimate_minutes) for u in spec.units}
    elif all(u.estimated_tokens for u in spec.units):
        assert plan.estimate_unit == "tokens"
    else:
        assert set(plan.weights.values()) == {1.0}

    # remaining = longest path from a unit to the end; downstream = transitive dependents
    succ = {t: [b for a, b in all_edges if a == t] for t in ids}
    assert plan.remaining == pytest.approx({t: longest_path([t], succ, plan.weights) for t in ids})
    dep = nx.DiGraph(list(dep_edges))
    dep.add_nodes_from(ids)
    assert plan.downstream == {t: len(nx.descendants(dep, t)) for t in ids}
    for t in ids:
        assert set(transitive_dependents(plan, t)) == nx.descendants(dep, t)


def test_waves_are_as_early_as_possible_and_in_task_order():
    spec = make_spec(
        [
            unit("a"),
            unit("b", ["a"]),
            unit("c"),
            unit("d", ["b", "c"]),
            unit("e", files=["src/"]),
            unit("f", files=["src/x.py"]),
        ]
    )
    plan = plan_spec(spec)
    assert [w.tasks for w in plan.waves] == [["a", "c", "e"], ["b", "f"], ["d"]]
    assert plan.mode == "parallel_waves"
    assert plan.conflict_edges == [("e", "f")]


@pytest.mark.parametrize(
    "units, mode",
    [
        ([unit("a")], "sequential"),
        ([unit("a"), unit("b", ["a"]), unit("c", ["b"])], "sequential"),
        ([unit("a"), unit("b"), unit("c")], "fully_parallel"),
        ([unit("a"), unit("b"), unit("c", ["a"])], "parallel_waves"),
        ([unit("a", files=["f"]), unit("b", files=["f"])], "sequential"),
    ],
)
def test_mode_follows_the_waves(units, mode):
    assert plan_spec(make_spec(units)).mode == mode


def test_critical_path_and_lower_bound_with_minutes():
    # a(10) -> b(30) -> d(5) is the longest chain (45); a -> c(20) -> d is 35; e(40) alone
    spec = make_spec(
        [
            unit("a", minutes=10),
            unit("b", ["a"], minutes=30),
            unit("c", ["a"], minutes=20),
            unit("d", ["b", "c"], minutes=5),
            unit("e", minutes=40),
        ]
    )
    plan = plan_spec(spec, max_concurrency=2)
    assert plan.estimate_unit == "minutes"
    assert plan.critical_path == ["a", "b", "d"]
    assert plan.critical_path_length == 45
    assert plan.total_work == 105
    assert plan.lower_bound == 52.5  # 105 / 2 workers > 45
    assert plan.estimated_speedup == pytest.approx(2.0)
    plan4 = plan_spec(spec, max_concurrency=4)
    assert plan4.lower_bound == 45  # the chain, not the work, bounds 4 workers
    assert plan4.estimated_speedup == pytest.approx(105 / 45)
    assert plan4.remaining == {"a": 45, "b": 35, "c": 25, "d": 5, "e": 40}
    assert plan4.downstream == {"a": 3, "b": 1, "c": 1, "d": 0, "e": 0}


def test_slots_come_from_the_spec_when_not_given():
    spec = make_spec([unit("a"), unit("b")], slots=3)
    assert plan_spec(spec).max_concurrency == 3
    assert plan_spec(spec, max_concurrency=1).max_concurrency == 1
    assert plan_spec(make_spec([unit("a")])).max_concurrency == DEFAULT_MAX_CONCURRENCY


def test_a_dependency_cycle_is_an_error_naming_the_cycle():
    spec = make_spec([unit("a", ["c"]), unit("b", ["a"]), unit("c", ["b"]), unit("d")])
    plan = plan_spec(spec)
    assert len(plan.errors) == 1
    text = str(plan.errors[0])
    assert "dependency cycle" in text
    for t in ("a", "b", "c"):
        assert f'"{t}"' in text.split("cycle", 1)[1]
    assert plan.waves == []


def test_bad_paths_are_errors_with_the_task():
    plan = plan_spec(make_spec([unit("a", files=["/abs/x.py"]), unit("b", files=["../up"])]))
    texts = sorted(str(e) for e in plan.errors)
    assert texts == [
        'tasks.json: task "a": path "/abs/x.py" is absolute '
        "— use a path relative to the repository root",
        'tasks.json: task "b": path "../up" leaves the repository '
        "— use a path relative to the repository root",
    ]


# --------------------------------------------------------------------- declared waves


def declared(*waves: list[str]) -> list[DeclaredWave]:
    return [DeclaredWave(i + 1, list(w)) for i, w in enumerate(waves)]


def test_valid_declared_waves_are_used_as_written():
    spec = make_spec(
        [unit("a"), unit("b"), unit("c", ["a"])],
        declared=declared(["a"], ["b", "c"]),
        mode="parallel_waves",
    )
    plan = plan_spec(spec)
    assert plan.errors == [] and plan.source == "declared"
    assert [w.tasks for w in plan.waves] == [["a"], ["b", "c"]]


def test_declared_waves_that_break_a_dependency_or_a_conflict_are_errors_and_replan_fixes_them():
    spec = make_spec(
        [unit("a", files=["src/"]), unit("b", ["a"]), unit("c", files=["src/x"])],
        declared=declared(["a", "b", "c"]),
        mode="fully_parallel",
    )
    plan = plan_spec(spec)
    texts = [str(e) for e in plan.errors]
    assert (
        'tasks.json: task "b": wave 1 runs it with task "a" (wave 1), which it depends on '
        "— move it to a wave after 1, or run `specwave plan --replan`" in texts
    )
    assert any('task "a": shares src/x with task "c" in the same wave 1' in t for t in texts)

    replanned = plan_spec(spec, replan=True)
    assert replanned.errors == [] and replanned.source == "computed"
    assert [w.tasks for w in replanned.waves] == [["a"], ["b", "c"]]


def test_declared_wave_before_its_dependency_is_an_error():
    spec = make_spec([unit("a", ["b"]), unit("b")], declared=declared(["a"], ["b"]))
    texts = [str(e) for e in plan_spec(spec).errors]
    assert texts == [
        'tasks.json: task "a": wave 1 runs it before task "b" (wave 2), which it '
        "depends on — move it to a wave after 2, or run `specwave plan --replan`"
    ]


def test_declared_mode_that_disagrees_with_the_waves_is_a_warning():
    spec = make_spec([unit("a"), unit("b")], declared=declared(["a", "b"]), mode="sequential")
    plan = plan_spec(spec)
    assert plan.errors == []
    assert [w.severity for w in plan.warnings] == ["warning"]
    assert 'mode is "sequential" but the waves make it "fully_parallel"' in str(plan.warnings[0])


def test_empty_spec_plans_to_nothing():
    plan = plan_spec(make_spec([]))
    assert plan.errors == [] and plan.waves == [] and plan.critical_path == []
    assert plan.lower_bound == 0 and plan.estimated_speedup == 1.0


def test_downstream_counts_are_exact_past_two_thousand_units():
    # a chain of 2,500 units plus one loose unit: exact transitive counts, not zeros
    n = 2500
    units = [unit(str(i), [str(i - 1)] if i else []) for i in range(n)] + [unit("loose")]
    plan = plan_spec(make_spec(units))
    assert plan.downstream["0"] == n - 1
    assert plan.downstream["1234"] == n - 1235
    assert plan.downstream[str(n - 1)] == 0 and plan.downstream["loose"] == 0
    assert len(plan.waves) == n and plan.critical_path_length == n
