"""Markdown checklists: the shared parts of the spec-kit and Agent OS ``tasks.md`` readers.

A Markdown plan is kept as a list of lines (each with its own line ending) and an index of the
lines that carry a task's checkbox. Write-back edits one line at a time:

* the character inside ``[ ]`` becomes ``x`` (or ``X``, whichever the file already uses) when a
  task passes — nothing else on the line moves;
* a task that did not pass gets a short note at the end of its line,
  ``— specwave: failed: <reason>`` / ``— specwave: blocked: <reason>``; a later note replaces it
  and a pass removes it, so notes never pile up. Trailing spaces the user had stay after it.

Everything else — other lines, line endings (LF, CRLF, mixed), a byte-order mark, a missing
final newline — is joined back byte for byte. Fenced code blocks and HTML comments are never
read as tasks (templates keep sample tasks in comments; notes keep ``T006~T010`` in fences).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from tasks_lib.errors import Problem
from tasks_lib.spec import DONE_STATUSES, LoadedSpec, TaskStatus
from tasks_lib.store import TaskUpdate

BOM = "\ufeff"

CHECKBOX_RE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<bullet>[-*+]|\d{1,9}[.)])[ \t]+\[(?P<mark>[ xX])\]"
    r"(?:[ \t]+(?P<text>.*?))?[ \t]*$"
)
HEADING_RE = re.compile(r"^ {0,3}(?P<hashes>#{1,6})[ \t]+(?P<text>.*?)[ \t#]*$")
_FENCE_RE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})")

NOTE_PREFIX = " — specwave: "
NOTE_RE = re.compile(r" — specwave: (?P<kind>failed|blocked)(?:: (?P<reason>.*?))?(?P<ws>[ \t]*)$")
NOTE_MAX = 120


# ------------------------------------------------------------------------------ lines


def split_lines(text: str) -> tuple[bool, list[str]]:
    """(has BOM, lines with their endings). Only ``\\n`` ends a line (``\\r\\n`` too)."""
    bom = text.startswith(BOM)
    body = text[1:] if bom else text
    return bom, re.findall(r"[^\n]*\n|[^\n]+$", body)


def content_of(line: str) -> str:
    return line.rstrip("\r\n")


def eol_of(line: str) -> str:
    return line[len(line.rstrip("\r\n")) :]


@dataclass
class Line:
    index: int
    text: str  # without the line ending
    indent: int  # columns of leading whitespace (a tab counts 4)


def indent_width(text: str) -> int:
    n = 0
    for ch in text:
        if ch == " ":
            n += 1
        elif ch == "\t":
            n += 4
        else:
            break
    return n


def visible_lines(lines: list[str]) -> Iterator[Line]:
    """The lines that are Markdown prose: not inside a fenced code block or an HTML comment."""
    fence: str | None = None
    in_comment = False
    for i, raw in enumerate(lines):
        text = content_of(raw)
        if fence is not None:
            m = _FENCE_RE.match(text)
            if (
                m
                and m.group("fence")[0] == fence[0]
                and len(m.group("fence")) >= len(fence)
                and not text.strip()[len(m.group("fence")) :].strip()
            ):
                fence = None
            continue
        if in_comment:
            if "-->" in text:
                in_comment = False
                rest = text.split("-->", 1)[1]
                if not rest.strip():
                    continue
                text = " " * (len(text) - len(rest)) + rest
            else:
                continue
        m = _FENCE_RE.match(text)
        if m:
            fence = m.group("fence")
            continue
        start = text.find("<!--")
        if start != -1 and "-->" not in text[start:]:
            in_comment = True
            if not text[:start].strip():
                continue
            text = text[:start]
        yield Line(i, text, indent_width(text))


# ------------------------------------------------------------------------------ text


_BOLD_RE = re.compile(r"(\*\*|__)(.+?)\1")
_DONE_TAIL_RE = re.compile(
    r"(?:\s*[-–—:|])?\s*(?:(?:✅|✔️?|☑️?)\s*(?:\*\*|__)?(?:COMPLETED?|DONE)?(?:\*\*|__)?"
    r"|(?<!\w)[(\[]?(?:\*\*|__)?(?:COMPLETED|DONE)(?:\*\*|__)?[)\]]?)\s*$"
)
_DONE_HEAD_RE = re.compile(r"^(?:✅|✔️?|☑️?)\s*")


def clean_title(text: str) -> tuple[str, bool]:
    """Strip decorations from a task title: ``**bold**``, a trailing ``✅ COMPLETED`` (or
    ``(DONE)``, ``✅``...). Returns (title, whether it was decorated as completed)."""
    t = text.strip()
    done = False
    while True:
        m = _DONE_TAIL_RE.search(t)
        if not m or not t[: m.start()].strip():
            break
        t = t[: m.start()].rstrip()
        done = True
    if _DONE_HEAD_RE.match(t) and _DONE_HEAD_RE.sub("", t).strip():
        t = _DONE_HEAD_RE.sub("", t)
        done = True
    t = _BOLD_RE.sub(r"\2", t).strip()
    for mark in ("**", "__"):  # an unpaired mark left by "**1. Title**" or a cut decoration
        if t.count(mark) == 1:
            t = t.replace(mark, "").strip()
    return t, done


def split_note(text: str) -> tuple[str, tuple[str, str | None] | None]:
    """(text without a specwave note, (kind, reason) or None)."""
    m = NOTE_RE.search(text)
    if not m:
        return text, None
    return text[: m.start()] + m.group("ws"), (m.group("kind"), m.group("reason") or None)


def note_status(note: tuple[str, str | None] | None) -> TaskStatus | None:
    if note is None:
        return None
    return TaskStatus.BLOCKED if note[0] == "blocked" else TaskStatus.FAIL


def short_reason(reason: str | None) -> str | None:
    if not reason:
        return None
    r = " ".join(str(reason).split())
    # a reason must not look like a note, a checkbox or a line break to the next reader
    r = r.replace(NOTE_PREFIX.strip(), "specwave")
    if len(r) > NOTE_MAX:
        r = r[: NOTE_MAX - 1].rstrip() + "…"
    return r or None


_EXTENSION_LIST = """
    py pyi ts tsx js jsx mjs cjs md mdx json jsonc yaml yml toml go rs java kt kts rb php cs cpp
    cc c h hpp swift sql sh bash zsh css scss sass less html htm vue svelte txt cfg ini lock xml
    gradle proto env prisma graphql gql dart ex exs erl scala clj lua r jl tf hcl ipynb csv tsv
    mk cmake bat ps1
"""
_EXTENSIONS = frozenset(_EXTENSION_LIST.split())
_FRAMEWORK_RE = re.compile(r"^[A-Z][A-Za-z0-9]*\.js$")  # Node.js, Next.js, Vue.js
_BAD_PATH_CHARS = set("[]{}<>*?$%|\\\"'`,;()")


def find_paths(text: str) -> list[str]:
    """Repository paths named in a task's text (``src/models/user.py``, ``docs/``,
    ```.env.example```), in order. Conservative, since two tasks that name one path never run
    together: a path needs a known file extension or a trailing ``/`` (so "and/or", "CI/CD"
    and "Node.js" are not paths); URLs, placeholders (``test_[name].py``), globs and absolute
    paths are skipped."""
    from tasks_lib.planner import PathError, normalize_path

    quoted = re.findall(r"`([^`\n]+)`", text)
    bare = re.sub(r"`[^`\n]+`", " ", text).split()
    out: list[str] = []
    for tok, is_quoted in [(q, True) for q in quoted] + [(b, False) for b in bare]:
        tok = tok.strip().strip("'\"()<>,;:*").rstrip(".")
        tok = tok.removeprefix("./")
        if (
            not tok
            or any(c.isspace() for c in tok)
            or "://" in tok
            or tok.startswith(("@", "~", "/", "-"))
            or _BAD_PATH_CHARS & set(tok)
        ):
            continue
        last = tok.rstrip("/").rsplit("/", 1)[-1]
        stem, dot, ext = last.rpartition(".")
        if tok.endswith("/"):
            if not re.search(r"[A-Za-z]", tok):
                continue
        elif dot and ext.lower() in _EXTENSIONS and stem.strip("."):
            if _FRAMEWORK_RE.match(tok) or re.fullmatch(r"[\d.]+", stem):
                continue
        elif not (is_quoted and last.startswith(".") and len(last) > 1):  # `.gitignore`
            continue
        try:
            normalize_path(tok)
        except PathError:
            continue
        if tok not in out:
            out.append(tok)
    return out


# ------------------------------------------------------------------------------ document


@dataclass
class Entry:
    """Where one task lives in the file."""

    line: int  # the checkbox line, or the heading line of a heading-style task
    has_box: bool
    subtask_lines: list[int] = field(default_factory=list)


@dataclass
class MdDoc:
    """A Markdown plan as the store holds it: lines + where each task is."""

    bom: bool
    lines: list[str]
    entries: dict[str, Entry]
    tick: str = "x"

    def text(self) -> str:
        return (BOM if self.bom else "") + "".join(self.lines)


def box_column(text: str) -> int | None:
    m = CHECKBOX_RE.match(text)
    return m.start("mark") if m else None


def majority_tick(lines: list[str], default: str) -> str:
    lower = upper = 0
    for raw in lines:
        m = CHECKBOX_RE.match(content_of(raw))
        if m:
            lower += m.group("mark") == "x"
            upper += m.group("mark") == "X"
    if lower == upper:
        return default
    return "x" if lower > upper else "X"


class MarkdownChecklist:
    """DocumentFormat base for checklist plans. Subclasses provide ``name``, ``default_tick``
    and ``index(lines, label) -> dict[task id, Entry]`` (raising SpecError for bad input)."""

    name = "markdown"
    default_tick = "x"

    @classmethod
    def for_spec(cls, spec: LoadedSpec) -> MarkdownChecklist:
        """The write-back for a spec read from this kind of checklist."""
        return cls()

    def index(self, lines: list[str], label: str) -> dict[str, Entry]:  # pragma: no cover
        raise NotImplementedError

    def parse(self, text: str, label: str) -> MdDoc:
        bom, lines = split_lines(text)
        entries = self.index(lines, label)
        return MdDoc(bom, lines, entries, majority_tick(lines, self.default_tick))

    def render(self, doc: MdDoc, original: str) -> str:
        return doc.text()

    def finalize(self, doc: MdDoc, now: str) -> None:
        """Nothing derived to recompute in a checklist."""

    # -------------------------------------------------------------- edits

    def _set_box(self, doc: MdDoc, i: int, checked: bool) -> None:
        raw = doc.lines[i]
        text = content_of(raw)
        col = box_column(text)
        if col is None:
            return
        want = doc.tick if checked else " "
        if (text[col] != " ") == checked:
            return  # already in that state (keep the user's x / X)
        doc.lines[i] = text[:col] + want + text[col + 1 :] + eol_of(raw)

    def _set_note(self, doc: MdDoc, i: int, kind: str | None, reason: str | None) -> None:
        raw = doc.lines[i]
        text, _old = split_note(content_of(raw))
        if kind is not None:
            m = re.match(r"^(.*?)([ \t]*)$", text)
            assert m is not None  # the pattern matches any line
            body, ws = m.group(1), m.group(2)
            r = short_reason(reason)
            text = body + NOTE_PREFIX + kind + (f": {r}" if r else "") + ws
        doc.lines[i] = text + eol_of(raw)

    def apply(self, doc: MdDoc, update: TaskUpdate) -> None:
        entry = doc.entries.get(update.task_id)
        if entry is None:
            raise KeyError(f'task "{update.task_id}" is no longer in the file')
        status = update.status
        if status == TaskStatus.PASS.value:
            if entry.has_box:
                self._set_box(doc, entry.line, True)
            self._set_note(doc, entry.line, None, None)
        elif status in (TaskStatus.FAIL.value, TaskStatus.BLOCKED.value):
            if entry.has_box:
                self._set_box(doc, entry.line, False)
            kind = "blocked" if status == TaskStatus.BLOCKED.value else "failed"
            self._set_note(doc, entry.line, kind, update.blocker)
        elif update.clear_blocker:
            self._set_note(doc, entry.line, None, None)
        # pending / in_progress: a checklist has no room for them; the box stays as it is
        if update.subtasks_status == TaskStatus.PASS.value:
            for i in entry.subtask_lines:
                self._set_box(doc, i, True)


def done_but_unticked(label: str, task_id: str | None, line: int) -> Problem:
    """The warning for a task marked done in words (a decoration) whose box is not ticked:
    it is treated as done (0-based ``line``)."""
    return Problem(
        label,
        "says it is completed but its box is not ticked — treated as done",
        task_id=task_id,
        where=str(line + 1),
        severity="warning",
        hint="tick the box, or remove the decoration to run it",
    )


def order_through_done(units: list) -> None:
    """Keep a file's order when a task in the middle of it is already done.

    Order-derived dependencies point at the task (or group) just before: ``4`` depends on
    ``3``. When ``3`` was ticked but ``2`` was not, a done ``3`` satisfies ``4`` at once and
    ``4`` would run alongside ``2`` — not "in order". So a dependency on a done task also
    brings in that task's own (already extended) dependencies: ``4`` waits for ``3`` and
    ``2``. ``units`` are in file order and their ``deps`` point backwards only (no cycle).
    """
    by_id = {u.id: u for u in units}
    for u in units:
        extended: list[str] = []
        for d in u.deps:
            for e in [d, *(by_id[d].deps if by_id[d].status in DONE_STATUSES else [])]:
                if e not in extended:
                    extended.append(e)
        u.deps = extended
