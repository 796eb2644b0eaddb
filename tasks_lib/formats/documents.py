"""A spec's documents: the files that go into the worker prompt, read under one rule.

Every format names its documents (Agent OS ``spec.md`` / ``spec-lite.md`` / ``sub-specs/*.md``,
spec-kit's ``plan.md`` / ``spec.md`` / ``data-model.md``..., Task Master's PRD) and hands them to
:func:`read_documents`, which also reads the spec folder's own prompt template
(``worker-prompt.md``, :data:`tasks_lib.prompt.TEMPLATE_FILE`) into ``spec.prompt_template``.

The rule, the same for every format and for the template:

* a document is read when it is a regular file (after links) of at most
  :data:`MAX_DOCUMENT_BYTES` bytes of UTF-8 text; a name with no file behind it (missing, a
  folder, a dangling link, a link loop) is simply not a document;
* its real path (every symlink on the way resolved) must be inside the **project**: a link that
  stays inside is followed, a link that leads out is not read and the spec gets a warning naming
  the file and the link's target. The project is where the format's layout hangs from:

  - a spec folder ``<P>/specs/<spec>``, ``<P>/.agent-os/specs/<spec>`` or
    ``<P>/agent-os/specs/<spec>`` (Agent OS, spec-kit): ``<P>`` (:func:`spec_project`);
  - Task Master: the folder holding ``.taskmaster/`` (or the legacy ``tasks/``);
  - any other spec folder: the folder itself.

  Every name a format looks for is a path under its project (no ``..``, nothing absolute), so a
  plain file is always inside; only links can lead out;
* a document that exists but is not read for another reason (too large, not UTF-8, unreadable)
  gets a warning too: a spec.md silently missing from the prompt is worse than a warning.

The plan file itself (``tasks.json`` / ``tasks.md``) is not a document: the store checks it
(``tasks_lib.store.check_plan_file``), with the spec folder as its boundary, because it is written
back.

Example (what a format's reader does last)::

    read_documents(spec, [("spec.md", folder / "spec.md"), ("plan.md", folder / "plan.md")],
                   project=spec_project(folder))
    spec.documents        # {"spec.md": "..."}: plan.md is missing, a link out was warned about
    spec.prompt_template  # the text of <folder>/worker-prompt.md, or None
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from tasks_lib.errors import Problem
from tasks_lib.prompt import TEMPLATE_FILE
from tasks_lib.spec import LoadedSpec
from tasks_lib.store import display_path

MAX_DOCUMENT_BYTES = 1_000_000
_LAYOUT_PARENTS = (".agent-os", "agent-os")

__all__ = ["MAX_DOCUMENT_BYTES", "TEMPLATE_FILE", "read_document", "read_documents", "spec_project"]


def spec_project(folder: Path) -> Path:
    """The project a spec folder belongs to (real path): ``<P>`` for ``<P>/specs/<spec>``,
    ``<P>/.agent-os/specs/<spec>`` and ``<P>/agent-os/specs/<spec>``, else the folder itself."""
    folder = Path(folder).resolve()
    if folder.parent.name != "specs" or folder.parent == folder:
        return folder
    above = folder.parent.parent
    return above.parent if above.name in _LAYOUT_PARENTS else above


def read_document(path: Path, *, project: Path, warnings: list[Problem]) -> str | None:
    """The text of one document, or None when it is not read (see the module's rule).

    Args:
        path: where the format looks for the document (under ``project``).
        project: the boundary its real path must stay in (resolved here).
        warnings: a warning is appended for a document that exists but is not read.
    """
    try:
        if not path.is_file():
            return None
        real = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's "Symlink loop"
        return None
    label = display_path(path)
    root = Path(project).resolve()
    if not real.is_relative_to(root):
        how = "is a symlink" if path.is_symlink() else "goes through a symlink"
        warnings.append(
            Problem(
                label,
                f"{how} to {real}, outside the project ({display_path(root)}), so it is not read",
                severity="warning",
                hint="copy the file into the project, or link to a file inside it",
            )
        )
        return None
    try:
        # the resolved path, not following a link swapped in since (O_NOFOLLOW), never blocking
        # on a FIFO swapped in since (O_NONBLOCK, then a regular-file check)
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            data = fh.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        warnings.append(
            Problem(
                label,
                f"cannot be read ({exc.strerror or exc}), so it is not read",
                severity="warning",
                hint="check the file's permissions",
            )
        )
        return None
    if len(data) > MAX_DOCUMENT_BYTES:
        warnings.append(
            Problem(
                label,
                f"is larger than the {MAX_DOCUMENT_BYTES:,} bytes a spec "
                "document may be, so it is not read",
                severity="warning",
                hint="shorten it or split it into smaller documents",
            )
        )
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        warnings.append(
            Problem(
                label,
                f"is not UTF-8 text (byte {exc.start}, line {line}), so it is not read",
                severity="warning",
                hint="save the file as UTF-8",
            )
        )
        return None


def read_documents(
    spec: LoadedSpec, documents: Iterable[tuple[str, Path]], *, project: Path
) -> None:
    """Fill ``spec.documents`` and ``spec.prompt_template`` under the one rule.

    Args:
        spec: the spec just read; its warnings get one line per document not read.
        documents: ``(name, path)`` in prompt order; ``name`` is the key in ``spec.documents``
            (the path as the prompt names it). A name already read is not read again.
        project: the boundary (see :func:`spec_project`; Task Master passes its project root).
    """
    for name, path in documents:
        if name in spec.documents:
            continue
        text = read_document(path, project=project, warnings=spec.warnings)
        if text is not None:
            spec.documents[name] = text
    spec.prompt_template = read_document(
        spec.folder / TEMPLATE_FILE, project=project, warnings=spec.warnings
    )
