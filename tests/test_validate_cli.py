"""`specwave validate / plan / schema` on good and bad spec folders, through the real CLI.

Every bad spec is built here from one small valid document; each test checks the exact message,
the exit code (2 for errors, 0 with "warning:" lines), that no traceback is printed and that the
spec folder is byte-identical afterwards (validation never writes).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

SPECWAVE = shutil.which("specwave")


def base_tasks() -> dict:
    """A valid v2 spec: 1 and 2 in wave 1, 3 (needs both, shares src/a.py with 1) in wave 2."""
    return {
        "version": "2.0",
        "spec": "cli-test",
        "execution_strategy": {
            "mode": "parallel_waves",
            "waves": [
                {"wave_id": 1, "tasks": ["1", "2"], "rationale": "independent"},
                {"wave_id": 2, "tasks": ["3"], "rationale": "needs 1 and 2"},
            ],
            "max_concurrent_workers": 2,
        },
        "tasks": [
            {
                "id": "1",
                "type": "parent",
                "subtasks": ["1.1"],
                "description": "model",
                "status": "pending",
                "parallelization": {
                    "wave": 1,
                    "blocked_by": [],
                    "blocks": ["3"],
                    "shared_files": ["src/a.py"],
                },
            },
            {
                "id": "1.1",
                "type": "subtask",
                "parent": "1",
                "description": "model test",
                "status": "pending",
            },
            {
                "id": "2",
                "type": "parent",
                "subtasks": [],
                "description": "email",
                "status": "pending",
                "parallelization": {
                    "wave": 1,
                    "blocked_by": [],
                    "blocks": ["3"],
                    "shared_files": ["src/b.py"],
                },
            },
            {
                "id": "3",
                "type": "parent",
                "subtasks": [],
                "description": "endpoint",
                "status": "pending",
                "parallelization": {
                    "wave": 2,
                    "blocked_by": ["1", "2"],
                    "blocks": [],
                    "shared_files": ["src/a.py", "src/api/"],
                },
            },
        ],
    }


def base_context() -> dict:
    return {
        "version": "2.0",
        "spec": "cli-test",
        "global_context": {"product_pitch": "p", "tech_stack": ["Python"]},
        "tasks": {
            tid: {"summary": f"task {tid}", "dependencies": [], "estimated_tokens": 1000}
            for tid in ("1", "1.1", "2", "3")
        },
    }


def tasks_of(doc: dict) -> dict[str, dict]:
    return {t["id"]: t for t in doc["tasks"]}


@pytest.fixture
def spec_dir(tmp_path: Path, monkeypatch):
    """write(doc=..., text=..., context=...) -> a spec folder "spec" in tmp_path (the cwd)."""
    monkeypatch.chdir(tmp_path)

    def write(
        doc: dict | None = None,
        *,
        text: str | bytes | None = None,
        context: dict | str | bytes | None = None,
        name: str = "spec",
    ) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        if text is None:
            text = json.dumps(base_tasks() if doc is None else doc, indent=2) + "\n"
        data = text.encode("utf-8") if isinstance(text, str) else text
        (folder / "tasks.json").write_bytes(data)
        if context is not None:
            if isinstance(context, dict):
                context = json.dumps(context, indent=2)
            data = context.encode("utf-8") if isinstance(context, str) else context
            (folder / "context-summary.json").write_bytes(data)
        return folder

    return write


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file (and the name of every folder) under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()


def cli(*args: str, via: str = "runner") -> Result:
    """Run the CLI in the current directory: via CliRunner on flows.cli.app, or a subprocess."""
    if via == "subprocess":
        cmd = (
            [SPECWAVE] if SPECWAVE else [sys.executable, "-c", "from flows.cli import main; main()"]
        )
        proc = subprocess.run(
            [*cmd, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200"},
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def check(
    folder: Path | str, *args: str, code: int, via: str = "runner", command: str = "validate"
) -> Result:
    """Run `specwave <command> folder`; the folder must be untouched and no traceback shown."""
    root = Path(folder) if Path(folder).exists() else Path.cwd()
    before = snapshot(root)
    result = cli(command, str(folder), *args, via=via)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.code == code, (result.stdout, result.stderr)
    assert snapshot(root) == before
    return result


def error_lines(result: Result) -> list[str]:
    return [line for line in result.lines if not line.startswith("warning: ")]


def warning_lines(result: Result) -> list[str]:
    return [line for line in result.lines if line.startswith("warning: ")]


# ------------------------------------------------------------------------ valid input

VIAS = ["runner", "subprocess"]


@pytest.mark.parametrize("via", VIAS)
def test_a_valid_spec_exits_0_with_a_summary(spec_dir, via):
    folder = spec_dir(context=base_context())
    result = check(folder, code=0, via=via)
    assert result.stderr == ""
    assert result.stdout.strip() == (
        "spec/tasks.json: valid — 3 tasks (+1 subtasks), 2 waves (declared), 1 file conflicts"
    )


@pytest.mark.parametrize("example_name", ["small-feature", "checkout-api"])
def test_the_examples_are_valid(example, example_name):
    folder = example(example_name)
    result = check(folder, code=0, via="subprocess")
    assert " valid — " in result.stdout


# ------------------------------------------------------------------- unreadable input


@pytest.mark.parametrize("via", VIAS)
def test_invalid_json_names_line_and_column(spec_dir, via):
    folder = spec_dir(text='{\n  "tasks": [\n    {"id": "1",}\n  ]\n}\n')
    result = check(folder, code=2, via=via)
    assert result.lines == [
        "spec/tasks.json:3:16: invalid JSON: Expecting property name "
        "enclosed in double quotes — fix the syntax at that position"
    ]


def test_invalid_json_in_the_context_file(spec_dir):
    folder = spec_dir(context='{"tasks": {\n}')
    result = check(folder, code=2)
    assert result.lines == [
        "spec/context-summary.json:2:2: invalid JSON: Expecting ',' "
        "delimiter — fix the syntax at that position"
    ]


@pytest.mark.parametrize("via", VIAS)
def test_schema_errors_name_the_json_path_and_the_task(spec_dir, via):
    doc = base_tasks()
    tasks_of(doc)["2"]["status"] = 5
    tasks_of(doc)["1"]["parallelization"]["isolation_score"] = 3
    doc["execution_strategy"]["waves"][1]["wave_id"] = "two"
    result = check(spec_dir(doc), code=2, via=via)
    assert result.lines == [
        "spec/tasks.json (execution_strategy.waves[1].wave_id): Input should be a valid integer"
        ' (got "two") — fix the value to match the format',
        'spec/tasks.json (tasks[0].parallelization.isolation_score): task "1": Input should be '
        "less than or equal to 1 (got 3) — fix the value to match the format",
        'spec/tasks.json (tasks[2].status): task "2": Input should be a valid string (got 5) '
        "— fix the value to match the format",
    ]


def test_schema_errors_in_the_context_file_name_the_task(spec_dir):
    ctx = base_context()
    ctx["tasks"]["2"]["estimated_tokens"] = -5
    result = check(spec_dir(context=ctx), code=2)
    assert result.lines == [
        'spec/context-summary.json (tasks.2.estimated_tokens): task "2": Input should be '
        "greater than or equal to 0 (got -5) — fix the value to match the format"
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[]", 'top level must be a JSON object with a "tasks" list'),
        ('{"tasks": {}}', 'top level must be a JSON object with a "tasks" list'),
        ('{"version": "2.0"}', 'top level must be a JSON object with a "tasks" list'),
    ],
)
def test_a_document_without_a_tasks_list(spec_dir, text, message):
    result = check(spec_dir(text=text), code=2)
    hint = "see the tasks.json format in docs/formats.md"
    assert result.lines == [f"spec/tasks.json: {message} — {hint}"]


@pytest.mark.parametrize("text", ["", "  \n\t\n"], ids=["empty", "whitespace"])
@pytest.mark.parametrize("via", VIAS)
def test_an_empty_file(spec_dir, text, via):
    result = check(spec_dir(text=text), code=2, via=via)
    assert result.lines == ["spec/tasks.json: is empty — write the plan into it, or remove it"]


def test_an_empty_context_file(spec_dir):
    result = check(spec_dir(context=""), code=2)
    assert result.lines == [
        "spec/context-summary.json: is empty — write the plan into it, or remove it"
    ]


@pytest.mark.parametrize("via", VIAS)
def test_a_file_that_is_not_utf8(spec_dir, via):
    text = json.dumps(base_tasks(), indent=2).replace('"model"', '"mod\u00e8le"')
    data = text.encode("latin-1")
    byte = data.index(b"\xe8")
    line = data[:byte].count(b"\n") + 1
    result = check(spec_dir(text=data), code=2, via=via)
    assert result.lines == [
        f"spec/tasks.json: is not UTF-8 text (byte {byte}, line {line}) — save the file as UTF-8"
    ]


def test_a_context_file_that_is_not_utf8(spec_dir):
    result = check(spec_dir(context=b"\xff\xfe{}"), code=2)
    assert result.lines == [
        "spec/context-summary.json: is not UTF-8 text (byte 0, line 1) — save the file as UTF-8"
    ]


@pytest.mark.parametrize("via", VIAS)
def test_a_missing_folder(tmp_path, monkeypatch, via):
    monkeypatch.chdir(tmp_path)
    result = check("no-such-spec", code=2, via=via)
    assert result.lines == ["no-such-spec: not found — pass a spec folder or a tasks.json"]


def test_a_folder_without_tasks_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "spec.md").write_text("# a spec\n")
    result = check("spec", code=2)
    # the hint lists the formats specwave reads, which grows; the problem itself is fixed
    assert len(result.lines) == 1
    assert result.lines[0].startswith("spec: has no tasks.json") and " — pass " in result.lines[0]


@pytest.mark.parametrize("via", VIAS)
def test_a_directory_instead_of_tasks_json(tmp_path, monkeypatch, via):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec" / "tasks.json").mkdir(parents=True)
    result = check("spec", code=2, via=via)
    assert result.lines == [
        "spec/tasks.json: is a directory, not a file — point specwave at "
        "the folder that holds the tasks.json"
    ]


def test_a_symlink_out_of_the_folder_is_named_by_its_own_path(spec_dir, tmp_path):
    # regression: display_path() resolved the link, so the message named the target file
    outside = spec_dir(name="elsewhere")
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "tasks.json").symlink_to(outside / "tasks.json")
    result = check("spec", code=2)
    assert result.lines == [
        f"spec/tasks.json: is a symlink to {outside / 'tasks.json'}, "
        "outside the spec folder — copy the file into the folder instead "
        "of linking it"
    ]


def test_deeply_nested_json(spec_dir):
    result = check(spec_dir(text='{"tasks": [], "x": ' + "[" * 50_000 + "]" * 50_000 + "}"), code=2)
    assert result.lines == [
        "spec/tasks.json: invalid JSON: nested too deeply — flatten the structure"
    ]


# ----------------------------------------------------------------------- bad references


def test_duplicate_task_ids(spec_dir):
    doc = base_tasks()
    doc["tasks"].append({"id": "2", "description": "again", "status": "pending"})
    result = check(spec_dir(doc), code=2)
    assert result.lines == [
        'spec/tasks.json: task "2": duplicate task id — give each task its own id'
    ]


def test_duplicate_integer_and_string_ids_are_the_same_id(spec_dir):
    doc = base_tasks()
    doc["tasks"].append({"id": 2, "description": "again"})
    result = check(spec_dir(doc), code=2)
    assert (
        'spec/tasks.json: task "2": duplicate task id — give each task its own id' in result.lines
    )


def _unknown_in_wave(doc):
    doc["execution_strategy"]["waves"][1]["tasks"].append("9")


def _unknown_blocked_by(doc):
    tasks_of(doc)["3"]["parallelization"]["blocked_by"].append("9")


def _unknown_blocks(doc):
    tasks_of(doc)["2"]["parallelization"]["blocks"].append("9")


def _unknown_subtask(doc):
    tasks_of(doc)["1"]["subtasks"].append("9")


def _unknown_parent(doc):
    tasks_of(doc)["1.1"]["parent"] = "9"


@pytest.mark.parametrize(
    "mutate, line",
    [
        (
            _unknown_in_wave,
            "spec/tasks.json (execution_strategy.waves[wave 2]): names unknown task "
            '"9" — fix the id or remove it from the wave',
        ),
        (
            _unknown_blocked_by,
            'spec/tasks.json: task "3": blocked_by names unknown task "9" — fix '
            "the id or remove it",
        ),
        (
            _unknown_blocks,
            'spec/tasks.json: task "2": blocks names unknown task "9" — fix the id or remove it',
        ),
        (
            _unknown_subtask,
            'spec/tasks.json: task "1": subtasks names unknown task "9" — fix the id or remove it',
        ),
        (
            _unknown_parent,
            'spec/tasks.json: task "1.1": parent names unknown task "9" — fix the id or remove it',
        ),
    ],
    ids=["wave", "blocked_by", "blocks", "subtasks", "parent"],
)
def test_unknown_task_ids(spec_dir, mutate, line):
    doc = base_tasks()
    mutate(doc)
    result = check(spec_dir(doc), code=2)
    assert error_lines(result) == [line]


def test_unknown_id_in_context_dependencies(spec_dir):
    ctx = base_context()
    ctx["tasks"]["3"]["dependencies"] = ["1", "42"]
    result = check(spec_dir(context=ctx), code=2, via="subprocess")
    assert result.lines == [
        'spec/context-summary.json: task "3": dependencies names unknown '
        'task "42" — fix the id or remove it'
    ]


def test_unknown_id_in_v4_depends_on(spec_dir):
    doc = {"version": "4.0", "tasks": [{"id": "1", "depends_on": ["W1-VERIFY"]}]}
    result = check(spec_dir(doc), code=2)
    assert result.lines == [
        'spec/tasks.json: task "1": depends_on names unknown task '
        '"W1-VERIFY" — fix the id or remove it'
    ]


# ------------------------------------------------------------------- dependency problems


@pytest.mark.parametrize("via", VIAS)
def test_a_dependency_cycle_is_printed(spec_dir, via):
    doc = base_tasks()
    tasks_of(doc)["1"]["parallelization"]["blocked_by"] = ["3"]
    tasks_of(doc)["3"]["parallelization"]["blocks"] = ["1"]
    result = check(spec_dir(doc), code=2, via=via)
    assert result.lines == [
        'spec/tasks.json: task "1": dependency cycle "1" → "3" → "1" — '
        "remove one of these dependencies"
    ]


def test_a_cycle_through_a_subtask_and_the_context_file(spec_dir):
    # 1.1 (inside 1) waits for 3 per the context file; 3 waits for 1 per tasks.json
    ctx = base_context()
    ctx["tasks"]["1.1"]["dependencies"] = ["3"]
    result = check(spec_dir(context=ctx), code=2)
    assert error_lines(result) == [
        'spec/tasks.json: task "1": dependency cycle "1" → "3" → '
        '"1" — remove one of these dependencies'
    ]


def test_a_parent_cycle_is_an_error(spec_dir):
    # regression: tasks whose parent chain loops were silently dropped (0 tasks, "valid")
    doc = base_tasks()
    doc["tasks"] += [
        {"id": "a", "type": "subtask", "parent": "b", "description": "a"},
        {"id": "b", "type": "subtask", "parent": "a", "description": "b"},
    ]
    result = check(spec_dir(doc), code=2)
    assert error_lines(result) == [
        'spec/tasks.json: task "a": parent/subtask cycle "a" → "b" '
        '→ "a" — a subtask\'s parent must be a task that is not '
        "under it"
    ]


def test_a_task_listed_as_its_own_subtask_is_an_error(spec_dir):
    doc = base_tasks()
    tasks_of(doc)["2"]["subtasks"] = ["2"]
    result = check(spec_dir(doc), code=2)
    assert (
        'spec/tasks.json: task "2": parent/subtask cycle "2" → "2" — a subtask\'s parent '
        "must be a task that is not under it" in result.lines
    )


# ------------------------------------------------------------------ declared-wave problems


@pytest.mark.parametrize("via", VIAS)
def test_a_declared_wave_that_runs_a_task_before_its_dependency(spec_dir, via):
    doc = base_tasks()
    doc["execution_strategy"]["waves"] = [
        {"wave_id": 1, "tasks": ["3"]},
        {"wave_id": 2, "tasks": ["1", "2"]},
    ]
    for t, w in (("3", 1), ("1", 2), ("2", 2)):
        tasks_of(doc)[t]["parallelization"]["wave"] = w
    result = check(spec_dir(doc), code=2, via=via)
    assert error_lines(result) == [
        'spec/tasks.json: task "3": wave 1 runs it before task "1" (wave 2), which it depends '
        "on — move it to a wave after 2, or run `specwave plan --replan`",
        'spec/tasks.json: task "3": wave 1 runs it before task "2" (wave 2), which it depends '
        "on — move it to a wave after 2, or run `specwave plan --replan`",
    ]


def test_a_declared_wave_that_runs_a_task_with_its_dependency(spec_dir):
    doc = base_tasks()
    doc["execution_strategy"]["waves"] = [{"wave_id": 1, "tasks": ["1", "2", "3"]}]
    tasks_of(doc)["3"]["parallelization"]["shared_files"] = ["src/c.py"]
    tasks_of(doc)["3"]["parallelization"]["wave"] = 1
    result = check(spec_dir(doc), code=2)
    assert error_lines(result) == [
        'spec/tasks.json: task "3": wave 1 runs it with task "1" (wave 1), which it depends on '
        "— move it to a wave after 1, or run `specwave plan --replan`",
        'spec/tasks.json: task "3": wave 1 runs it with task "2" (wave 1), which it depends on '
        "— move it to a wave after 1, or run `specwave plan --replan`",
    ]


@pytest.mark.parametrize("via", VIAS)
def test_two_conflicting_tasks_in_one_declared_wave(spec_dir, via):
    doc = base_tasks()
    tasks_of(doc)["2"]["parallelization"]["shared_files"] = ["src/"]  # covers src/a.py
    result = check(spec_dir(doc), code=2, via=via)
    assert result.lines == [
        'spec/tasks.json: task "1": shares src/a.py with task "2" in the '
        "same wave 1 — move one of them to another wave, or run `specwave "
        "plan --replan`"
    ]


def test_a_task_in_no_wave(spec_dir):
    doc = base_tasks()
    doc["execution_strategy"]["waves"][0]["tasks"] = ["1"]
    result = check(spec_dir(doc), code=2)
    assert error_lines(result) == [
        'spec/tasks.json: task "2": is in no wave — add it to a wave in execution_strategy'
    ]


def test_a_task_in_two_waves(spec_dir):
    doc = base_tasks()
    doc["execution_strategy"]["waves"][1]["tasks"].append("2")
    result = check(spec_dir(doc), code=2)
    assert result.lines == [
        'spec/tasks.json: task "2": is listed in two waves (1 and 2) — keep it in one wave'
    ]


def test_a_subtask_listed_in_a_wave(spec_dir):
    doc = base_tasks()
    doc["execution_strategy"]["waves"][1]["tasks"].append("1.1")
    result = check(spec_dir(doc), code=2)
    assert result.lines == [
        'spec/tasks.json: task "1.1": is a subtask but is listed in wave 2 '
        '— list its parent "1" instead; subtasks run inside their parent\'s '
        "worker"
    ]


def test_two_waves_with_one_wave_id(spec_dir):
    doc = base_tasks()
    doc["execution_strategy"]["waves"][1]["wave_id"] = 1
    result = check(spec_dir(doc), code=2)
    assert (
        "spec/tasks.json (execution_strategy.waves): two waves share one wave_id — number "
        "the waves 1, 2, 3, ..." in result.lines
    )


def test_replan_ignores_bad_declared_waves(spec_dir):
    doc = base_tasks()
    doc["execution_strategy"]["waves"] = [{"wave_id": 1, "tasks": ["1", "2", "3", "1.1"]}]
    folder = spec_dir(doc)
    check(folder, code=2)
    result = check(folder, "--replan", code=0)
    assert "2 waves (computed)" in result.stdout


# ------------------------------------------------------------------------------ paths


@pytest.mark.parametrize("via", VIAS)
def test_absolute_and_parent_paths_in_shared_files(spec_dir, via):
    doc = base_tasks()
    tasks_of(doc)["2"]["parallelization"]["shared_files"] = [
        "/etc/passwd",
        "../other/x.py",
        "src/b.py",
    ]
    result = check(spec_dir(doc), code=2, via=via)
    assert result.lines == [
        'spec/tasks.json: task "2": path "/etc/passwd" is absolute — use a path relative to the '
        "repository root",
        'spec/tasks.json: task "2": path "../other/x.py" leaves the repository — use a path '
        "relative to the repository root",
    ]


def test_bad_paths_in_context_relevant_files(spec_dir):
    ctx = base_context()
    ctx["tasks"]["3"]["relevant_files"] = ["~/secrets.txt"]
    result = check(spec_dir(context=ctx), code=2)
    assert result.lines == [
        'spec/tasks.json: task "3": path "~/secrets.txt" is absolute — use a '
        "path relative to the repository root"
    ]


# ---------------------------------------------------------------------------- warnings


def test_blocked_by_and_blocks_disagree(spec_dir):
    doc = base_tasks()
    tasks_of(doc)["1"]["parallelization"]["blocks"] = []
    result = check(spec_dir(doc), code=0, via="subprocess")
    assert warning_lines(result) == [
        'warning: spec/tasks.json: task "3": is blocked_by "1", but "1" does not list it in '
        "blocks — make blocked_by and blocks agree",
    ]
    assert result.stdout.strip().endswith("1 warnings")


def test_blocks_without_blocked_by(spec_dir):
    doc = base_tasks()
    tasks_of(doc)["3"]["parallelization"]["blocked_by"] = ["1"]
    result = check(spec_dir(doc), code=0)
    assert warning_lines(result) == [
        'warning: spec/tasks.json: task "2": blocks "3", but "3" does not list it in blocked_by '
        "— make blocked_by and blocks agree",
    ]


def test_context_missing_for_a_task(spec_dir):
    ctx = base_context()
    del ctx["tasks"]["2"]
    ctx["tasks"]["7"] = {"summary": "stale"}
    result = check(spec_dir(context=ctx), code=0, via="subprocess")
    assert warning_lines(result) == [
        'warning: spec/context-summary.json: task "2": has no context for this task — '
        "regenerate context-summary.json",
        'warning: spec/context-summary.json: task "7": has context for a task that is not in '
        "tasks.json — regenerate context-summary.json",
    ]


def test_mode_inconsistent_with_the_waves(spec_dir):
    doc = base_tasks()
    doc["execution_strategy"]["mode"] = "sequential"
    result = check(spec_dir(doc), code=0, via="subprocess")
    assert warning_lines(result) == [
        'warning: spec/tasks.json: execution_strategy.mode is "sequential" but the waves make it '
        '"parallel_waves" — fix the mode, or drop execution_strategy and let specwave plan it',
    ]


def test_unknown_status(spec_dir):
    doc = base_tasks()
    tasks_of(doc)["2"]["status"] = "wip"
    result = check(spec_dir(doc), code=0, via="subprocess")
    assert warning_lines(result) == [
        'warning: spec/tasks.json: task "2": unknown status "wip" is treated as pending — use '
        "pending, in_progress, pass, fail, blocked or skipped",
    ]


def test_task_wave_disagreeing_with_execution_strategy(spec_dir):
    doc = base_tasks()
    tasks_of(doc)["2"]["parallelization"]["wave"] = 3
    result = check(spec_dir(doc), code=0)
    assert warning_lines(result) == [
        'warning: spec/tasks.json: task "2": parallelization.wave is 3 but execution_strategy '
        "puts it in wave 1 — make them agree",
    ]


def test_warnings_are_printed_with_errors(spec_dir):
    doc = base_tasks()
    tasks_of(doc)["2"]["status"] = "wip"
    tasks_of(doc)["3"]["parallelization"]["blocked_by"].append("9")
    result = check(spec_dir(doc), code=2)
    assert result.lines == [
        'warning: spec/tasks.json: task "2": unknown status "wip" is treated as pending — use '
        "pending, in_progress, pass, fail, blocked or skipped",
        'spec/tasks.json: task "3": blocked_by names unknown task "9" — fix the id or remove it',
    ]


# -------------------------------------------------------------------------------- plan


PLAN_KEYS = {
    "mode",
    "waves",
    "critical_path",
    "lower_bound",
    "estimated_speedup",
    "conflicts",
    "warnings",
}


@pytest.mark.parametrize("via", VIAS)
def test_plan_json(spec_dir, via):
    folder = spec_dir(context=base_context())
    result = check(folder, "--json", code=0, via=via, command="plan")
    out = json.loads(result.stdout)
    assert PLAN_KEYS <= set(out)
    assert out["mode"] == "parallel_waves"
    assert out["waves"] == [{"wave_id": 1, "tasks": ["1", "2"]}, {"wave_id": 2, "tasks": ["3"]}]
    assert out["conflicts"] == [["1", "3"]]
    assert out["warnings"] == []
    # weights are the context's estimated_tokens (1,000 per task; a parent's own estimate
    # stands for its subtasks)
    assert out["estimate_unit"] == "tokens"
    assert out["critical_path"] == ["1", "3"]
    assert out["critical_path_length"] == 2000
    assert out["total_work"] == 3000
    assert out["max_concurrency"] == 2  # from execution_strategy.max_concurrent_workers
    assert out["lower_bound"] == 2000  # max(2000, 3000 / 2)
    assert out["estimated_speedup"] == 1.5


def test_plan_json_reports_warnings_and_honours_max_concurrency(spec_dir):
    doc = base_tasks()
    tasks_of(doc)["2"]["status"] = "wip"
    result = check(spec_dir(doc), "--json", "--max-concurrency", "1", code=0, command="plan")
    out = json.loads(result.stdout)
    assert out["max_concurrency"] == 1
    assert out["lower_bound"] == 3 and out["estimated_speedup"] == 1
    assert out["warnings"] == [
        'spec/tasks.json: task "2": unknown status "wip" is treated as '
        "pending — use pending, in_progress, pass, fail, blocked or "
        "skipped"
    ]


@pytest.mark.parametrize("via", VIAS)
def test_plan_replan_computes_valid_waves_from_bad_declared_ones(spec_dir, via):
    doc = base_tasks()
    # everything declared in one wave: breaks 1->3, 2->3 and the src/a.py conflict of 1 and 3
    doc["execution_strategy"]["waves"] = [{"wave_id": 1, "tasks": ["1", "2", "3"]}]
    tasks_of(doc)["2"]["parallelization"]["blocks"] = []
    tasks_of(doc)["3"]["parallelization"]["blocked_by"] = ["1"]
    tasks_of(doc)["2"]["parallelization"]["shared_files"] = ["src/a.py"]
    folder = spec_dir(doc)
    bad = check(folder, "--json", code=2, via=via, command="plan")
    assert bad.stdout == ""
    result = check(folder, "--json", "--replan", code=0, via=via, command="plan")
    out = json.loads(result.stdout)
    assert out["source"] == "computed"
    # 1 and 2 share src/a.py, 3 needs 1 and shares src/a.py with both: one task per wave
    assert out["waves"] == [
        {"wave_id": 1, "tasks": ["1"]},
        {"wave_id": 2, "tasks": ["2"]},
        {"wave_id": 3, "tasks": ["3"]},
    ]
    assert out["mode"] == "sequential"
    assert sorted(map(tuple, out["conflicts"])) == [("1", "2"), ("1", "3"), ("2", "3")]


def test_plan_table_output(spec_dir):
    result = check(spec_dir(), code=0, via="subprocess", command="plan")
    assert "critical path" in result.stdout and "speed-up" in result.stdout


def test_plan_on_a_bad_spec_exits_2(spec_dir):
    doc = base_tasks()
    tasks_of(doc)["3"]["parallelization"]["blocked_by"] = ["1", "2", "x"]
    result = check(spec_dir(doc), "--json", code=2, via="subprocess", command="plan")
    assert result.stdout == ""
    assert result.lines == [
        'spec/tasks.json: task "3": blocked_by names unknown task "x" — fix the id or remove it'
    ]


def test_plan_rejects_zero_workers(spec_dir):
    result = check(spec_dir(), "--max-concurrency", "0", code=2, via="subprocess", command="plan")
    assert "--max-concurrency" in result.stderr


# ------------------------------------------------------------------------------ schema


@pytest.mark.parametrize("via", VIAS)
def test_schema_tasks_is_a_json_schema(via):
    result = cli("schema", "tasks", via=via)
    assert result.code == 0 and result.stderr == ""
    schema = json.loads(result.stdout)
    assert schema["type"] == "object"
    assert "tasks" in schema["properties"] and "tasks" in schema["required"]
    task_def = schema["$defs"]["Task"]
    assert {"id", "status", "parallelization", "depends_on"} <= set(task_def["properties"])
    assert all(p.get("description") for p in task_def["properties"].values())


def test_schema_context_is_a_json_schema():
    schema = json.loads(cli("schema", "context").stdout)
    assert "tasks" in schema["properties"] and "global_context" in schema["properties"]


def test_the_schema_accepts_the_valid_base_and_the_validator_agrees():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(cli("schema", "tasks").stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(base_tasks(), schema)
    bad = base_tasks()
    tasks_of(bad)["2"]["status"] = 5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_schema_unknown_name_exits_2():
    result = cli("schema", "nope", via="subprocess")
    assert result.code == 2
    assert result.lines == ['specwave schema: unknown schema "nope" — use "tasks" or "context"']


def test_copy_of_base_is_independent():
    # the helpers hand out fresh documents: a mutation in one test never leaks into another
    a, b = base_tasks(), base_tasks()
    tasks_of(a)["1"]["status"] = "pass"
    assert tasks_of(b)["1"]["status"] == "pending" and copy.deepcopy(b) == base_tasks()


def test_loading_restores_the_garbage_collector_state(spec_dir):
    # read_agent_os pauses the cyclic GC for speed; it must hand back the state it found
    import gc

    from tasks_lib.errors import SpecError
    from tasks_lib.formats import load_spec

    good = spec_dir(context=base_context())
    bad = spec_dir(text="{", name="bad")
    assert gc.isenabled()
    assert len(load_spec(good).units) == 3
    assert gc.isenabled()
    with pytest.raises(SpecError):
        load_spec(bad)
    assert gc.isenabled()
    gc.disable()
    try:
        load_spec(good)
        assert not gc.isenabled()
    finally:
        gc.enable()
