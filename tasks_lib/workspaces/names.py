"""Branch and worktree names for a spec's run (pure: no git, no files).

* integration branch: ``specwave/<spec>``
* task branch: ``specwave/<spec>--<task>``

Git cannot hold ``specwave/<spec>`` and ``specwave/<spec>/<task>`` at once (a ref cannot be
both a file and a folder), hence ``--`` between spec and task.

Each part goes through :func:`sanitize`, which keeps a part that is already a safe name
(lowercase ``[a-z0-9.-]``, starting and ending with a letter or digit, no ``..`` or ``--``, no
``.lock`` suffix, short enough) exactly as it is, and otherwise makes one of those characters
and appends ``_`` plus a hash of the original text. Safe names never contain ``_``, so a
sanitized name never equals a name kept as it was, and two different ids never map to the same
part (up to a 40-bit hash collision). A part never contains ``--``, so a task branch splits
back into spec and task at its only ``--``. Lowercase because refs are files: on a
case-insensitive file system ``T1`` and ``t1`` would be one branch.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "specwave"
SEPARATOR = "--"
HASH_CHARS = 10
MAX_SPEC_CHARS = 40
MAX_TASK_CHARS = 40

_SAFE = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")
_UNSAFE_CHAR = re.compile(r"[^a-z0-9.]+")
_DOTS = re.compile(r"\.{2,}")
_DASHES = re.compile(r"-{2,}")


def is_safe(part: str, max_chars: int = MAX_TASK_CHARS) -> bool:
    """Whether ``part`` is kept as it is by :func:`sanitize`."""
    return (
        len(part) <= max_chars
        and _SAFE.fullmatch(part) is not None
        and ".." not in part
        and SEPARATOR not in part
        and not part.endswith(".lock")
    )


def short_hash(text: str, chars: int = HASH_CHARS) -> str:
    """A short, stable hex digest of ``text`` (any str, even with lone surrogates)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:chars]


def sanitize(text: str, max_chars: int = MAX_TASK_CHARS) -> str:
    """One safe ref-name component for ``text`` (see the module docstring).

    Safe text comes back unchanged; anything else comes back as a cleaned, truncated stem plus
    ``_<hash of text>``, at most ``max_chars`` long."""
    if max_chars < HASH_CHARS + 2:
        raise ValueError(f"max_chars must be at least {HASH_CHARS + 2}")
    if is_safe(text, max_chars):
        return text
    stem = _UNSAFE_CHAR.sub("-", text.lower())
    stem = _DASHES.sub("-", _DOTS.sub(".", stem))
    stem = stem[: max_chars - HASH_CHARS - 1]
    stem = stem.strip("-.")
    # "a.-b" and "a-.b" are fine for git, but keep stems plain: letters, digits, single - or .
    stem = re.sub(r"[.-]{2,}", "-", stem) or "id"
    return f"{stem}_{short_hash(text)}"


def integration_branch(spec: str) -> str:
    """``specwave/<spec>``: the branch a spec's tasks are merged into."""
    return f"{PREFIX}/{sanitize(spec, MAX_SPEC_CHARS)}"


def task_branch(spec: str, task_id: str) -> str:
    """``specwave/<spec>--<task>``: the branch one task's attempts work on."""
    return f"{PREFIX}/{sanitize(spec, MAX_SPEC_CHARS)}{SEPARATOR}{sanitize(task_id)}"


def worktree_dirname(spec: str, task_id: str) -> str:
    """A directory name for a task's worktree (safe on every file system, lowercase)."""
    return f"{sanitize(spec, MAX_SPEC_CHARS)}{SEPARATOR}{sanitize(task_id)}"


def parked_dirname(spec: str, n: int) -> str:
    """A directory name for a parked worktree (a merged task's, kept for the next task to
    reuse): ends with ``_``, so it cannot equal a task's (see :func:`sanitize`)."""
    return f"{sanitize(spec, MAX_SPEC_CHARS)}{SEPARATOR}parked_{n}_"


def integration_dirname(spec: str) -> str:
    """A directory name for a spec's integration worktree (cannot equal a task's)."""
    return f"{sanitize(spec, MAX_SPEC_CHARS)}{SEPARATOR}integration_"


__all__ = [
    "PREFIX",
    "SEPARATOR",
    "integration_branch",
    "integration_dirname",
    "is_safe",
    "parked_dirname",
    "sanitize",
    "short_hash",
    "task_branch",
    "worktree_dirname",
]
