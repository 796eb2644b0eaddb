"""The run folder: what a run keeps beside the plan file, under ``.specwave/``.

    <spec>/.specwave/runs/<run-id>/
        run.json                 a RunRecord: parameters, plan, start/end, metrics
        agent-marker             the marker every agent of the run inherits (orphan reaping)
        agents.jsonl             one line per started agent (pid, pgid, create_time) for reaping
        tasks/<task>/prompt.md   the prompt given to the worker
        tasks/<task>/attempt-N.log    raw output of attempt N (stdout + stderr)
        tasks/<task>/attempt-N.json   an AttemptRecord: outcome, reason, timings, result
    <spec>/.specwave/locks/run.lock   the lock that stops two runs on one spec (store.RunLock)

This module only does file I/O; what to write is decided elsewhere. Records are validated
when read (tasks_lib.records): a damaged one is a RecordError naming the file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from tasks_lib.records import AttemptRecord, RunRecord
from tasks_lib.store import STATE_DIR

MARKER_FILE = "agent-marker"

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(task_id: str) -> str:
    """A task id as a file name ("1.2" stays, "a/b" becomes "a_b")."""
    name = _SAFE.sub("_", task_id).strip("._") or "task"
    return name[:80]


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


class RunFolder:
    """Paths and small writers for one run."""

    def __init__(self, spec_folder: str | Path, run_id: str):
        self.spec_folder = Path(spec_folder)
        self.run_id = run_id
        self.root = self.spec_folder / STATE_DIR / "runs" / run_id

    @staticmethod
    def runs_dir(spec_folder: str | Path) -> Path:
        return Path(spec_folder) / STATE_DIR / "runs"

    @classmethod
    def at(cls, root: str | Path) -> RunFolder:
        """The run folder at ``root`` (``<spec>/.specwave/runs/<run-id>``)."""
        root = Path(root)
        return cls(root.parents[2], root.name)

    @classmethod
    def latest(cls, spec_folder: str | Path) -> RunFolder | None:
        """The run whose record was written last, if any."""
        runs = sorted(cls.runs_dir(spec_folder).glob("*/run.json"), key=lambda p: p.stat().st_mtime)
        return cls(spec_folder, runs[-1].parent.name) if runs else None

    def task_dir(self, task_id: str) -> Path:
        return self.root / "tasks" / safe_name(task_id)

    def prompt_path(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "prompt.md"

    def log_path(self, task_id: str, attempt: int) -> Path:
        return self.task_dir(task_id) / f"attempt-{attempt}.log"

    def attempt_path(self, task_id: str, attempt: int) -> Path:
        return self.task_dir(task_id) / f"attempt-{attempt}.json"

    def write_prompt(self, task_id: str, prompt: str) -> Path:
        p = self.prompt_path(task_id)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(prompt, encoding="utf-8")
        return p

    def write_attempt(self, record: AttemptRecord) -> None:
        write_json_atomic(self.attempt_path(record.task_id, record.attempt), record.plain())

    def attempts(self, task_id: str) -> list[AttemptRecord]:
        """Every attempt record of a task in this run, in attempt order. Raises RecordError
        for a damaged one (records are written atomically: specwave never leaves one)."""
        d = self.task_dir(task_id)
        if not d.is_dir():
            return []
        paths = [
            (int(n), p)
            for p in d.glob("attempt-*.json")
            if (n := p.stem.removeprefix("attempt-")).isdigit()
        ]
        return [AttemptRecord.read(p, _read_text(p)) for _, p in sorted(paths)]

    def read_run(self) -> RunRecord | None:
        """This run's record; None when it has none yet. Raises RecordError when damaged."""
        path = self.root / "run.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return RunRecord.read(path, text)

    def marker(self) -> str | None:
        """The run's agent marker, if it was written."""
        try:
            return (self.root / MARKER_FILE).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def write_marker(self, marker: str) -> None:
        """Written before any agent starts, so a later run can find every agent of this one
        even when this run died before recording them."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MARKER_FILE).write_text(marker + "\n", encoding="utf-8")

    @staticmethod
    def markers_of_other_runs(spec_folder: str | Path, run_id: str) -> list[Path]:
        """Marker files of every other run not yet reaped."""
        return [
            f
            for f in RunFolder.runs_dir(spec_folder).glob(f"*/{MARKER_FILE}")
            if f.parent.name != run_id
        ]

    @staticmethod
    def retire(path: Path, suffix: str = ".reaped") -> None:
        """Rename a reaped run's marker or agents.jsonl, so no later run reaps it again."""
        path.rename(
            path.with_name(path.name + suffix)
            if path.suffix != ".jsonl"
            else path.with_suffix(suffix)
        )

    def record_agent(self, info: dict[str, Any]) -> None:
        """Append one started agent's identity (one JSON line, flushed + fsynced)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "agents.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(info) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def write_run(self, record: RunRecord) -> None:
        write_json_atomic(self.root / "run.json", record.plain())

    @staticmethod
    def agent_logs(spec_folder: str | Path) -> list[Path]:
        """Every run's agents.jsonl not yet reaped."""
        return sorted(RunFolder.runs_dir(spec_folder).glob("*/agents.jsonl"))

    @staticmethod
    def recorded_agents(spec_folder: str | Path) -> list[dict[str, Any]]:
        """Agents recorded by every run of this spec (for reaping after a crash)."""
        out = []
        for f in RunFolder.agent_logs(spec_folder):
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out
