"""Input formats: detect what a path holds and read it into a :class:`LoadedSpec`.

Each format module provides a reader (folder, plan file -> LoadedSpec, raising SpecError) and a
DocumentFormat (for the store's lossless write-back):

==============  ===========================================  ==================================
format          file                                         module
==============  ===========================================  ==================================
agent-os        ``<spec>/tasks.json`` (v2/v3, v4)            :mod:`.agentos`
agent-os-md     ``<spec>/tasks.md`` (Agent OS checklist)     :mod:`.agentos_md`
taskmaster      ``.taskmaster/tasks/tasks.json``,            :mod:`.taskmaster`
                legacy ``tasks/tasks.json``
spec-kit        ``specs/<feature>/tasks.md`` (``T001``)      :mod:`.speckit`
==============  ===========================================  ==================================

Where things live: :mod:`.registry` (each format declared once: names, module, reader,
write-back; :func:`load_spec`, :func:`document_format`), :mod:`.detect` (which format a path
holds), :mod:`.documents` (the spec's prompt documents and ``worker-prompt.md``, with one rule
for symlinks: followed inside the project, skipped with a warning out of it).
"""

from tasks_lib.formats.detect import detect_format, json_kind, md_kind
from tasks_lib.formats.registry import (
    ALIASES,
    FORMATS,
    REGISTRY,
    Format,
    canonical_format,
    document_format,
    load_spec,
)

__all__ = [
    "ALIASES",
    "FORMATS",
    "REGISTRY",
    "Format",
    "canonical_format",
    "detect_format",
    "document_format",
    "json_kind",
    "load_spec",
    "md_kind",
]
