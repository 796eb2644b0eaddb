"""``specwave demo``: the full flow end to end, offline, with the real Claude Code CLI.

    specwave demo                 # Claude Code + a scripted model: no key, no network
    specwave demo --real-model    # the same spec with your ANTHROPIC_API_KEY (costs money)
    specwave demo --simulated     # no Claude Code: a simulated command agent

The default demo copies ``examples/demo-app`` (a tiny Python package and its spec folder
``.agent-os/specs/textkit-helpers``: 5 tasks in 3 waves) into a temporary git repository,
starts the scripted model (``tasks_lib.scripted_model``: a stand-in for the Anthropic Messages
API on 127.0.0.1 that replays the answers in ``examples/demo-app/scripted-model.json``), and
runs the spec through ``specwave run --agent claude``: one real Claude Code CLI per task (the one
bundled in the claude-agent-sdk wheel), on Prefect's embedded API (or ``PREFECT_API_URL``). The
scripted answers write real code, run the real tests with the Bash tool and report; everything
else — the CLI, its tools and permissions, the flow, retries, tasks.json, the run logs, the
Prefect UI artifacts — is the real thing.

The checkout is never changed: everything happens in the temporary folder, which is kept for
inspection. The scripted model is stopped when the demo ends (it runs in this process).
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEMO_APP = EXAMPLES / "demo-app"
DEMO_SPEC = "textkit-helpers"
SCENARIOS_FILE = "scripted-model.json"
#: Placeholder for the key the CLI sends to the scripted model (it checks none).
SCRIPTED_KEY = "scripted-demo-no-real-key"
#: Credentials that would send the CLI to a real API: removed for the scripted demo.
_REAL_AUTH_ENV = (
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
    "ANTHROPIC_MODEL",
)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _call_run(**kwargs: Any) -> None:
    """Call ``specwave run`` as a function: every parameter not given gets its CLI default
    (typer's ``Option(...)`` defaults are not values)."""
    from flows.cli_run import run

    args: dict[str, Any] = {}
    for name, param in inspect.signature(run).parameters.items():
        default = param.default
        if isinstance(default, typer.models.ParameterInfo):
            default = default.default
        args[name] = kwargs.pop(name, default)
    if kwargs:
        raise TypeError(f"specwave run has no parameter(s) {sorted(kwargs)}")
    run(**args)


def _git(repo: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "git",
            "-c",
            "user.name=specwave demo",
            "-c",
            "user.email=demo@specwave.invalid",
            "-c",
            "commit.gpgsign=false",
            "-C",
            str(repo),
            *argv,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def _copy_demo_app(root: Path) -> tuple[Path, Path]:
    """examples/demo-app -> ROOT/repo (a git repository with one commit); returns (repo, spec)."""
    repo = root / "repo"
    shutil.copytree(
        DEMO_APP, repo, ignore=shutil.ignore_patterns(SCENARIOS_FILE, ".specwave", "__pycache__")
    )
    if shutil.which("git"):
        _git(repo, "init", "-q")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", "textkit before the demo")
    return repo, repo / ".agent-os" / "specs" / DEMO_SPEC


def _scenarios(think: float) -> dict[str, Any]:
    """The demo's scripted answers, with this interpreter for ``{python}`` and the thinking
    time for ``{think}``."""
    data = json.loads((DEMO_APP / SCENARIOS_FILE).read_text(encoding="utf-8"))
    python = shlex.quote(sys.executable)

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{python}", python).replace("{think}", f"{think:g}")
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    return fill(data)


def _latest_run_id(spec: Path) -> str | None:
    runs = sorted((spec / ".specwave" / "runs").glob("*/run.json"), key=lambda p: p.stat().st_mtime)
    return runs[-1].parent.name if runs else None


def _check_branch(repo: Path, branch: str) -> str:
    """The unittest check on a branch, in a throwaway worktree (removed after)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="specwave-demo-check-") as tmp:
        where = Path(tmp) / "check"
        if _git(repo, "worktree", "add", "-q", "--detach", str(where), branch).returncode:
            return "could not check out the branch"
        try:
            return _check_tests(where)
        finally:
            _git(repo, "worktree", "remove", "--force", str(where))


def _check_tests(repo: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "-s", "tests"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    ran = next((ln for ln in lines if ln.startswith("Ran ")), "no tests ran")
    verdict = lines[-1] if lines else ""
    return f"{ran} — {verdict}"


def _ui_lines(spec: Path) -> list[str]:
    api = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    run_id = _latest_run_id(spec)
    if api:
        ui = api.removesuffix("/api")
        where = f"{ui}/runs/flow-run/{run_id}" if run_id else f"{ui}/runs"
        return [
            (
                f"Prefect UI:  {where}  (task runs, their logs, the "
                f"{DEMO_SPEC}-tasks / -summary artifacts)"
            )
        ]
    return [
        (
            "Prefect UI:  this run used Prefect's embedded API (gone when the demo exits). "
            "To see it in the UI:"
        ),
        "               prefect server start        # in another terminal",
        "               PREFECT_API_URL=http://127.0.0.1:4200/api specwave demo",
        "             then open http://127.0.0.1:4200 → Runs → execute-spec",
    ]


def _has_real_auth() -> bool:
    return any(
        os.environ.get(k)
        for k in (
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
            "CLAUDE_CODE_USE_BEDROCK",
            "CLAUDE_CODE_USE_VERTEX",
        )
    )


@app.command()
def demo(
    real_model: Annotated[
        bool,
        typer.Option(
            "--real-model",
            help="Run the same spec with the real model: needs ANTHROPIC_API_KEY "
            "(or another Claude Code login) and costs money (at most "
            "--max-budget-usd per task).",
        ),
    ] = False,
    simulated: Annotated[
        bool,
        typer.Option(
            "--simulated",
            help="No Claude Code: run --example with a simulated command agent "
            "(each task sleeps --seconds).",
        ),
    ] = False,
    seconds: Annotated[
        float,
        typer.Option(
            "--seconds",
            min=0,
            help="Scripted model: thinking time per turn. --simulated: time per task.",
        ),
    ] = 1.0,
    model: Annotated[
        str | None, typer.Option("--model", help="--real-model: the model (alias or full name).")
    ] = None,
    max_budget_usd: Annotated[
        float,
        typer.Option(
            "--max-budget-usd", min=0.01, help="--real-model: spend limit per task attempt."
        ),
    ] = 0.5,
    example: Annotated[
        str, typer.Option("--example", help="--simulated: which example spec to run.")
    ] = "checkout-api",
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Where to copy the example (default: a temp dir)."),
    ] = None,
    max_concurrency: Annotated[int | None, typer.Option("--max-concurrency", "-j", min=1)] = None,
    scheduler: Annotated[str, typer.Option("--scheduler", help="eager or waves.")] = "eager",
) -> None:
    """Run an example spec end to end with the real Claude Code CLI and a scripted model."""
    if simulated:
        _simulated(example, seconds, workdir, max_concurrency, scheduler)
        return
    from tasks_lib.agents.claude import bundled_cli

    cli = bundled_cli()
    if cli is None and not shutil.which("claude"):
        print(
            "specwave demo: the Claude Code CLI is not installed — reinstall "
            "claude-agent-sdk (its wheel bundles the CLI), or run "
            "`specwave demo --simulated`",
            file=sys.stderr,
        )
        raise typer.Exit(2)
    if real_model and not _has_real_auth():
        print(
            "specwave demo --real-model: no credentials — export ANTHROPIC_API_KEY=sk-ant-... "
            "(or log in to Claude Code / set CLAUDE_CODE_OAUTH_TOKEN); without them run "
            "`specwave demo` (scripted model, free)",
            file=sys.stderr,
        )
        raise typer.Exit(2)

    root = Path(workdir or tempfile.mkdtemp(prefix="specwave-demo-")).resolve()
    repo, spec = _copy_demo_app(root)
    server = None
    if not real_model:
        from tasks_lib.scripted_model import ScriptedModelServer

        server = ScriptedModelServer(scenarios=_scenarios(seconds)).start()
        # This process only: the CLI talks to the scripted model, never to a real API.
        for name in _REAL_AUTH_ENV:
            os.environ.pop(name, None)
        os.environ["ANTHROPIC_BASE_URL"] = server.base_url
        os.environ["ANTHROPIC_API_KEY"] = SCRIPTED_KEY

    _say(f"specwave demo: examples/demo-app copied to the git repository {repo}")
    _say(
        f"  spec:   {spec.relative_to(repo)} — 5 tasks in 3 waves (textkit: slugify, word "
        "stats, truncate → exports → command line)"
    )
    _say(f"  agent:  the real Claude Code CLI, one per task ({cli or shutil.which('claude')})")
    if server is not None:
        _say(f"  model:  SCRIPTED — a local stand-in for the Anthropic API at {server.base_url}")
        _say(
            "          replays fixed answers (write the code, run the tests with Bash, report)"
            f" after {seconds:g} s of 'thinking' per turn."
        )
        _say(
            "          No key, no network, no cost: the code was written by a script, not a model."
        )
    else:
        _say(
            f"  model:  REAL ({model or 'the CLI default'}), at most ${max_budget_usd:g} per "
            "task attempt"
        )
    _say()

    code = 0
    worktrees = (repo / ".git").exists()  # each task in its own worktree, merged in order
    try:
        _call_run(
            spec_dir=spec,
            agent="claude",
            repo=repo,
            **(
                dict(
                    isolation="worktree",
                    verify=f"{shlex.quote(sys.executable)} -m unittest discover -s tests -q",
                )
                if worktrees
                else {}
            ),
            max_concurrency=max_concurrency,
            timeout=600 if server is not None else 1800,
            retries=1,
            scheduler=scheduler,
            model=model if real_model else None,
            max_turns=12 if server else 60,
            max_budget_usd=max_budget_usd if real_model else None,
        )
    except typer.Exit as exc:
        code = exc.exit_code
    finally:
        if server is not None:
            server.stop()
    _afterword(repo, spec, scripted=server is not None)
    raise typer.Exit(code)


def _afterword(repo: Path, spec: Path, *, scripted: bool) -> None:
    _say()
    branch = f"specwave/{DEMO_SPEC}"
    if shutil.which("git") and _git(repo, "rev-parse", "-q", "--verify", branch).returncode == 0:
        log = _git(repo, "log", "--oneline", "--first-parent", branch).stdout.splitlines()
        _say(f"the integration branch {branch}: one merge per task, in dependency order")
        for line in log[:12]:
            _say(f"  {line}")
        mine = _git(repo, "status", "--short", "--", ".", ":(exclude).agent-os").stdout
        _say(
            f"your branch: untouched ({'clean' if not mine.strip() else 'as you left it'}); "
            f"take the work with `git -C {repo} merge --ff-only {branch}`"
        )
        _say(
            f"check:       python -m unittest discover -s tests on {branch} → "
            f"{_check_branch(repo, branch)}"
        )
    else:
        _say(f"check:       python -m unittest discover -s tests → {_check_tests(repo)}")
    _say(f"tasks.json:  {spec / 'tasks.json'}  (specwave status {spec})")
    run_id = _latest_run_id(spec)
    if run_id:
        _say(
            f"run logs:    {spec / '.specwave' / 'runs' / run_id}/tasks/<task>/attempt-N.log "
            "(+ .stream.jsonl: the CLI's raw stream-json, + .json: the attempt record)"
        )
    for line in _ui_lines(spec):
        _say(line)
    if scripted:
        _say()
        _say("The model was scripted. The same spec with a real model (your key, real cost):")
        _say("  export ANTHROPIC_API_KEY=sk-ant-...")
        _say("  specwave demo --real-model [--model sonnet] [--max-budget-usd 0.5]")
        _say("or on your own copy of examples/demo-app:")
        _say(f"  specwave run .agent-os/specs/{DEMO_SPEC} --agent claude --max-budget-usd 0.5")


def _simulated(
    example: str, seconds: float, workdir: Path | None, max_concurrency: int | None, scheduler: str
) -> None:
    """The first demo: an example spec with a simulated command agent (no Claude Code)."""
    src = EXAMPLES / example
    if not (src / "tasks.json").exists():
        names = ", ".join(sorted(p.name for p in EXAMPLES.iterdir() if (p / "tasks.json").exists()))
        print(f'specwave demo: unknown example "{example}" — use one of: {names}', file=sys.stderr)
        raise typer.Exit(2)
    root = Path(workdir or tempfile.mkdtemp(prefix="specwave-demo-")).resolve()
    repo = root / "repo"
    spec = repo / ".agent-os" / "specs" / example
    shutil.copytree(src, spec, ignore=shutil.ignore_patterns(".specwave"))
    subprocess.run(["git", "init", "-q", str(repo)], check=False)
    agent = f"{sys.executable} {EXAMPLES / 'agents' / 'simulated_agent.py'} --seconds {seconds:g}"
    _say(f"specwave demo: {example} copied to {spec}")
    _say(f"specwave demo: simulated agent (no model; each task sleeps {seconds:g} s)\n")
    try:
        _call_run(
            spec_dir=spec,
            agent="command",
            command=agent,
            repo=repo,
            max_concurrency=max_concurrency,
            timeout=600,
            retries=1,
            scheduler=scheduler,
        )
    finally:
        for line in _ui_lines(spec):
            _say(line)
