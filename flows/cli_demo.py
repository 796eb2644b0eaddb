"""``specwave demo``: run an example spec end to end, offline, in a temporary folder.

The example spec (and its repository) are copied to a temp dir, so the checkout is never
changed; the run uses the real flow on Prefect's ephemeral API.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer

from flows.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@app.command()
def demo(
    example: str = typer.Option("checkout-api", "--example", help="Which example spec to run."),
    seconds: float = typer.Option(1.0, "--seconds", help="How long each simulated task works."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Where to copy the example "
                                                                   "(default: a temp dir)."),
    max_concurrency: Optional[int] = typer.Option(None, "--max-concurrency", "-j", min=1),
    scheduler: str = typer.Option("eager", "--scheduler", help="eager or waves."),
) -> None:
    """Copy an example spec into a temp git repository and run it with a simulated agent."""
    src = EXAMPLES / example
    if not (src / "tasks.json").exists():
        names = ", ".join(sorted(p.name for p in EXAMPLES.iterdir() if (p / "tasks.json").exists()))
        print(f'specwave demo: unknown example "{example}" — use one of: {names}',
              file=sys.stderr)
        raise typer.Exit(2)
    root = Path(workdir or tempfile.mkdtemp(prefix="specwave-demo-")).resolve()
    repo = root / "repo"
    spec = repo / ".agent-os" / "specs" / example
    shutil.copytree(src, spec, ignore=shutil.ignore_patterns(".specwave"))
    subprocess.run(["git", "init", "-q", str(repo)], check=False)
    agent = f"{sys.executable} {EXAMPLES / 'agents' / 'simulated_agent.py'} --seconds {seconds:g}"
    print(f"specwave demo: {example} copied to {spec}")
    print(f"specwave demo: simulated agent (no model; each task sleeps {seconds:g} s)\n")
    from flows.cli_run import run

    args = dict(spec_dir=spec, agent="command", command=agent, agent_json=None, repo=repo,
                max_concurrency=max_concurrency, timeout=600, retries=1, fail_fast=False,
                dry_run=False, scheduler=scheduler, replan=False, format=None, tag=None,
                parallel=False, as_json=False, verbose=False)
    try:
        run(**args)
    finally:
        print(f"\nspec folder: {spec}\nsee it in the Prefect UI: run `prefect server start`, "
              "set PREFECT_API_URL=http://127.0.0.1:4200/api, run the demo again, open "
              "http://127.0.0.1:4200")
