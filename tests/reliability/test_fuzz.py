"""Item 8: fuzzing (hypothesis) of the loaders and the worker-result parsers.

Contracts:

* loading any bytes, any JSON value, or a mutated real spec, in any supported format, either
  gives a LoadedSpec or raises SpecError (a user message) — never another exception; planning
  a loaded spec never raises; a valid spec can be written back through the store and loads
  again;
* parsing any worker output gives one outcome with a one-line reason, and ``pass`` only when
  the process exited 0 in time and the worker itself claimed ``pass``;
* the Claude stream-json reader (StreamSummary, summarize_event) takes any line.

Example counts are modest so the suite stays quick in CI; raise them with
``HYPOTHESIS_PROFILE=long`` (see the profile below) for a soak.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks_lib.errors import SpecError
from tasks_lib.formats import document_format, load_spec
from tasks_lib.planner import plan_spec
from tasks_lib.results import AgentSignals, Outcome, parse_worker_output
from tasks_lib.store import PlanStore, TaskUpdate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
FUZZ = settings.get_profile(PROFILE if PROFILE in ("ci", "long") else "ci")

# ------------------------------------------------------------------ strategies

AOS_KEYS = [
    "version",
    "spec",
    "tasks",
    "execution_strategy",
    "waves",
    "wave_id",
    "id",
    "type",
    "parent",
    "subtasks",
    "status",
    "description",
    "parallelization",
    "blocked_by",
    "blocks",
    "shared_files",
    "wave",
    "depends_on",
    "computed",
    "dependency_graph",
    "attempts",
    "max_concurrent_workers",
    "mode",
    "summary",
    "task_type",
    "isolation_score",
    "artifacts",
    "master",
    "title",
    "dependencies",
    "details",
    "testStrategy",
    "priority",
    "relevant_files",
    "global_context",
]
IDS = st.sampled_from(["1", "2", "3", "1.1", "1.2", "x", "", "../1", 1, 2, 3, 1.5, None, True])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-5, 10**20)
    | IDS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(AOS_KEYS) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=40,
)


def _example_docs() -> list[tuple[str, Any]]:
    out = []
    for p in sorted(EXAMPLES.glob("*/tasks.json")):
        out.append((p.parent.name, json.loads(p.read_text(encoding="utf-8"))))
    return out


EXAMPLE_DOCS = _example_docs()


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated_spec(draw) -> Any:
    """A real example tasks.json with 1-4 random subtrees replaced, deleted or duplicated."""
    _, doc = draw(st.sampled_from(EXAMPLE_DOCS))
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        op = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if op == "replace":
            parent[key] = draw(JSON)
        elif op == "delete":
            del parent[key]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return doc


MD_LINES = st.sampled_from(
    [
        "# Tasks",
        "## Phase 1",
        "- [ ] 1. Build the thing",
        "- [x] 1. Done thing",
        "  - [ ] 1.1 Write tests",
        "  - [x] 1.2 Implement",
        "- [ ] T001 Setup project",
        "- [ ] T002 [P] Add model in src/models/user.py",
        "- [X] T003 [US1] Endpoint",
        "- [ ] 2. Second **bold** task",
        "    - [ ] 2.1 Sub",
        "",
        "Depends on: 1",
        "- [ ] T004 depends on T009",
        "```",
        "- [ ] 1. duplicate id",
        "* [ ] 3. star bullet",
    ]
) | st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


# ------------------------------------------------------------------ the property


def _check_loads(folder: Path) -> None:
    """load_spec: a LoadedSpec or SpecError; then planning never raises; a valid spec can be
    written back and loads again."""
    try:
        spec = load_spec(folder)
    except SpecError as exc:
        assert exc.problems and all(str(p) for p in exc.problems)
        return
    plan = plan_spec(spec)
    if plan.errors or not spec.units:
        return
    store = PlanStore(spec.tasks_path, document_format(spec))
    store.apply(TaskUpdate(spec.units[0].id, status="in_progress", attempts=0))
    again = load_spec(folder)
    assert [u.id for u in again.units] == [u.id for u in spec.units]


@pytest.fixture(scope="module")
def scratch():
    d = Path(tempfile.mkdtemp(prefix="specwave-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _fresh(scratch: Path, name: str) -> Path:
    folder = scratch / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    return folder


@FUZZ
@given(data=st.binary(max_size=3000), name=st.sampled_from(["tasks.json", "tasks.md"]))
def test_any_bytes_load_or_raise_spec_error(scratch, data, name):
    folder = _fresh(scratch, "bytes")
    (folder / name).write_bytes(data)
    _check_loads(folder)


@FUZZ
@given(doc=JSON)
def test_any_json_value_loads_or_raises_spec_error(scratch, doc):
    folder = _fresh(scratch, "json")
    (folder / "tasks.json").write_text(json.dumps(doc), encoding="utf-8")
    _check_loads(folder)


@FUZZ
@given(doc=mutated_spec(), indent=st.sampled_from([None, 2, 4, "\t"]))
def test_mutated_real_specs_load_or_raise_spec_error(scratch, doc, indent):
    folder = _fresh(scratch, "mutated")
    (folder / "tasks.json").write_text(json.dumps(doc, indent=indent), encoding="utf-8")
    _check_loads(folder)


@FUZZ
@given(doc=mutated_spec(), ctx=JSON)
def test_any_context_summary_loads_or_raises_spec_error(scratch, doc, ctx):
    folder = _fresh(scratch, "ctx")
    (folder / "tasks.json").write_text(json.dumps(doc), encoding="utf-8")
    (folder / "context-summary.json").write_text(json.dumps(ctx), encoding="utf-8")
    _check_loads(folder)


@FUZZ
@given(lines=st.lists(MD_LINES, max_size=30))
def test_any_markdown_checklist_loads_or_raises_spec_error(scratch, lines):
    folder = _fresh(scratch, "md")
    (folder / "tasks.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _check_loads(folder)


@FUZZ
@given(doc=JSON, tagged=st.booleans())
def test_any_taskmaster_shaped_json_loads_or_raises_spec_error(scratch, doc, tagged):
    folder = _fresh(scratch, "tm")
    tasks = doc if isinstance(doc, list) else [doc]
    body = {"master": {"tasks": tasks}} if tagged else {"tasks": tasks}
    (folder / ".taskmaster" / "tasks").mkdir(parents=True)
    (folder / ".taskmaster" / "tasks" / "tasks.json").write_text(json.dumps(body))
    _check_loads(folder)


# ------------------------------------------------------------------ worker results

RESULT_KEYS = [
    "status",
    "files_modified",
    "files_created",
    "functions_created",
    "exports_added",
    "test_files",
    "test_results",
    "ran",
    "passed",
    "failed",
    "blocker",
    "notes",
    "duration_minutes",
]
RESULT_JSON = st.recursive(
    SCALARS | st.sampled_from(["pass", "fail", "blocked", "PASS", "done"]),
    lambda c: (
        st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(RESULT_KEYS), c, max_size=8)
    ),
    max_leaves=25,
)
PIECES = st.sampled_from(
    [
        "```json",
        "```",
        "````",
        "~~~json",
        "TASK COMPLETE",
        "task_complete",
        "\r\n",
        "\n",
        "Done.",
        "{",
        "}",
        '"status": "pass"',
        "```JSON",
        "``` json",
        "\x00",
        "\ufeff",
    ]
)


@st.composite
def worker_output(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "piece", "block"]))
        if kind == "text":
            parts.append(draw(st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)))
        elif kind == "piece":
            parts.append(draw(PIECES))
        else:
            body = json.dumps(draw(RESULT_JSON), indent=draw(st.sampled_from([None, 2])))
            parts.append(
                f"```json\n{body}\n```\n"
                + draw(st.sampled_from(["TASK COMPLETE", "", "task complete.", "TASK COMPLETED"]))
            )
    return draw(st.sampled_from(["\n", "", " "])).join(parts)


SIGNALS = st.builds(
    AgentSignals,
    is_error=st.booleans(),
    permission_denials=st.lists(st.text(max_size=10), max_size=2),
    errors=st.lists(st.text(max_size=20), max_size=2),
)


@FUZZ
@given(
    text=worker_output() | st.text() | st.binary().map(lambda b: b.decode("latin-1")),
    exit_code=st.none() | st.integers(-15, 3) | st.just(0),
    timed_out=st.booleans(),
    signals=st.none() | SIGNALS,
)
def test_any_worker_output_gives_one_outcome_and_a_one_line_reason(
    text, exit_code, timed_out, signals
):
    parsed = parse_worker_output(text, exit_code=exit_code, timed_out=timed_out, signals=signals)
    assert isinstance(parsed.outcome, Outcome)
    assert isinstance(parsed.reason, str) and parsed.reason
    assert "\n" not in parsed.reason and len(parsed.reason) <= 400
    if parsed.outcome == Outcome.PASS:
        assert exit_code == 0 and not timed_out
        assert parsed.result is not None and parsed.result.status == "pass"
        assert not (signals and (signals.is_error or signals.permission_denials))


@FUZZ
@given(data=st.binary(max_size=500))
def test_raw_bytes_worker_output_is_parsed(data):
    parsed = parse_worker_output(data, exit_code=0)
    assert isinstance(parsed.outcome, Outcome)


# ------------------------------------------------------------------ Claude stream-json

WELL_FORMED_EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(["system", "assistant", "user", "result", "stream_event", "x"])},
    optional={
        "subtype": st.sampled_from(["init", "api_retry", "success", "error", None]),
        "message": st.fixed_dictionaries({}, optional={"content": st.lists(JSON)}),
        "result": JSON,
        "is_error": JSON,
        "total_cost_usd": JSON,
        "permission_denials": JSON,
        "session_id": JSON,
        "num_turns": JSON,
    },
)
STREAM_EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(["system", "assistant", "user", "result", "stream_event", "x"])},
    optional={
        "subtype": st.sampled_from(["init", "api_retry", "success", "error", None]),
        "message": JSON,
        "result": JSON,
        "is_error": JSON,
        "total_cost_usd": JSON,
        "permission_denials": JSON,
        "session_id": JSON,
        "num_turns": JSON,
    },
)
STREAM_LINE = (
    STREAM_EVENT.map(json.dumps)
    | JSON.map(json.dumps)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
)


@FUZZ
@given(lines=st.lists(STREAM_LINE, max_size=12))
def test_claude_stream_reader_takes_any_lines(lines):
    from tasks_lib.agents.claude import StreamSummary, summarize_event

    summary = StreamSummary.parse("\n".join(lines))
    assert isinstance(summary.output(), str)
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            assert all(isinstance(s, str) for s in summarize_event(event))


@FUZZ
@given(
    lines=st.lists(
        WELL_FORMED_EVENT.map(json.dumps)
        | st.text(st.characters(blacklist_categories=("Cs",)), max_size=80),
        max_size=12,
    )
)
def test_claude_stream_reader_takes_any_event_whose_message_is_an_object(lines):
    from tasks_lib.agents.claude import StreamSummary, summarize_event

    summary = StreamSummary.parse("\n".join(lines))
    assert isinstance(summary.output(), str)
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            assert all(isinstance(s, str) for s in summarize_event(event))
