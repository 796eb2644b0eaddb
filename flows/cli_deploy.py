"""``specwave deploy``: create the work pools (and the shared agent limit) and deploy
prefect.yaml; ``specwave approve``: answer a run paused between waves.

    specwave deploy                              # pool specwave-process; specwave, specwave-nightly
    specwave deploy --repo ~/app --spec ~/app/.agent-os/specs/x --activate-schedule
    specwave deploy --docker                     # + pool specwave-docker, image, specwave-docker
    specwave deploy --docker --no-build          # same, using an existing image (no Docker engine)
    specwave deploy --agent-slots 4              # + global concurrency limit specwave-agents

It talks to the Prefect API of ``PREFECT_API_URL`` (start one with ``prefect server start``),
creates what is missing (idempotent), then runs ``prefect --no-prompt deploy`` on the
project's prefect.yaml — the same file a user can deploy by hand — with ``SPECWAVE_REPO``,
``SPECWAVE_SPEC`` and ``SPECWAVE_SKIP_BUILD`` set from the flags.

    specwave approve FLOW_RUN_ID [--stop] [--note TEXT]

does what the UI's form does for a run paused by ``--approve-waves`` (Prefect's CLI has no
command that resumes a run with input).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.cli import EXIT_INCOMPLETE, EXIT_INVALID, _err, app

PROJECT = Path(__file__).resolve().parents[1]
FLOW_NAME = "execute-spec"
PROCESS_DEPLOYMENTS = ("specwave", "specwave-nightly", "specwave-task")
DOCKER_DEPLOYMENT = "specwave-docker"
DOCKER_TASK_DEPLOYMENT = "specwave-task-docker"
#: the flow of each deployment that is not execute-spec's
FLOW_OF = {"specwave-task": "run-task", DOCKER_TASK_DEPLOYMENT: "run-task"}
SCHEDULED_DEPLOYMENT = "specwave-nightly"


def project_dir(explicit: Path | None) -> Path:
    """The folder holding prefect.yaml: --project, else this checkout, else the current dir."""
    for cand in [explicit] if explicit else [PROJECT, Path.cwd()]:
        if cand and (cand / "prefect.yaml").is_file():
            return cand.resolve()
    where = explicit or f"{PROJECT} or {Path.cwd()}"
    raise typer.BadParameter(
        f"no prefect.yaml in {where} — run from a clone of specwave or pass --project DIR",
        param_hint="--project",
    )


def deploy_env(repo: Path, spec: Path | None, skip_build: bool, image: str | None) -> dict:
    """The environment prefect.yaml's placeholders read (see its header)."""
    env = dict(os.environ)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env["SPECWAVE_REPO"] = str(repo)
    if spec is not None:
        env["SPECWAVE_SPEC"] = str(spec)
    if skip_build:
        env["SPECWAVE_SKIP_BUILD"] = "1"
    if image:
        name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        env["SPECWAVE_IMAGE_NAME"] = name
        if tag:
            env["SPECWAVE_IMAGE_TAG"] = tag
    return env


def prefect_deploy(
    project: Path,
    names: list[str],
    env: dict,
    pool: str | None = None,
    timeout: float = 600,
    echo=print,
) -> None:
    """``prefect --no-prompt deploy -n NAME...`` in the project folder (raises on failure)."""
    argv = [
        sys.executable,
        "-m",
        "prefect",
        "--no-prompt",
        "deploy",
        "--prefect-file",
        str(project / "prefect.yaml"),
    ]
    for n in names:
        argv += ["-n", n]
    if pool:
        argv += ["--pool", pool]
    proc = subprocess.run(
        argv, cwd=project, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        tail = "\n".join(out.splitlines()[-25:])
        raise RuntimeError(
            f"prefect deploy {' '.join(names)} failed with exit code {proc.returncode}:\n{tail}"
        )
    for line in out.splitlines():
        if "Warning" in line or "SKIP_BUILD" in line:
            echo("  " + line.strip(" │"))


async def describe(names: list[str]) -> list[dict]:
    """id, pool, schedules and UI link of each deployment (as the API has them now)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    out = []
    async with get_client() as client:
        for name in names:
            dep = await client.read_deployment_by_name(name)
            out.append(
                {
                    "name": name,
                    "id": str(dep.id),
                    "pool": dep.work_pool_name,
                    "schedules": [
                        {"cron": getattr(s.schedule, "cron", None), "active": s.active}
                        for s in dep.schedules
                    ],
                    "url": f"{ui}/deployments/deployment/{dep.id}" if ui else None,
                }
            )
    return out


async def activate_schedules(deployment: str, active: bool = True) -> int:
    """Switch every schedule of ``flow/deployment`` on (or off); returns how many changed."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        dep = await client.read_deployment_by_name(deployment)
        changed = 0
        for s in dep.schedules:
            if s.active != active:
                await client.update_deployment_schedule(dep.id, s.id, active=active)
                changed += 1
    return changed


@app.command()
def deploy(
    repo: Annotated[
        Path | None,
        typer.Option(
            "--repo",
            help="The repository the agents work in (default: the current directory); "
            "docker: mounted at /repo.",
        ),
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option("--spec", help="Spec folder of the scheduled deployment (specwave-nightly)."),
    ] = None,
    pool: Annotated[
        str, typer.Option("--pool", help="Process work pool (created if missing).")
    ] = "specwave-process",
    docker: Annotated[
        bool,
        typer.Option("--docker", help="Also the docker pool and the specwave-docker deployment."),
    ] = False,
    docker_pool: Annotated[
        str, typer.Option("--docker-pool", help="Docker work pool (created if missing).")
    ] = "specwave-docker",
    no_build: Annotated[
        bool,
        typer.Option("--no-build", help="Docker: do not build the image, use --image as it is."),
    ] = False,
    image: Annotated[
        str | None,
        typer.Option("--image", help="Docker image NAME[:TAG] (default specwave:latest)."),
    ] = None,
    names: Annotated[
        list[str] | None,
        typer.Option(
            "--name", "-n", help="Deploy only these deployments of prefect.yaml (repeatable)."
        ),
    ] = None,
    agent_slots: Annotated[
        int | None,
        typer.Option(
            "--agent-slots",
            min=1,
            help="Create (or resize) the global concurrency limit every "
            "agent launch occupies when a run sets "
            "concurrency_limit.",
        ),
    ] = None,
    limit_name: Annotated[
        str, typer.Option("--limit-name", help="Name of that limit.")
    ] = "specwave-agents",
    activate_schedule: Annotated[
        bool,
        typer.Option(
            "--activate-schedule", help="Switch the schedule of specwave-nightly on (needs --spec)."
        ),
    ] = False,
    project: Annotated[
        Path | None,
        typer.Option(
            "--project", help="Folder with prefect.yaml (default: this specwave checkout)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as JSON.")] = False,
) -> None:
    """Create the work pools (and the shared agent limit) and deploy prefect.yaml."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        _err(
            "specwave deploy: PREFECT_API_URL is not set — start a server (prefect server "
            "start) and export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
        raise typer.Exit(EXIT_INVALID)
    root = project_dir(project)
    repo_dir = (repo or Path.cwd()).resolve()
    if not repo_dir.is_dir():
        _err(f"{repo_dir}: repository folder not found — pass an existing folder with --repo")
        raise typer.Exit(EXIT_INVALID)
    spec_dir = spec.resolve() if spec else None
    if spec_dir is not None and not spec_dir.exists():
        _err(f"{spec_dir}: spec folder not found — pass an existing folder with --spec")
        raise typer.Exit(EXIT_INVALID)
    if activate_schedule and spec_dir is None:
        _err("--activate-schedule: the scheduled deployment needs a spec folder — add --spec")
        raise typer.Exit(EXIT_INVALID)
    wanted = (
        list(names)
        if names
        else [
            *PROCESS_DEPLOYMENTS,
            *([DOCKER_DEPLOYMENT, DOCKER_TASK_DEPLOYMENT] if docker else []),
        ]
    )
    known = {*PROCESS_DEPLOYMENTS, DOCKER_DEPLOYMENT, DOCKER_TASK_DEPLOYMENT}
    if unknown := [n for n in wanted if n not in known]:
        _err(
            f"--name: unknown deployment {', '.join(unknown)} — prefect.yaml has "
            f"{', '.join(sorted(known))}"
        )
        raise typer.Exit(EXIT_INVALID)
    process_names = [n for n in wanted if n in PROCESS_DEPLOYMENTS]
    docker_names = [n for n in wanted if n in (DOCKER_DEPLOYMENT, DOCKER_TASK_DEPLOYMENT)]

    from deployments.pools import ensure_concurrency_limit, ensure_work_pool

    report: dict = {"project": str(root), "repo": str(repo_dir), "pools": {}, "deployments": []}

    async def prepare() -> None:
        if process_names:
            _, created = await ensure_work_pool(pool, "process")
            report["pools"][pool] = "created" if created else "exists"
        if docker_names:
            _, created = await ensure_work_pool(docker_pool, "docker")
            report["pools"][docker_pool] = "created" if created else "exists"
        if agent_slots is not None:
            limit, action = await ensure_concurrency_limit(limit_name, agent_slots)
            report["concurrency_limit"] = {
                "name": limit.name,
                "slots": limit.limit,
                "action": action,
            }

    say = (lambda *a: None) if as_json else print
    try:
        asyncio.run(prepare())
        for name, state in report["pools"].items():
            say(f"work pool {name}: {state}")
        if "concurrency_limit" in report:
            lim = report["concurrency_limit"]
            say(f"global concurrency limit {lim['name']}: {lim['slots']} slots ({lim['action']})")
        env = deploy_env(repo_dir, spec_dir, no_build, image)
        if process_names:
            say(f"deploying {', '.join(process_names)} (pool {pool})…")
            if pool == "specwave-process":
                prefect_deploy(root, process_names, env, echo=say)
            else:  # prefect deploy applies --pool only when it deploys one name
                for n in process_names:
                    prefect_deploy(root, [n], env, pool=pool, echo=say)
            report["deployments"] += [f"{FLOW_OF.get(n, FLOW_NAME)}/{n}" for n in process_names]
        if docker_names:
            say(
                f"deploying {', '.join(docker_names)} (pool {docker_pool})"
                + (" without building the image" if no_build else ", building the image")
                + "…"
            )
            prefect_deploy(
                root,
                docker_names,
                env,
                pool=docker_pool if docker_pool != "specwave-docker" else None,
                echo=say,
            )
            report["deployments"] += [f"{FLOW_OF.get(n, FLOW_NAME)}/{n}" for n in docker_names]
        if DOCKER_DEPLOYMENT in docker_names:
            from deployments.render import render_docker_job, summary

            job = summary(asyncio.run(render_docker_job(f"{FLOW_NAME}/{DOCKER_DEPLOYMENT}")))
            report["docker_job"] = job
            say(
                f"  container: image {job['image']}, volumes {job['volumes']}, env "
                f"{sorted(job['env'])}"
            )
        if activate_schedule and SCHEDULED_DEPLOYMENT in process_names:
            switched = asyncio.run(activate_schedules(f"{FLOW_NAME}/{SCHEDULED_DEPLOYMENT}"))
            report["schedule_activated"] = True
            say(f"schedule of {SCHEDULED_DEPLOYMENT}: active ({switched} switched on)")
        report["details"] = asyncio.run(describe(report["deployments"]))
        for d in report["details"]:
            sched = "".join(
                f", schedule {s['cron']} ({'on' if s['active'] else 'off'})" for s in d["schedules"]
            )
            say(
                f"deployment {d['name']} (pool {d['pool']}{sched})"
                + (f": {d['url']}" if d["url"] else "")
            )
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        _err(f"specwave deploy: {exc}")
        raise typer.Exit(EXIT_INCOMPLETE) from None
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    print("\nnext:")
    if process_names:
        print(f"  prefect worker start --pool {pool}")
    if docker_names:
        print(f"  prefect worker start --pool {docker_pool}   # needs a Docker engine")
    print(f"  prefect deployment run {FLOW_NAME}/specwave --param spec_folder=/path/to/spec")


async def answer_pause(flow_run_id: str, proceed: bool, note: str) -> str:
    """Resume a flow run paused by ``approve_waves`` with the form's answer; returns the
    state name it was in. Raises ValueError when it is not waiting for an answer."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    try:
        run_id = UUID(flow_run_id)
    except ValueError:
        raise ValueError(
            f'"{flow_run_id}" is not a flow run id — copy it from the UI or '
            "`prefect flow-run ls --state PAUSED`"
        ) from None
    async with get_client() as client:
        fr = await client.read_flow_run(run_id)
        if not (fr.state and fr.state.is_paused()):
            state = fr.state.name if fr.state else "no state"
            raise ValueError(
                f"flow run {fr.name} ({run_id}) is not waiting for approval (state {state})"
            )
        result = await client.resume_flow_run(run_id, run_input={"continue": proceed, "note": note})
    if result.status.value != "ACCEPT":
        reason = getattr(result.details, "reason", "") or result.status.value
        raise ValueError(f"the server did not accept the answer: {reason}")
    return fr.state.name  # type: ignore[return-value]  # paused: it has a named state


@app.command()
def approve(
    flow_run_id: Annotated[
        str, typer.Argument(help="The paused flow run's id.", show_default=False)
    ],
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the run instead: the remaining tasks stay pending.")
    ] = False,
    note: Annotated[
        str, typer.Option("--note", help="A note kept in the run's log and summary.")
    ] = "",
) -> None:
    """Answer a run paused between waves (--approve-waves), as the UI's form does."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        asyncio.run(answer_pause(flow_run_id, not stop, note))
    except ValueError as exc:
        _err(f"specwave approve: {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    print(f"{flow_run_id}: {'stop' if stop else 'continue'}" + (f" ({note})" if note else ""))
