"""Worker output -> result: decide what one coding-agent run actually achieved.

A worker (coding agent) is asked to end its answer with a fenced json block followed by the
words ``TASK COMPLETE`` (see the spec format, "What a worker returns"). Agents do not always
comply, so :func:`parse_worker_output` turns raw output plus what the process and the agent
runtime reported into exactly one :class:`Outcome` with a one-line reason. It is pure (no I/O)
and never raises on any ``str`` input.

Failure semantics:

* ``timeout`` / ``crashed`` / ``parse_error`` are about the *run*, not the work: they are in
  :data:`RETRYABLE_OUTCOMES` and the caller may run the task again.
* ``fail`` / ``blocked`` are the agent's own verdict on the work and are final: retrying the
  same prompt is not expected to change them.
* A claimed ``pass`` is only a pass when nothing contradicts it (failed tests, an agent-runtime
  error, a denied permission); otherwise it is recorded as ``fail`` — never a silent pass.

Example:
    >>> out = parse_worker_output('done\\n```json\\n{"status": "pass"}\\n```\\nTASK COMPLETE')
    >>> out.outcome, out.reason
    (<Outcome.PASS: 'pass'>, 'worker reported pass (no test results)')
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "RETRYABLE_OUTCOMES",
    "AgentSignals",
    "Outcome",
    "ParsedOutput",
    "RateLimit",
    "TestResults",
    "WorkerResult",
    "parse_worker_output",
    "tail",
]


class Outcome(str, Enum):
    """What one worker run amounted to."""

    PASS = "pass"
    FAIL = "fail"
    BLOCKED = "blocked"
    PARSE_ERROR = "parse_error"
    TIMEOUT = "timeout"
    CRASHED = "crashed"


RETRYABLE_OUTCOMES: frozenset[Outcome] = frozenset(
    {Outcome.PARSE_ERROR, Outcome.TIMEOUT, Outcome.CRASHED}
)
"""Outcomes caused by the run rather than the work; agent-reported fail/blocked are final."""


def _none_to_zero(value: Any) -> Any:
    return 0 if value is None else value


def _none_to_empty(value: Any) -> Any:
    return [] if value is None else value


class TestResults(BaseModel):
    """Test counts the worker reports. Lenient: numeric strings are accepted, null means 0."""

    __test__ = False  # not a pytest test class despite the name

    model_config = ConfigDict(extra="allow")

    ran: int = Field(default=0, ge=0, description="Number of tests the worker ran.")
    passed: int = Field(default=0, ge=0, description="Number of those tests that passed.")
    failed: int = Field(default=0, ge=0, description="Number of those tests that failed.")

    @field_validator("ran", "passed", "failed", mode="before")
    @classmethod
    def _null_count_is_zero(cls, value: Any) -> Any:
        return _none_to_zero(value)


class WorkerResult(BaseModel):
    """The json block a worker prints before ``TASK COMPLETE`` (extra keys are kept)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["pass", "fail", "blocked"] = Field(
        description="The worker's verdict on its task: pass, fail or blocked."
    )
    files_modified: list[str] = Field(
        default_factory=list, description="Existing files the worker changed."
    )
    files_created: list[str] = Field(
        default_factory=list, description="New files the worker created."
    )
    functions_created: list[str] = Field(
        default_factory=list, description="Functions or classes the worker added."
    )
    exports_added: list[str] = Field(
        default_factory=list, description="Names the worker added to a module's public exports."
    )
    test_files: list[str] = Field(
        default_factory=list, description="Test files the worker wrote or ran."
    )
    test_results: TestResults | None = Field(
        default=None, description="Test counts: ran, passed, failed (null when no tests ran)."
    )
    blocker: str | None = Field(
        default=None,
        description="What stopped the worker (expected when status is fail or blocked).",
    )
    notes: str | None = Field(default=None, description="Free-form notes from the worker.")
    duration_minutes: float | None = Field(
        default=None, description="How long the worker says it took, in minutes."
    )

    @field_validator("status", mode="before")
    @classmethod
    def _normalize_status(cls, value: Any) -> Any:
        # "PASS", " Pass " are the same verdict; "done" still fails validation.
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "files_modified",
        "files_created",
        "functions_created",
        "exports_added",
        "test_files",
        mode="before",
    )
    @classmethod
    def _null_list_is_empty(cls, value: Any) -> Any:
        return _none_to_empty(value)


def _denial_to_str(value: Any) -> Any:
    # Claude Code reports denials as {"tool_name": ..., "tool_use_id": ..., "tool_input": ...}.
    if isinstance(value, dict):
        name = value.get("tool_name") or value.get("tool") or value.get("name")
        return str(name) if name else json.dumps(value, default=str, sort_keys=True)
    return value


class AgentSignals(BaseModel):
    """What the agent runtime itself reported about the run, independent of the worker's text."""

    is_error: bool = Field(
        default=False,
        description="The agent runtime flagged the run as an error (Claude Code is_error).",
    )
    permission_denials: list[str] = Field(
        default_factory=list,
        description="Tools (or tool calls) the agent was denied permission to use.",
    )
    errors: list[str] = Field(
        default_factory=list, description="Error messages the agent runtime reported."
    )

    @field_validator("permission_denials", mode="before")
    @classmethod
    def _denials(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [_denial_to_str(v) for v in value]
        return _none_to_empty(value)

    @field_validator("errors", mode="before")
    @classmethod
    def _null_errors_is_empty(cls, value: Any) -> Any:
        return _none_to_empty(value)

    def describe(self) -> str:
        """One line naming every problem signal, or ``""`` when there is none."""
        parts = []
        if self.is_error:
            parts.append("the agent runtime reported is_error")
        if self.permission_denials:
            parts.append("permission denied for " + ", ".join(self.permission_denials))
        if self.errors:
            parts.append("agent errors: " + " | ".join(self.errors))
        return "; ".join(parts)


class RateLimit(BaseModel):
    """An agent hit a rate limit or a usage limit: the facts a run loop needs to wait for it
    instead of failing the task (one shape for every agent kind).

    Example:
        >>> RateLimit(kind="usage_limit", until=1796400000.0, reset_text="6:02 PM").kind
        'usage_limit'
    """

    kind: Literal["rate_limit", "usage_limit"] = Field(
        description="rate_limit: HTTP 429 (requests or tokens per minute), still failing after "
        "the agent's own retries; usage_limit: a plan's quota is used up (e.g. a 5-hour limit) "
        "until a reset time."
    )
    until: float | None = Field(
        default=None,
        description="When the limit clears (Unix time, seconds), when the agent said; None: "
        "unknown (back off).",
    )
    reset_text: str | None = Field(
        default=None, description="The reset time as the agent wrote it (e.g. '6:02 PM')."
    )
    message: str = Field(default="", description="The agent's own message (one line).")


class ParsedOutput(BaseModel):
    """The verdict on one worker run."""

    outcome: Outcome = Field(description="What the run amounted to.")
    result: WorkerResult | None = Field(
        default=None,
        description="The worker's parsed json block when there is a valid one (also kept when "
        "the outcome overrides it, e.g. a pass discarded because the process crashed).",
    )
    reason: str = Field(description="One line: why this outcome.")

    @property
    def retryable(self) -> bool:
        """True when the outcome is about the run (timeout, crash, bad output), not the work."""
        return self.outcome in RETRYABLE_OUTCOMES


# --------------------------------------------------------------------------------------------
# Scanning: a single pass over the lines, no backtracking regexes over the whole text.

_REASON_LIMIT = 400
_CLOSING_WORDS = re.compile(r"(?<![a-z])task[ \t_]+complete(?![a-z])", re.IGNORECASE)
_HOW_TO_END = 'the worker must end with a ```json block followed by the words "TASK COMPLETE"'


def _one_line(text: str, limit: int = _REASON_LIMIT) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class _Block:
    __slots__ = ("closed", "end", "lines", "start")

    def __init__(self, start: int) -> None:
        self.start = start  # 0-based index of the opening fence line
        self.end = -1  # 0-based index of the closing fence line (-1 while open)
        self.lines: list[str] = []
        self.closed = False

    @property
    def body(self) -> str:
        return "\n".join(self.lines)


def _fence(line: str) -> tuple[str, int, str] | None:
    """(fence char, fence length, info string) if ``line`` is a fence line, else None."""
    stripped = line.strip()
    if len(stripped) < 3 or stripped[0] not in "`~":
        return None
    char = stripped[0]
    n = len(stripped) - len(stripped.lstrip(char))
    if n < 3:
        return None
    info = stripped[n:].strip()
    if char == "`" and "`" in info:  # CommonMark: a backtick fence's info has no backticks
        return None
    return char, n, info


def _is_json_info(info: str) -> bool:
    return re.split(r"[\s{:,;]", info, maxsplit=1)[0].lower() == "json"


def _json_blocks(lines: list[str]) -> list[_Block]:
    """Every fenced block that holds JSON, in order.

    Fences match CommonMark-style (a block closes on a bare fence of the same character and at
    least the same length), but any indentation and trailing spaces are accepted. A block is a
    JSON block when its info string is ``json`` (any case), or when it has no info string and
    its body starts with ``{``. A block still open at the end of the text is returned unclosed.
    """
    blocks: list[_Block] = []
    block: _Block | None = None
    char, length, info = "", 0, ""

    def keep(b: _Block) -> None:
        if _is_json_info(info) or (info == "" and b.body.lstrip().startswith("{")):
            blocks.append(b)

    for i, line in enumerate(lines):
        fence = _fence(line)
        if block is None:
            if fence is not None:
                char, length, info = fence
                block = _Block(i)
        elif fence is not None and fence[0] == char and fence[1] >= length and fence[2] == "":
            block.closed, block.end = True, i
            keep(block)
            block = None
        else:
            block.lines.append(line)
    if block is not None:
        keep(block)
    return blocks


def _validation_reason(err: ValidationError, where: str) -> str:
    errors = err.errors(include_url=False)
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    got = first.get("input")
    got_text = ""
    if first["type"] != "missing":
        try:
            got_text = f" (got {json.dumps(got)[:80]})"
        except (TypeError, ValueError, RecursionError):
            got_text = f" (got {str(got)[:80]!r})"
    more = f"; {len(errors) - 1} more problem(s)" if len(errors) > 1 else ""
    return (
        f'{where}: field "{field}": {first["msg"]}{got_text}{more} — '
        "fix the worker's result block to match the result format"
    )


def _parse_block(text: str) -> tuple[WorkerResult | None, str]:
    """(result, reason): result is None when the output has no valid, closed result block."""
    lines = [ln.removesuffix("\r") for ln in text.split("\n")]
    blocks = _json_blocks(lines)
    if not blocks:
        return None, f'no ```json block followed by "TASK COMPLETE" in the output — {_HOW_TO_END}'
    block = blocks[-1]
    where = f"the last ```json block (output line {block.start + 1})"
    if not block.closed:
        return None, (
            f'{where} is never closed — close it with ``` and follow it with "TASK COMPLETE"'
        )
    after = "\n".join(lines[block.end + 1 :])
    if _CLOSING_WORDS.search(after) is None:
        earlier = _CLOSING_WORDS.search("\n".join(lines[: block.start])) is not None
        hint = ' ("TASK COMPLETE" appears only before it)' if earlier else ""
        return None, f'{where} is not followed by "TASK COMPLETE"{hint} — {_HOW_TO_END}'
    try:
        data = json.loads(block.body)
    except json.JSONDecodeError as e:
        return None, (
            f"invalid JSON in {where}: {e.msg} at block line {e.lineno} column {e.colno} "
            f"(output line {block.start + 1 + e.lineno}) — print valid JSON"
        )
    except (ValueError, RecursionError) as e:  # e.g. integer too long, nesting too deep
        return None, f"invalid JSON in {where}: {type(e).__name__}: {e} — print valid JSON"
    if not isinstance(data, dict):
        return None, (
            f"{where} holds a JSON {type(data).__name__ if data is not None else 'null'}, "
            'not an object — print one object like {"status": "pass", ...}'
        )
    try:
        return WorkerResult.model_validate(data), f"{where}"
    except ValidationError as e:
        return None, _validation_reason(e, where)
    except (ValueError, RecursionError) as e:
        return None, f"{where} could not be validated: {type(e).__name__}: {e}"


def _tests_summary(tr: TestResults | None) -> str:
    if tr is None:
        return "no test results"
    return f"{tr.passed}/{tr.ran} tests passed, {tr.failed} failed"


def _verdict(result: WorkerResult, signals: AgentSignals) -> tuple[Outcome, str]:
    tests = result.test_results
    if result.status == "pass":
        contradictions = []
        if tests is not None and tests.failed > 0:
            contradictions.append(f"{tests.failed} tests failed")
        if tests is not None and tests.ran > 0 and tests.passed < tests.ran:
            contradictions.append(f"only {tests.passed} of {tests.ran} tests passed")
        sig = signals.describe()
        if sig:
            contradictions.append(sig)
        if contradictions:
            return Outcome.FAIL, "claimed pass but " + "; ".join(contradictions)
        return Outcome.PASS, f"worker reported pass ({_tests_summary(tests)})"
    outcome = Outcome.FAIL if result.status == "fail" else Outcome.BLOCKED
    why = (
        result.blocker
        or result.notes
        or f"worker reported {result.status} without a blocker or notes"
    )
    sig = signals.describe()
    return outcome, why + (f" (also: {sig})" if sig else "")


def _process_reason(exit_code: int | None, timed_out: bool) -> str:
    if timed_out:
        return "the agent timed out and was stopped"
    if exit_code is None:
        return "the agent process was killed (no exit code)"
    if exit_code < 0:
        return f"the agent process was killed by signal {-exit_code} (exit code {exit_code})"
    return f"the agent process exited with code {exit_code}"


def parse_worker_output(
    text: str,
    *,
    exit_code: int | None = 0,
    timed_out: bool = False,
    signals: AgentSignals | None = None,
) -> ParsedOutput:
    """Decide the outcome of one worker run from its output and how the process ended.

    Precedence: ``timed_out`` -> TIMEOUT; ``exit_code`` other than 0 (``None`` = killed) ->
    CRASHED; no valid result block -> PARSE_ERROR; else the worker's status, with a ``pass``
    downgraded to FAIL when its own test counts or the agent ``signals`` contradict it.

    Args:
        text: The worker's whole output (assistant text; CRLF is fine).
        exit_code: The agent process exit code; ``None`` when it was killed without one.
        timed_out: True when the run hit its time limit.
        signals: What the agent runtime reported (errors, denied permissions).

    Returns:
        A :class:`ParsedOutput`; ``result`` holds the parsed block whenever it was valid.

    Example:
        >>> parse_worker_output("```json\\n{\\"status\\": \\"pass\\"}\\n```\\nTASK COMPLETE",
        ...                     exit_code=1).reason
        'the agent process exited with code 1; its claimed pass was discarded — see the output tail'
    """
    signals = signals or AgentSignals()
    if isinstance(text, bytes | bytearray):  # defensive: raw subprocess output
        text = bytes(text).decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        text = "" if text is None else str(text)
    result, block_reason = _parse_block(text)

    if timed_out or exit_code != 0:
        reason = _process_reason(exit_code, timed_out)
        if result is not None and result.status == "pass":
            reason += "; its claimed pass was discarded"
        elif result is not None:
            reason += f"; it had reported {result.status}"
        sig = signals.describe()
        if sig:
            reason += f"; {sig}"
        outcome = Outcome.TIMEOUT if timed_out else Outcome.CRASHED
        return ParsedOutput(
            outcome=outcome, result=result, reason=_one_line(reason + " — see the output tail")
        )

    if result is None:
        sig = signals.describe()
        reason = block_reason + (f" (also: {sig})" if sig else "")
        return ParsedOutput(outcome=Outcome.PARSE_ERROR, result=None, reason=_one_line(reason))

    outcome, reason = _verdict(result, signals)
    return ParsedOutput(outcome=outcome, result=result, reason=_one_line(reason))


def tail(text: str, lines: int = 40, max_chars: int = 4000) -> str:
    """The last ``lines`` lines of ``text``, at most ``max_chars`` characters (for error messages).

    Trailing blank space is dropped; when characters are cut, the result starts with ``…``.

    Example:
        >>> tail("a\\nb\\nc\\n", lines=2)
        'b\\nc'
    """
    if lines <= 0 or max_chars <= 0 or not text:
        return ""
    text = text.rstrip()
    kept = text.rsplit("\n", lines)
    out = "\n".join(kept[-lines:]) if len(kept) > lines else text
    out = out.replace("\r\n", "\n")
    if len(out) > max_chars:
        out = "…" + out[len(out) - max_chars + 1 :]
    return out
