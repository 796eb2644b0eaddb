"""The ``specwave`` command line.

``validate`` and ``plan`` import no Prefect code (they start in a fraction of a second and never
start a server); ``run`` and friends import the flow lazily.

Exit codes: 0 success; 1 the run finished but not every task passed; 2 invalid input (one line
per problem, no traceback).
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import typer

from tasks_lib.errors import SpecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Run coding-agent spec folders in parallel as Prefect flows.",
)

EXIT_OK, EXIT_INCOMPLETE, EXIT_INVALID = 0, 1, 2


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _fail(exc: SpecError) -> None:
    for p in exc.warnings:
        _err(f"warning: {p}")
    for p in exc.problems:
        _err(str(p))
    raise typer.Exit(EXIT_INVALID)


def load_and_plan(
    path: Path,
    *,
    max_concurrency: int | None = None,
    replan: bool = False,
    format: str | None = None,
    tag: str | None = None,
    parallel: bool = False,
):
    """Load + plan, raising SpecError with every error (used by every command)."""
    from tasks_lib.formats import load_spec
    from tasks_lib.planner import plan_spec

    spec = load_spec(path, format=format, tag=tag, parallel=parallel)
    plan = plan_spec(spec, max_concurrency=max_concurrency, replan=replan)
    if plan.errors:
        raise SpecError(plan.errors, [w for w in plan.warnings if w.severity == "warning"])
    return spec, plan


SpecPath = typer.Argument(..., help="A spec folder (or its plan file).", show_default=False)
FormatOpt = typer.Option(None, "--format", help="Force the input format instead of detecting it.")
TagOpt = typer.Option(None, "--tag", help="Task Master tag to read (default: master).")
ParallelOpt = typer.Option(
    False,
    "--parallel",
    help="Formats without dependency data: run top-level tasks in parallel instead of in order.",
)


@app.command()
def validate(
    spec_dir: Path = SpecPath,
    replan: bool = typer.Option(False, "--replan", help="Ignore the declared waves."),
    format: str | None = FormatOpt,
    tag: str | None = TagOpt,
    parallel: bool = ParallelOpt,
) -> None:
    """Check a spec: exit 0 when valid (warnings allowed), 2 with one line per problem."""
    try:
        spec, plan = load_and_plan(
            spec_dir, replan=replan, format=format, tag=tag, parallel=parallel
        )
    except SpecError as exc:
        _fail(exc)
    for w in plan.warnings:
        _err(f"warning: {w}")
    subtasks = sum(len(u.subtasks) for u in spec.units)
    print(
        f"{_label(spec)}: valid — {len(spec.units)} tasks"
        + (f" (+{subtasks} subtasks)" if subtasks else "")
        + f", {len(plan.waves)} waves ({plan.source}), {len(plan.conflicts)} file conflicts"
        + (f", {len(plan.warnings)} warnings" if plan.warnings else "")
    )


def _label(spec) -> str:
    from tasks_lib.store import display_path

    return display_path(spec.tasks_path)


@app.command()
def plan(
    spec_dir: Path = SpecPath,
    max_concurrency: int | None = typer.Option(
        None,
        "--max-concurrency",
        "-j",
        min=1,
        help="Worker slots (default: the spec's max_concurrent_workers, else 4).",
    ),
    replan: bool = typer.Option(
        False,
        "--replan",
        help="Compute waves from the dependencies instead of using the declared ones.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    format: str | None = FormatOpt,
    tag: str | None = TagOpt,
    parallel: bool = ParallelOpt,
) -> None:
    """Show the waves, the critical path and the best possible speed-up."""
    try:
        spec, p = load_and_plan(
            spec_dir,
            max_concurrency=max_concurrency,
            replan=replan,
            format=format,
            tag=tag,
            parallel=parallel,
        )
    except SpecError as exc:
        _fail(exc)
    if as_json:
        out = {"spec": spec.name, "format": spec.format, "tasks": len(spec.units), **p.to_json()}
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return
    from flows.render import render_plan

    for w in p.warnings:
        _err(f"warning: {w}")
    render_plan(spec, p)


@app.command()
def schema(which: str = typer.Argument(..., help="tasks or context")) -> None:
    """Print the JSON Schema of tasks.json or context-summary.json."""
    from pydantic import BaseModel

    from tasks_lib.spec import ContextSummary, TasksFile

    models: dict[str, type[BaseModel]] = {"tasks": TasksFile, "context": ContextSummary}
    if which not in models:
        _err(f'specwave schema: unknown schema "{which}" — use "tasks" or "context"')
        raise typer.Exit(EXIT_INVALID)
    print(json.dumps(models[which].model_json_schema(), indent=2))


def main() -> None:
    """Console entry point: no traceback ever reaches the user unless SPECWAVE_DEBUG=1."""
    if sys.argv[1:2] == ["run"]:
        _pause_gc_for_startup()
    try:
        _register_extra_commands()
        try:
            app()
        except SpecError as exc:
            for p in exc.problems:
                _err(str(p))
            sys.exit(EXIT_INVALID)
        except KeyboardInterrupt:
            _err("specwave: interrupted")
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - last line of defence
            if os.environ.get("SPECWAVE_DEBUG"):
                raise
            _err(
                f"specwave: internal error: {type(exc).__name__}: {exc} "
                "(set SPECWAVE_DEBUG=1 for a traceback)"
            )
            sys.exit(EXIT_INCOMPLETE)
    finally:
        startup_done()


_gc_paused = {"yes": False}


def _pause_gc_for_startup() -> None:
    """``specwave run``: no cyclic garbage collection while start-up imports Prefect and
    specwave. They leave some 150,000 objects that live as long as the process (modules,
    classes, pydantic schemas); the collector ran some 380 times over them before the flow
    started (~0.15-0.2 s of CPU), for some 9,000 garbage objects. :func:`startup_done` turns
    it back on before the flow runs."""
    if gc.isenabled():
        gc.disable()
        _gc_paused["yes"] = True


def startup_done() -> None:
    """The start-up is over (the flow is about to run, or the command ends): the objects it
    allocated move to the collector's permanent generation (no later collection scans them
    again; the few thousand garbage objects among them, ~4 MB, stay), and collection is back
    on. A no-op unless :func:`_pause_gc_for_startup` paused it."""
    if _gc_paused["yes"]:
        _gc_paused["yes"] = False
        gc.freeze()
        gc.enable()


#: Modules holding more commands (each registers its own on ``app`` when imported).
EXTRA_COMMAND_MODULES = ("flows.cli_run", "flows.cli_demo", "flows.cli_deploy", "flows.cli_clean")
#: Commands whose module is known: running one imports only that module (``specwave run``
#: does not pay for the demo and deploy commands before its first agent starts). Anything
#: else (``--help``, no command, an unknown or new command) imports every module.
_COMMAND_MODULES = {
    "validate": (),
    "plan": (),
    "schema": (),
    "run": ("flows.cli_run",),
    "status": ("flows.cli_run",),
    "clean": ("flows.cli_clean",),
}


def _register_extra_commands(argv: list[str] | None = None) -> None:
    """Commands that live in their own modules (run, status, demo, deploy) register here:
    only the module of the command in ``argv`` (default ``sys.argv``) when it is known, else
    all of them."""
    import importlib

    args = sys.argv[1:] if argv is None else argv
    modules = (
        _COMMAND_MODULES.get(args[0], EXTRA_COMMAND_MODULES) if args else (EXTRA_COMMAND_MODULES)
    )
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


if __name__ == "__main__":
    main()
