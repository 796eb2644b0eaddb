"""The store: the one place that reads and writes the user's plan file.

Every write is a read-modify-write under an exclusive lock (``fcntl.flock`` on a lock file in
``.specwave/locks/`` next to the plan file), re-reading the file inside the lock, so two
processes never lose each other's updates. The new text goes to a unique temp file in the same
folder, is fsynced, replaces the old file with ``os.replace`` and the folder is fsynced: a crash
at any point leaves either the old file or the new one, never a torn one.

What a document *is* (JSON, Markdown checklist, ...) is the format's business: the store takes a
:class:`DocumentFormat` that parses text, renders it back (losslessly) and applies updates.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, Protocol

from tasks_lib.errors import SpecError

MAX_PLAN_BYTES = 20 * 1024 * 1024
STATE_DIR = ".specwave"


def display_path(path: Path) -> str:
    """A path as the user would type it (relative to the current dir when inside it)."""
    try:
        path = Path(path)
        # resolve the folders but not the file itself: a message about a symlinked tasks.json
        # names the link the user passed, not its target
        full = path.parent.resolve() / path.name if path.name else path.resolve()
        return str(full.relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def check_plan_file(path: Path, *, root: Path | None = None, what: str = "plan file") -> None:
    """Raise SpecError unless ``path`` is a regular file we may read and replace.

    A symlink is accepted only when it stays inside ``root`` (the spec folder).
    """
    label = display_path(path)
    if path.is_symlink():
        try:
            target = path.resolve()
            base = (root or path.parent).resolve()
        except (RuntimeError, OSError):  # RuntimeError: Python 3.11's "Symlink loop"
            raise SpecError.single(
                label,
                "is a symlink loop (it never reaches a file)",
                hint="point the link at a real file",
            ) from None
        if not target.is_relative_to(base):
            raise SpecError.single(
                label,
                f"is a symlink to {target}, outside the spec folder",
                hint="copy the file into the folder instead of linking it",
            )
    if not path.exists():
        raise SpecError.single(label, f"{what} not found", hint="check the path")
    if path.is_dir():
        raise SpecError.single(
            label,
            "is a directory, not a file",
            hint=f"point specwave at the folder that holds the {what}",
        )
    if not path.is_file():
        raise SpecError.single(label, "is not a regular file", hint="use a plain file")
    size = path.stat().st_size
    if size > MAX_PLAN_BYTES:
        raise SpecError.single(
            label,
            f"is {size / 1e6:.0f} MB, larger than the "
            f"{MAX_PLAN_BYTES // (1024 * 1024)} MB a plan may be",
            hint="split the spec, or remove embedded data",
        )


def read_text(path: Path, *, root: Path | None = None, what: str = "plan file") -> str:
    """Read a UTF-8 text file (a byte-order mark is kept in the returned text)."""
    check_plan_file(path, root=root, what=what)
    try:
        # never more than the limit, even if the file grew after check_plan_file's stat
        with open(path, "rb") as fh:
            data = fh.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise SpecError.single(
            display_path(path),
            f"cannot be read ({exc.strerror or exc})",
            hint="check the file's permissions",
        ) from None
    if len(data) > MAX_PLAN_BYTES:
        raise SpecError.single(
            display_path(path),
            "grew larger than the "
            f"{MAX_PLAN_BYTES // (1024 * 1024)} MB a plan "
            "may be while it was read",
            hint="split the spec, or remove embedded data",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError.single(
            display_path(path),
            f"is not UTF-8 text (byte {exc.start}, line {line})",
            hint="save the file as UTF-8",
        ) from None
    if not text.strip():
        raise SpecError.single(
            display_path(path), "is empty", hint="write the plan into it, or remove it"
        )
    return text


class DocumentFormat(Protocol):
    """How one kind of plan file is parsed, rendered and updated (see tasks_lib.formats)."""

    name: str

    def parse(self, text: str, label: str) -> Any:
        """Text -> document. Raise SpecError for unusable input."""

    def render(self, doc: Any, original: str) -> str:
        """Document -> text, in the style of ``original``; unchanged parts byte-identical."""

    def apply(self, doc: Any, update: TaskUpdate) -> None:
        """Record one task's progress in the document."""

    def finalize(self, doc: Any, now: str) -> None:
        """Recompute derived fields (summary, updated) before a changed document is written."""


@dataclass
class TaskUpdate:
    """One task's progress, format-neutral. ``None`` fields are left as they are."""

    task_id: str
    status: str | None = None  # normalized TaskStatus value
    attempts: int | None = None
    started_at: str | None = None
    completed_at: str | None = None
    duration_minutes: float | None = None
    blocker: str | None = None
    clear_blocker: bool = False
    notes: str | None = None
    artifacts: dict[str, list[str]] | None = None
    subtasks_status: str | None = None  # applied to every subtask (e.g. pass when parent passes)


class WriteFailed(RuntimeError):
    """The plan file could not be written (disk full, permissions...). Nothing was changed."""


class PlanStore:
    """Locked, atomic, lossless access to one plan file.

    Example:
        >>> store = PlanStore(Path("specs/x/tasks.json"), AgentOsJson())
        >>> with store.edit() as doc:
        ...     store.format.apply(doc, TaskUpdate("1", status="pass"))
    """

    def __init__(self, path: Path, fmt: DocumentFormat, *, now: Callable[[], str] | None = None):
        self.path = Path(path)
        self.format = fmt
        self._now = now or _utc_now

    @property
    def lock_path(self) -> Path:
        return self.path.parent / STATE_DIR / "locks" / f"{self.path.name}.lock"

    def read(self) -> tuple[Any, str]:
        """Parse the current file (no lock: a reader sees the old or the new file, whole)."""
        text = read_text(self.path)
        return self.format.parse(text, display_path(self.path)), text

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WriteFailed(
                f"{display_path(self.lock_path)}: could not create the lock file "
                f"({exc}) — the plan file is unchanged; fix permissions"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def edit(self) -> Iterator[Any]:
        """Read-modify-write under the lock. Writes only if the rendered text changed."""
        with self.locked():
            doc, original = self.read()
            # a second, untouched parse tells "nothing changed" without rendering (rendering is
            # the slow part: ~0.4 s for a 5,000-task file; parsing is ~20 ms), and keeps a file
            # in a style the renderer cannot reproduce byte for byte from being rewritten by a
            # no-op edit. Documents that do not compare by value fall back to the text.
            untouched = self.format.parse(original, display_path(self.path))
            yield doc
            if doc == untouched:
                return
            if type(doc).__eq__ is object.__eq__ and self.format.render(doc, original) == original:
                return
            self.format.finalize(doc, self._now())
            new_text = self.format.render(doc, original)
            if new_text != original:
                self._atomic_write(new_text)

    def apply(self, *updates: TaskUpdate, run_state: dict[str, Any] | None = None) -> None:
        """Record task updates (and optionally run bookkeeping) in one locked write."""
        with self.edit() as doc:
            for u in updates:
                self.format.apply(doc, u)
            if run_state is not None and hasattr(self.format, "apply_run_state"):
                self.format.apply_run_state(doc, run_state)

    def _atomic_write(self, text: str) -> None:
        target = self.path.resolve()
        folder = target.parent
        data = text.encode("utf-8")
        try:
            mode = target.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        # We hold the lock and temp files are only made under it: any left is from a writer
        # that crashed between writing it and renaming it. Remove them so none accumulate.
        for stray in stray_temp_files(folder, target.name):
            with contextlib.suppress(OSError):
                stray.unlink()
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        except OSError as exc:
            raise WriteFailed(
                f"{display_path(self.path)}: could not write ({exc}) — the "
                "file is unchanged; free space or fix permissions"
            ) from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise WriteFailed(
                    f"{display_path(self.path)}: could not write ({exc}) — the "
                    "file is unchanged; free space or fix permissions"
                ) from exc
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _utc_now() -> str:
    from datetime import datetime

    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def stray_temp_files(folder: Path, name: str) -> list[Path]:
    """Temp files an interrupted write may have left (they are never read)."""
    return sorted(folder.glob(f".{name}.*.tmp"))


class RunLock:
    """One run per spec at a time: an exclusive, non-blocking ``flock`` held for the whole run.

    The kernel drops the lock when the holder dies (even by SIGKILL), so a stale lock from a
    dead process is taken over safely; the holder's pid, host and start time are written in the
    lock file so a refused run can say who holds it.
    """

    def __init__(self, spec_folder: Path, name: str = "run.lock"):
        self.path = Path(spec_folder) / STATE_DIR / "locks" / name
        self._fd: int | None = None

    def holder(self) -> dict[str, Any] | None:
        import json

        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "null")
        except (FileNotFoundError, ValueError):
            return None

    def _refused(self) -> SpecError:
        import time

        h: dict[str, Any] = {}
        for _ in range(10):  # the holder may be between truncating and writing its info
            h = self.holder() or {}
            if h:
                break
            time.sleep(0.05)
        return SpecError.single(
            display_path(self.path.parents[2]),
            f"is already being run by pid {h.get('pid', '?')} on {h.get('host', '?')} "
            f"since {h.get('started_at', '?')}"
            + (f" (flow run {h['flow_run_id']})" if h.get("flow_run_id") else ""),
            hint="wait for that run to finish, or cancel it",
        )

    def _unusable(self, exc: OSError) -> SpecError:
        return SpecError.single(
            display_path(self.path.parents[1]),
            f"cannot hold specwave's run state ({exc.strerror or exc})",
            hint=f"remove or rename whatever is at {display_path(self.path.parents[1])}, "
            "or fix the folder's permissions",
        )

    def check(self) -> None:
        """Raise SpecError (naming the holder) if another process holds the lock now; create
        nothing. A quick, advisory pre-flight for the CLI: :meth:`acquire` decides."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            for p in (self.path.parents[1], self.path.parent):
                if p.exists() and not p.is_dir():
                    raise self._unusable(NotADirectoryError(20, "not a folder")) from None
            return
        except OSError as exc:
            raise self._unusable(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._refused() from None
        finally:
            os.close(fd)  # closing drops our flock, if we got it

    def acquire(self, info: dict[str, Any]) -> dict[str, Any] | None:
        """Take the lock or raise SpecError naming the holder. Returns the previous (dead)
        holder's info when a stale lock was taken over, else None."""
        import json

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # e.g. .specwave is a file: a clear line, not a traceback
            raise self._unusable(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._refused() from None
        previous = self.holder()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return previous if previous and previous.get("active") else None

    def release(self) -> None:
        import json

        if self._fd is None:
            return
        try:
            h = self.holder() or {}
            h["active"] = False
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(h).encode(), 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None
