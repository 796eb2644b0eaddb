"""The shared Markdown checklist layer: lossless lines, what counts as prose, titles, paths,
checkbox edits and one-line notes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks_lib.errors import SpecError
from tasks_lib.formats.markdown import (
    Entry,
    MarkdownChecklist,
    clean_title,
    find_paths,
    split_lines,
    split_note,
    visible_lines,
)
from tasks_lib.formats.speckit import SpecKitMarkdown
from tasks_lib.store import TaskUpdate


class OneTask(MarkdownChecklist):
    """A checklist whose first checkbox line is task "1" (for testing the edits alone)."""

    name = "test"

    def index(self, lines, label):
        for ln in visible_lines(lines):
            if "[ ]" in ln.text or "[x]" in ln.text or "[X]" in ln.text:
                return {"1": Entry(ln.index, True)}
        return {}


def roundtrip(fmt, text: str) -> str:
    return fmt.render(fmt.parse(text, "t.md"), text)


@pytest.mark.parametrize(
    "text",
    [
        "- [ ] T001 a\n- [ ] T002 b\n",
        "- [ ] T001 a\r\n- [ ] T002 b\r\n",
        "- [ ] T001 a\r\n- [ ] T002 b\n",  # mixed endings
        "\ufeff- [ ] T001 a\n",
        "- [ ] T001 a",  # no final newline
        "- [ ] T001 a\n\n\n",
        "- [ ] T001 a\u2028still the same line\x0c\n",  # only \n ends a line
        "- [ ] T001 a\rb\n",
    ],
)
def test_lines_join_back_byte_for_byte(text):
    assert roundtrip(SpecKitMarkdown(), text) == text
    bom, lines = split_lines(text)
    assert ("\ufeff" if bom else "") + "".join(lines) == text


def test_tick_keeps_line_endings_bom_and_missing_final_newline():
    fmt = SpecKitMarkdown()
    text = "\ufeff# T\r\n- [ ] T001 a\r\n- [ ] T002 b"
    doc = fmt.parse(text, "t.md")
    fmt.apply(doc, TaskUpdate("T002", status="pass"))
    fmt.apply(doc, TaskUpdate("T001", status="fail", blocker="boom"))
    assert (
        fmt.render(doc, text)
        == "\ufeff# T\r\n- [ ] T001 a — specwave: failed: boom\r\n- [X] T002 b"
    )


def test_code_fences_and_comments_are_not_prose():
    text = (
        "a\n````bash\n- [ ] T001 in a fence\n```\n```info cannot close\n`````\nb\n"
        "~~~\n- [ ] T002 tilde fence\n~~~\n"
        "<!-- one line --> c\n"
        "<!--\n- [ ] T003 in a comment\n-->\n"
        "d <!-- starts here\n- [ ] T004 in a comment\nends --> e\n"
    )
    seen = [ln.text.strip() for ln in visible_lines(split_lines(text)[1])]
    assert seen == ["a", "b", "<!-- one line --> c", "d", "e"]


def test_an_unterminated_fence_hides_the_rest():
    text = "- [ ] T001 a\n```\n- [ ] T002 b\n"
    assert [ln.index for ln in visible_lines(split_lines(text)[1])] == [0]


@pytest.mark.parametrize(
    "raw, title, done",
    [
        ("**Create the model** ✅ COMPLETED", "Create the model", True),
        ("Create the model ✅", "Create the model", True),
        ("✅ Create the model", "Create the model", True),
        ("Create the model (COMPLETED)", "Create the model", True),
        ("Create the model - **DONE**", "Create the model", True),
        ("**1. Create the model**", "1. Create the model", False),
        ("Use **bold** inside", "Use bold inside", False),
        ("Done", "Done", False),  # a title that is only a word is never stripped
        ("Mark orders as done", "Mark orders as done", False),  # lower case is prose
    ],
)
def test_clean_title(raw, title, done):
    assert clean_title(raw) == (title, done)


@pytest.mark.parametrize(
    "text, paths",
    [
        ("Create the User model in src/models/user.py", ["src/models/user.py"]),
        ("Update docs/ and `README.md`", ["README.md", "docs/"]),
        ("Edit ./src/app.ts, then src/api/routes/.", ["src/app.ts", "src/api/routes/"]),
        ("Use Node.js and Next.js with and/or CI/CD", []),
        ("Contract test in tests/contract/test_[name].py", []),  # template placeholder
        ("See https://example.com/a.py and /etc/passwd and ../up.py", []),
        ("Bump v1.2 e.g. 1.2.3 i.e. x", []),
        ("Copy `.env.example` to `.env`", [".env.example", ".env"]),
        ("Glob src/**/*.py", []),
        ("(src/db/migrations.py)", ["src/db/migrations.py"]),
    ],
)
def test_find_paths(text, paths):
    assert find_paths(text) == paths


def test_notes_replace_each_other_and_a_pass_restores_the_line():
    fmt = OneTask()
    text = "- [ ] 1. Title  \n"  # trailing spaces (a Markdown line break) are the user's
    doc = fmt.parse(text, "t.md")
    fmt.apply(doc, TaskUpdate("1", status="fail", blocker="first"))
    assert doc.text() == "- [ ] 1. Title — specwave: failed: first  \n"
    fmt.apply(doc, TaskUpdate("1", status="blocked", blocker="second\nline  two"))
    assert doc.text() == "- [ ] 1. Title — specwave: blocked: second line two  \n"
    fmt.apply(doc, TaskUpdate("1", status="fail"))
    assert doc.text() == "- [ ] 1. Title — specwave: failed  \n"
    fmt.apply(doc, TaskUpdate("1", status="pass", clear_blocker=True))
    assert doc.text() == "- [x] 1. Title  \n"


def test_a_note_is_short_and_cannot_fake_another_note():
    fmt = OneTask()
    doc = fmt.parse("- [ ] 1. T\n", "t.md")
    fmt.apply(doc, TaskUpdate("1", status="fail", blocker="x — specwave: blocked: y " * 20))
    line = doc.text()
    assert line.count("— specwave:") == 1
    body, note = split_note(line.rstrip("\n"))
    assert body == "- [ ] 1. T" and note[0] == "failed"
    assert len(note[1]) == 120 and note[1].endswith("…")


def test_pending_and_in_progress_leave_the_line_alone():
    fmt = OneTask()
    text = "- [ ] 1. T — specwave: failed: before\n"
    doc = fmt.parse(text, "t.md")
    fmt.apply(doc, TaskUpdate("1", status="in_progress"))
    fmt.apply(doc, TaskUpdate("1", status="pending"))
    assert doc.text() == text


@pytest.mark.parametrize(
    "text, tick",
    [
        ("- [ ] T001 a\n- [x] T002 b\n- [ ] T003 c\n", "x"),
        ("- [ ] T001 a\n- [X] T002 b\n- [ ] T003 c\n", "X"),
        ("- [ ] T001 a\n- [ ] T002 b\n- [ ] T003 c\n", "X"),  # spec-kit's own /implement uses X
    ],
)
def test_the_tick_follows_the_file(text, tick):
    fmt = SpecKitMarkdown()
    doc = fmt.parse(text, "t.md")
    fmt.apply(doc, TaskUpdate("T003", status="pass"))
    assert doc.text().splitlines()[2] == f"- [{tick}] T003 c"


_line = st.one_of(
    st.sampled_from(
        [
            "- [ ] T00{} task",
            "- [x] T00{} done",
            "  - nested {}",
            "## Phase {}",
            "```",
            "<!--",
            "-->",
            "",
            "text {} ✅",
            "- [X] T00{} [P] in a/{}.py",
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_line, st.integers(0, 9), st.sampled_from(["\n", "\r\n", ""])), max_size=25),
    st.booleans(),
)
def test_random_documents_round_trip_and_edits_touch_one_line(parts, bom):
    text = ("\ufeff" if bom else "") + "".join(
        (tpl.replace("{}", str(n)) if "{}" in tpl else tpl) + eol for tpl, n, eol in parts
    )
    fmt = SpecKitMarkdown()
    try:
        doc = fmt.parse(text, "t.md")
    except SpecError:  # duplicate ids; nothing else may escape
        return
    assert fmt.render(doc, text) == text
    before = list(doc.lines)
    for tid in list(doc.entries)[:2]:
        fmt.apply(doc, TaskUpdate(tid, status="pass"))
        fmt.apply(doc, TaskUpdate(tid, status="fail", blocker="r"))
    changed = [i for i, (a, b) in enumerate(zip(before, doc.lines)) if a != b]
    assert set(changed) <= {e.line for e in doc.entries.values()}
    for i in changed:
        assert doc.lines[i].endswith(("\n", "\r\n")) == before[i].endswith(("\n", "\r\n"))
