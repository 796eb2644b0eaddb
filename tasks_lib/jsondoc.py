"""Lossless JSON documents: parse a file, remember how it was written, write it back the same way.

Users hand us files written by other tools. A save must not reformat them: it keeps key order,
id types (``1`` stays ``1``, ``"1"`` stays ``"1"``), number spelling (``1.50`` stays ``1.50``),
the indentation, whether short arrays sit on one line, non-ASCII characters, the byte-order mark
and the final newline. Only the values we change look different in a diff.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


class RawFloat(float):
    """A float that remembers how the file spelled it (``1.50``, ``2e3``)."""

    raw: str

    def __new__(cls, text: str) -> RawFloat:
        obj = super().__new__(cls, text)
        obj.raw = text
        return obj


@dataclass(frozen=True)
class JsonStyle:
    """How a JSON file was written."""

    indent: str | None = "  "  # None: one line
    inline_scalar_arrays: bool = False  # ["a", "b"] on one line inside an indented file
    ensure_ascii: bool = False
    newline: str = "\n"
    final_newline: bool = True
    bom: bool = False
    compact_separators: bool = False  # one-line files: "," and ":" with no spaces


_INDENT_RE = re.compile(r"\n([ \t]*)\S")  # the first line after the first line break
_SPACE_RUN_RE = re.compile(r"\n( +)\S")
_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_TOKEN_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def detect_style(text: str) -> JsonStyle:
    """Infer the writing style of a JSON text."""
    bom = text.startswith("\ufeff")
    body = text[1:] if bom else text
    newline = "\r\n" if "\r\n" in body else "\n"
    stripped = body.rstrip(" \t")
    final_newline = stripped.endswith("\n")
    lf_body = body.replace("\r\n", "\n")
    m = _INDENT_RE.search(lf_body)
    if m is None:
        # separators are looked for outside strings ("a, b" in a value says nothing)
        compact = not re.search(r"[,:] ", _STRING_RE.sub('""', body))
        return JsonStyle(
            indent=None,
            ensure_ascii=_looks_ascii_escaped(body),
            newline=newline,
            final_newline=final_newline,
            bom=bom,
            compact_separators=compact,
        )
    indent = m.group(1)
    if " " in indent and "\t" not in indent:
        # the smallest leading run of spaces is the unit
        indent = " " * min(len(x) for x in _SPACE_RUN_RE.findall(lf_body))
    inline, multiline = _scalar_array_layout(lf_body)
    return JsonStyle(
        indent=indent,
        inline_scalar_arrays=inline > multiline,
        ensure_ascii=_looks_ascii_escaped(body),
        newline=newline,
        final_newline=final_newline,
        bom=bom,
    )


def _scalar_array_layout(body: str) -> tuple[int, int]:
    """Count non-empty arrays of scalars written on one line vs. over several lines.

    Brackets inside strings are skipped; arrays that hold objects or arrays are not counted
    (they are multi-line in every style).
    """
    inline = multiline = 0
    stack: list[list] = []  # per open container: [is_array, content start, holds a container]
    for m in _TOKEN_RE.finditer(body):
        c = m.group()[0]
        if c == '"':
            continue
        if c in "[{":
            if stack:
                stack[-1][2] = True
            stack.append([c == "[", m.end(), False])
        elif stack:
            is_array, start, holds_container = stack.pop()
            if is_array and not holds_container:
                inner = body[start : m.start()]
                if inner.strip():
                    if "\n" in inner:
                        multiline += 1
                    else:
                        inline += 1
    return inline, multiline


_RAW_NON_ASCII_RE = re.compile(r"[^\x00-\x7e]")  # json.dumps(ensure_ascii=True) escapes \x7f too


def _looks_ascii_escaped(body: str) -> bool:
    has_escape = re.search(r"\\u[0-9a-fA-F]{4}", body) is not None
    has_raw_non_ascii = _RAW_NON_ASCII_RE.search(body) is not None
    return has_escape and not has_raw_non_ascii


def loads(text: str) -> Any:
    """Parse JSON keeping number spelling (raises json.JSONDecodeError)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    return json.loads(text, parse_float=RawFloat)


def dumps(obj: Any, style: JsonStyle | None = None) -> str:
    """Serialize in the given style (the default matches ``json.dumps(indent=2)`` + newline)."""
    style = style or JsonStyle()
    out: list[str] = []
    if style.indent is None:
        _write_flat(obj, style, out)
    else:
        _write(obj, style, 0, out)
    text = "".join(out)
    if style.newline != "\n":
        text = text.replace("\n", style.newline)
    if style.final_newline:
        text += style.newline
    if style.bom:
        text = "\ufeff" + text
    return text


def _scalar(value: Any, style: JsonStyle) -> str:
    if isinstance(value, str):  # the common case first: rendering is mostly strings
        return _string(value, style)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, RawFloat):
        return value.raw
    if isinstance(value, float):
        return json.dumps(value)  # also NaN/Infinity the way json.dumps writes them
    if isinstance(value, int):
        return int.__repr__(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


_SURROGATE = re.compile("[\ud800-\udfff]")
# json's own C string encoders (what json.dumps calls), without json.dumps' per-call set-up:
# rendering a 500-task file is ~70,000 strings
_encode = json.encoder.encode_basestring
_encode_ascii = json.encoder.encode_basestring_ascii


def _string(text: str, style: JsonStyle) -> str:
    if style.ensure_ascii:
        return _encode_ascii(text)
    if text.isascii():
        return _encode(text)
    # a lone surrogate (the file wrote "\ud800") cannot be written as UTF-8: keep it escaped
    return _encode_ascii(text) if _SURROGATE.search(text) else _encode(text)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _write(obj: Any, style: JsonStyle, level: int, out: list[str]) -> None:
    ind = style.indent or ""
    if isinstance(obj, dict):
        if not obj:
            out.append("{}")
            return
        out.append("{\n")
        items = list(obj.items())
        for i, (key, value) in enumerate(items):
            out.append(ind * (level + 1))
            out.append(_string(str(key), style))
            out.append(": ")
            _write(value, style, level + 1, out)
            out.append(",\n" if i < len(items) - 1 else "\n")
        out.append(ind * level + "}")
    elif isinstance(obj, list):
        if not obj:
            out.append("[]")
            return
        if style.inline_scalar_arrays and all(_is_scalar(v) for v in obj):
            out.append("[" + ", ".join(_scalar(v, style) for v in obj) + "]")
            return
        out.append("[\n")
        for i, value in enumerate(obj):
            out.append(ind * (level + 1))
            _write(value, style, level + 1, out)
            out.append(",\n" if i < len(obj) - 1 else "\n")
        out.append(ind * level + "]")
    else:
        out.append(_scalar(obj, style))


def _write_flat(obj: Any, style: JsonStyle, out: list[str]) -> None:
    item_sep, key_sep = (",", ":") if style.compact_separators else (", ", ": ")
    if isinstance(obj, dict):
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            if i:
                out.append(item_sep)
            out.append(_string(str(key), style) + key_sep)
            _write_flat(value, style, out)
        out.append("}")
    elif isinstance(obj, list):
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(item_sep)
            _write_flat(value, style, out)
        out.append("]")
    else:
        out.append(_scalar(obj, style))
