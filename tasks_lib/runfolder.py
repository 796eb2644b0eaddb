"""The run folder: what a run keeps beside the plan file, under ``.specwave/``.

    <spec>/.specwave/runs/<run-id>/
        run.json                 parameters, plan, start/end, metrics (written at the end)
        agents.jsonl             one line per started agent (pid, pgid, create_time) for reaping
        tasks/<task>/prompt.md   the prompt given to the worker
        tasks/<task>/attempt-N.log    raw output of attempt N (stdout + stderr)
        tasks/<task>/attempt-N.json   outcome, reason, timings, result of attempt N
    <spec>/.specwave/active.json the lock that stops two runs on one spec (issue: one run at once)

This module only does file I/O; what to write is decided elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from tasks_lib.store import STATE_DIR

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

    def write_attempt(self, task_id: str, attempt: int, record: dict[str, Any]) -> None:
        write_json_atomic(self.attempt_path(task_id, attempt), record)

    def attempts(self, task_id: str) -> list[dict[str, Any]]:
        """Every attempt record of a task in this run, in order."""
        out = []
        d = self.task_dir(task_id)
        if not d.is_dir():
            return out
        for p in sorted(d.glob("attempt-*.json"),
                        key=lambda p: int(p.stem.split("-")[1]) if p.stem.split("-")[1].isdigit()
                        else 0):
            data = read_json(p)
            if isinstance(data, dict):
                out.append(data)
        return out

    def record_agent(self, info: dict[str, Any]) -> None:
        """Append one started agent's identity (one JSON line, flushed + fsynced)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "agents.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(info) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def write_run(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.root / "run.json", data)

    @staticmethod
    def recorded_agents(spec_folder: str | Path) -> list[dict[str, Any]]:
        """Agents recorded by every run of this spec (for reaping after a crash)."""
        out = []
        for f in sorted(RunFolder.runs_dir(spec_folder).glob("*/agents.jsonl")):
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out
