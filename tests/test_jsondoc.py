"""Lossless JSON: every file we read is written back byte for byte when nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks_lib import jsondoc
from tasks_lib.jsondoc import JsonStyle, RawFloat

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_FILES = sorted(
    p for name in ("tasks.json", "context-summary.json") for p in EXAMPLES.rglob(name)
)


def roundtrip(text: str) -> str:
    return jsondoc.dumps(jsondoc.loads(text), jsondoc.detect_style(text))


# ------------------------------------------------------------------ the shipped examples


def test_there_are_examples_to_check():
    assert any(p.name == "tasks.json" for p in EXAMPLE_FILES)
    assert any(p.name == "context-summary.json" for p in EXAMPLE_FILES)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_file_round_trips_byte_exact(path: Path):
    data = path.read_bytes()
    text = data.decode("utf-8")
    assert roundtrip(text).encode("utf-8") == data


# ------------------------------------------------------------- files other tools write

SAMPLE = {
    "version": "2.0",
    "tasks": [
        {
            "id": 1,
            "status": "pending",
            "estimate": 1.5,
            "ratio": 0.25,
            "big": 12345678901234567890,
            "neg": -3,
            "tags": ["a", "b, c", "d]", "[e"],
            "ok": True,
            "none": None,
            "nested": {"deep": [[1, 2], [], {}], "empty": {}},
        },
        {
            "id": "1.1",
            "description": "Résumé — naïve café ✓ 日本語",
            "escapes": 'tab\t"q" \\ /\n',
            "ctrl": "\x01\x7f",
            "sep": "\u2028",
        },
    ],
    "mixed": [1, "two", None, False, 3.0],
    "deep_array": [[["x"]]],
}

DUMPS_STYLES = {
    "indent2": dict(indent=2),
    "indent4": dict(indent=4),
    "tab": dict(indent="\t"),
    "indent1": dict(indent=1),
    "indent0": dict(indent=0),
    "indent2-raw-unicode": dict(indent=2, ensure_ascii=False),
    "indent4-raw-unicode": dict(indent=4, ensure_ascii=False),
    "tab-raw-unicode": dict(indent="\t", ensure_ascii=False),
    "one-line": dict(),
    "one-line-raw-unicode": dict(ensure_ascii=False),
    "compact": dict(separators=(",", ":")),
    "compact-raw-unicode": dict(separators=(",", ":"), ensure_ascii=False),
}

DOCS = {
    "sample": SAMPLE,
    "list-of-numbers": [1, 2, 3],  # no line starts with a quote or a bracket
    "list-of-lists": [[1, 2], ["a"]],
    "empty-object": {},
    "empty-list": [],
    "scalar": "just a string, with: separators",
    "number": 42,
}


@pytest.mark.parametrize("style", DUMPS_STYLES, ids=str)
@pytest.mark.parametrize("doc", DOCS, ids=str)
@pytest.mark.parametrize("ending", ["", "\n", "\r\n"], ids=["no-newline", "lf", "crlf"])
@pytest.mark.parametrize("bom", [False, True], ids=["", "bom"])
def test_json_dumps_output_round_trips(style: str, doc: str, ending: str, bom: bool):
    text = json.dumps(DOCS[doc], **DUMPS_STYLES[style])
    if ending == "\r\n":
        text = text.replace("\n", "\r\n")
    text = ("\ufeff" if bom else "") + text + ending
    assert roundtrip(text) == text


@pytest.mark.parametrize("indent", ["  ", "    ", "\t"])
def test_inline_scalar_arrays_in_an_indented_file_stay_inline(indent: str):
    # the style of Prettier and of many hand-written files: short arrays on one line
    text = (
        "{\n"
        f'{indent}"tasks": [\n'
        f"{indent * 2}{{\n"
        f'{indent * 3}"id": "1",\n'
        f'{indent * 3}"subtasks": ["1.1", "1.2"],\n'
        f'{indent * 3}"blocked_by": [],\n'
        f'{indent * 3}"weird": ["a]", "[b", "{{c}}"],\n'
        f'{indent * 3}"rows": [\n'
        f'{indent * 4}["x", 1],\n'
        f"{indent * 4}{{\n"
        f'{indent * 5}"k": [true]\n'
        f"{indent * 4}}}\n"
        f"{indent * 3}]\n"
        f"{indent * 2}}}\n"
        f"{indent}]\n"
        "}\n"
    )
    style = jsondoc.detect_style(text)
    assert style.indent == indent and style.inline_scalar_arrays
    assert roundtrip(text) == text


def test_detect_style_reads_each_property():
    text = '\ufeff{\r\n    "a": "\\u00e9",\r\n    "b": [\r\n        1\r\n    ]\r\n}'
    style = jsondoc.detect_style(text)
    assert style == JsonStyle(
        indent="    ",
        inline_scalar_arrays=False,
        ensure_ascii=True,
        newline="\r\n",
        final_newline=False,
        bom=True,
    )
    flat = jsondoc.detect_style('{"a":"x, y: z","b":[1,2]}\n')
    assert flat.indent is None and flat.compact_separators and flat.final_newline
    spaced = jsondoc.detect_style('{"a": "x", "b": [1, 2]}')
    assert spaced.indent is None and not spaced.compact_separators


def test_number_spelling_and_id_types_survive():
    text = '{"a": 1.50, "b": 2e3, "c": 1E-7, "d": -0.0, "e": 10, "id": 3, "sid": "3"}'
    doc = jsondoc.loads(text)
    assert isinstance(doc["a"], RawFloat) and doc["a"] == 1.5
    assert type(doc["id"]) is int and type(doc["sid"]) is str
    assert roundtrip(text) == text


def test_a_change_touches_only_the_changed_value():
    text = json.dumps(SAMPLE, indent=2, ensure_ascii=False) + "\n"
    doc = jsondoc.loads(text)
    doc["tasks"][0]["status"] = "pass"
    out = jsondoc.dumps(doc, jsondoc.detect_style(text))
    before, after = text.splitlines(), out.splitlines()
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert changed == [('      "status": "pending",', '      "status": "pass",')]


def test_dumps_refuses_values_json_cannot_hold():
    with pytest.raises(TypeError):
        jsondoc.dumps({"a": {1, 2}})


def test_loads_reports_syntax_errors():
    with pytest.raises(json.JSONDecodeError):
        jsondoc.loads('{"a": 1,}')


# ------------------------------------------------------------------------- properties

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_docs = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def styles(draw) -> JsonStyle:
    indent = draw(st.sampled_from([None, "", " ", "  ", "   ", "    ", "\t", "\t\t"]))
    return JsonStyle(
        indent=indent,
        inline_scalar_arrays=draw(st.booleans()) if indent is not None else False,
        ensure_ascii=draw(st.booleans()),
        newline=draw(st.sampled_from(["\n", "\r\n"])),
        final_newline=draw(st.booleans()),
        bom=draw(st.booleans()),
        compact_separators=draw(st.booleans()) if indent is None else False,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=json_docs, style=styles())
def test_random_documents_in_random_styles_round_trip(doc, style: JsonStyle):
    text = jsondoc.dumps(doc, style)
    # what we write is JSON, and it means the same thing
    assert json.loads(text.removeprefix("\ufeff")) == doc
    parsed = jsondoc.loads(text)
    assert parsed == doc
    # written again in the same style: identical; and the style can be read back from the text
    assert jsondoc.dumps(parsed, style) == text
    assert jsondoc.dumps(parsed, jsondoc.detect_style(text)) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=json_docs,
    indent=st.sampled_from([None, 0, 1, 2, 4, "\t"]),
    ensure_ascii=st.booleans(),
    compact=st.booleans(),
)
def test_random_json_dumps_output_round_trips(doc, indent, ensure_ascii: bool, compact: bool):
    separators = (",", ":") if compact and indent is None else None
    text = json.dumps(doc, indent=indent, ensure_ascii=ensure_ascii, separators=separators)
    assert roundtrip(text) == text
    assert roundtrip(text + "\n") == text + "\n"
