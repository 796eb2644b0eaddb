"""Run it as a service, end to end, on a real Prefect server.

One module-scoped server (``prefect server start`` at a free port, private PREFECT_HOME,
PREFECT_UI_API_URL set, analytics off); ``specwave deploy --docker --no-build --agent-slots 2``
creates both work pools, the shared agent limit and the three deployments of prefect.yaml
through ``prefect deploy``; a real process worker (``PREFECT_WORKER_QUERY_SECONDS=1``) runs a
deployment of an example spec with a command agent. Everything is asserted through the API,
and on disk. The docker deployment is checked offline (no Docker engine here): its rendered
job configuration. Every process started is stopped by pid at module teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.deployments.conftest import EXAMPLES, ROOT, fake_agent, read_trace
from tests.deployments.service import PrefectServer

pytestmark = pytest.mark.slow

SPEC = "small-feature"
#: The ``specwave`` console script, without relying on PATH.
SPECWAVE = [sys.executable, "-c", "from flows.cli import main; main()"]
SECRET_VALUE = "sk-ant-e2e-" + uuid.uuid4().hex  # must never appear in a job configuration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # The scheduler service looks for schedules to fill every 60 s by default; every 2 s here,
    # so a schedule switched on gets its runs within the test's patience.
    for attempt in range(3):  # the free port may be taken before the server binds it
        srv = PrefectServer(
            tmp_path_factory.mktemp("prefect-home"),
            extra_env={
                "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
                # pool dispatch: the workers' clones of the git remote, private to the module
                "SPECWAVE_CACHE_DIR": str(tmp_path_factory.mktemp("task-cache")),
            },
        )
        try:
            seconds = srv.wait_healthy()
            break
        except RuntimeError:
            exited = not srv.alive()  # e.g. "address already in use"; a hang is not retried
            srv.stop()
            if attempt == 2 or not exited:
                raise
    print(f"\nprefect server healthy after {seconds:.1f} s on {srv.url}")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A repository with the example spec where Agent OS puts it."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(EXAMPLES / SPEC, root / ".agent-os" / "specs" / SPEC)
    return root


@pytest.fixture(scope="module")
def deployed(server, repo) -> dict:
    """``specwave deploy --docker --no-build --agent-slots 2 --json`` (from the repository)."""
    started = time.monotonic()
    proc = server.cli(
        *SPECWAVE,
        "deploy",
        "--docker",
        "--no-build",
        "--agent-slots",
        "2",
        "--json",
        cwd=repo,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    print(f"specwave deploy took {time.monotonic() - started:.1f} s")
    return report


@pytest.fixture(scope="module")
def worker(server, deployed, tmp_path_factory):
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    w = server.worker("specwave-process", f"e2e-{uuid.uuid4().hex[:6]}", log)
    try:
        yield w
    finally:
        w.stop()
        assert not w.alive()


def client(server) -> PrefectClient:
    return PrefectClient(server.api_url)


@contextmanager
def on(server):
    """get_client() (and blocks) talk to this server instead of the session's harness."""
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


async def wait_final(server, flow_run_id, timeout: float = 150.0, worker=None):
    deadline = time.monotonic() + timeout
    async with client(server) as c:
        while time.monotonic() < deadline:
            fr = await c.read_flow_run(flow_run_id)
            if fr.state and fr.state.is_final():
                return fr
            if worker is not None and not worker.alive():
                raise AssertionError(f"the worker died:\n{worker.log()}")
            await asyncio.sleep(0.5)
    raise AssertionError(
        f"flow run {flow_run_id} not final after {timeout:.0f} s "
        f"(state {fr.state.type if fr.state else None}); worker log:\n"
        + (worker.log() if worker else "")
    )


# --------------------------------------------------------------------------- deploy


def test_deploy_created_pools_limit_and_deployments(deployed, repo):
    assert deployed["pools"] == {"specwave-process": "created", "specwave-docker": "created"}
    assert deployed["concurrency_limit"] == {
        "name": "specwave-agents",
        "slots": 2,
        "action": "created",
    }
    assert deployed["deployments"] == [
        "execute-spec/specwave",
        "execute-spec/specwave-nightly",
        "run-task/specwave-task",
        "execute-spec/specwave-docker",
        "run-task/specwave-task-docker",
    ]
    assert deployed["repo"] == str(repo.resolve())


async def test_process_deployment_from_prefect_yaml(server, deployed, repo):
    async with client(server) as c:
        dep = await c.read_deployment_by_name("execute-spec/specwave")
        pool = await c.read_work_pool("specwave-process")
    assert pool.type == "process"
    assert dep.work_pool_name == "specwave-process"
    assert dep.entrypoint == "flows/execute_spec.py:execute_spec"
    assert dep.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    ]
    assert dep.enforce_parameter_schema is True
    assert dep.parameters["repo"] == str(repo.resolve())
    assert dep.parameters["agent"] == {"kind": "claude"}  # the key: the worker's env
    props = dep.parameter_openapi_schema["properties"]
    assert {
        "spec_folder",
        "agent",
        "repo",
        "max_concurrency",
        "approve_waves",
        "concurrency_limit",
    } <= set(props)
    assert dep.parameter_openapi_schema["required"] == ["spec_folder"]


async def test_parameters_are_validated_against_the_flow_signature(server, deployed):
    async with client(server) as c:
        dep = await c.read_deployment_by_name("execute-spec/specwave")
        with pytest.raises(httpx.HTTPStatusError) as err:
            await c.create_flow_run_from_deployment(
                dep.id, parameters={"spec_folder": "x", "max_concurrency": "many"}
            )
    assert err.value.response.status_code == 409
    assert "max_concurrency" in err.value.response.text


# --------------------------------------------------------------------------- a real run


async def test_worker_runs_the_deployment_end_to_end(server, deployed, worker, repo, tmp_path):
    spec = repo / ".agent-os" / "specs" / SPEC
    trace = tmp_path / "trace.jsonl"
    # Task 2's first attempt crashes (exit 3): Prefect retries it, the run still completes.
    agent = fake_agent(trace, sleep=0.3, plan={"2": "crash-once"})
    started = time.monotonic()
    async with client(server) as c:
        dep = await c.read_deployment_by_name("execute-spec/specwave")
        fr = await c.create_flow_run_from_deployment(
            dep.id,
            parameters={
                "spec_folder": str(spec),
                "agent": agent,
                "concurrency_limit": "specwave-agents",
            },
        )
    fr = await wait_final(server, fr.id, worker=worker)
    print(
        f"deployment run: {time.monotonic() - started:.1f} s from creation to {fr.state.type.value}"
    )
    assert fr.state.is_completed(), f"{fr.state.type}: {fr.state.message}\n{worker.log()}"
    assert fr.name == SPEC
    assert fr.work_pool_name == "specwave-process"
    assert fr.parameters["repo"] == str(repo.resolve())  # the deployment's default

    async with client(server) as c:
        task_runs = await c.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr.id]))
        )
        artifacts = await c.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[fr.id]))
        )
        limit = await c.read_global_concurrency_limit_by_name("specwave-agents")

    # One task run per spec task (named "<id>: <description>"), plus load and plan.
    by_name = {t.name: t for t in task_runs}
    workers = {n.split(":")[0]: t for n, t in by_name.items() if n[:1].isdigit()}
    assert sorted(workers) == ["1", "2", "3"]
    others = sorted(n.rsplit("-", 1)[0] for n in by_name if not n[:1].isdigit())
    assert others == ["load-and-validate", "plan"]
    assert all(t.state.is_completed() for t in by_name.values())
    for tid, t in workers.items():
        assert t.state.is_completed(), (tid, t.state)
        assert set(t.tags) >= {SPEC, "command"}
    assert workers["1"].name.startswith("1: Create the PasswordResetToken model")
    assert workers["2"].run_count == 2 and workers["1"].run_count == 1
    assert "wave-2" in workers["3"].tags
    assert workers["3"].start_time >= max(workers["1"].end_time, workers["2"].end_time)

    # The UI artifacts: progress at 100 %, the task table, the summary.
    kinds = {}
    for a in artifacts:
        kinds.setdefault(a.key, []).append(a)
    assert set(kinds) == {f"{SPEC}-progress", f"{SPEC}-tasks", f"{SPEC}-summary"}
    (progress,) = kinds[f"{SPEC}-progress"]
    assert progress.type == "progress" and float(progress.data) == 100.0
    table = max(kinds[f"{SPEC}-tasks"], key=lambda a: a.created)
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    assert table.type == "table"
    assert {r["id"]: (r["status"], r["attempts"]) for r in rows} == {
        "1": ("pass", 1),
        "2": ("pass", 2),
        "3": ("pass", 1),
    }
    (summary,) = kinds[f"{SPEC}-summary"]
    assert summary.type == "markdown"
    assert "all 3 tasks passed" in summary.data

    # The plan file on disk, and the shared limit given back.
    doc = json.loads((spec / "tasks.json").read_text())
    parents = {t["id"]: t for t in doc["tasks"] if t.get("type") != "subtask"}
    assert {k: v["status"] for k, v in parents.items()} == {"1": "pass", "2": "pass", "3": "pass"}
    assert parents["2"]["attempts"] == 2
    assert limit.active_slots == 0
    assert sorted({r["task"] for r in read_trace(trace)}) == ["1", "2", "3"]


# --------------------------------------------------------------------------- pool dispatch


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _pooled(tmp_path: Path, name: str, deps: list[tuple[str, list[str]]]):
    """A bare git remote, the user's repository cloned from it (one commit pushed), and a
    spec folder ``name`` beside them whose tasks are ``deps``."""
    remote_repo = tmp_path / "remote.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote_repo))
    repo = tmp_path / "app"
    _git(tmp_path, "clone", "-q", str(remote_repo), str(repo))
    (repo / "README.md").write_text("app\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "init")
    _git(repo, "push", "-q", "origin", "main")
    spec = tmp_path / "spec"
    spec.mkdir()
    tasks = [
        {
            "id": tid,
            "type": "parent",
            "description": f"Task {tid} of {name}",
            "status": "pending",
            "attempts": 0,
            "parallelization": {"blocked_by": blocked, "shared_files": []},
        }
        for tid, blocked in deps
    ]
    (spec / "tasks.json").write_text(
        json.dumps({"version": "2.0", "spec": name, "tasks": tasks}, indent=2)
    )
    return remote_repo, repo, spec


async def test_pool_dispatch_runs_each_task_as_its_own_flow_run(server, deployed, worker, tmp_path):
    """dispatch="pool": every attempt is a flow run of run-task/specwave-task on the process
    pool, under the spec's flow run; the task runs share only the API and a git remote (a
    bare repository here: a process worker on this machine may use a path); the integration
    branch on the remote ends with every task's work, merged in dependency order."""
    from flows.execute_spec import execute_spec

    remote_repo, repo, spec = _pooled(tmp_path, "pooled", [("1", []), ("2", []), ("3", ["1"])])
    trace = tmp_path / "trace.jsonl"
    agent = fake_agent(
        trace,
        plan={
            "1": "write:one.txt",
            "2": "write:two.txt+crash-once",
            "3": "require:one.txt+write:three.txt",
        },
    )
    before = (_git(repo, "rev-parse", "HEAD"), _git(repo, "status", "--porcelain"))
    with on(server):
        state = await execute_spec(
            str(spec),
            agent=agent,
            repo=str(repo),
            isolation="worktree",
            dispatch="pool",
            retries=1,
            return_state=True,
        )
        result = await state.result(raise_on_failure=False)
    assert isinstance(result, dict) and result["status"] == "success", (result, worker.log())

    # the remote's integration branch holds every task's work; tasks.json is updated here
    files = _git(remote_repo, "ls-tree", "-r", "--name-only", "specwave/pooled").splitlines()
    assert {"README.md", "one.txt", "two.txt", "three.txt"} <= set(files)
    log = _git(remote_repo, "log", "--first-parent", "--format=%s", "specwave/pooled")
    assert log.splitlines()[-1] == "init" and len(log.splitlines()) == 4
    doc = json.loads((spec / "tasks.json").read_text())
    assert {t["id"]: t["status"] for t in doc["tasks"]} == {"1": "pass", "2": "pass", "3": "pass"}
    assert {t["id"]: t["attempts"] for t in doc["tasks"]}["2"] == 2  # crashed once, re-dispatched
    # the records name the machine each attempt ran on; the user's checkout is untouched
    import socket

    from tasks_lib.runfolder import RunFolder

    recs = RunFolder(spec, result["run_id"]).attempts("3")
    assert recs[-1].work is not None and recs[-1].work.host == socket.gethostname()
    assert (_git(repo, "rev-parse", "HEAD"), _git(repo, "status", "--porcelain")) == before
    # merged task branches are gone from the remote and from the user's repository
    assert _git(remote_repo, "branch", "--format=%(refname:short)").splitlines() == [
        "main",
        "specwave/pooled",
    ]
    assert "specwave/pooled--" not in _git(repo, "branch", "--format=%(refname:short)")

    # in the UI: one run-task flow run per attempt, each a subflow of the spec's flow run,
    # each with the agent's output in its own logs and its record as an artifact
    from prefect.client.schemas.filters import DeploymentFilterName, LogFilter, LogFilterFlowRunId

    async with client(server) as c:
        runs = await c.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["specwave-task"]))
        )
        parent = state.state_details.flow_run_id
        mine = [r for r in runs if r.parameters["attempt"]["worker"]["run_id"] == result["run_id"]]
        assert sorted(r.name for r in mine) == [
            "1 · attempt 1",
            "2 · attempt 1",
            "2 · attempt 2",
            "3 · attempt 1",
        ]
        for r in mine:
            assert r.parent_task_run_id is not None
            placeholder = await c.read_task_run(r.parent_task_run_id)
            assert placeholder.flow_run_id == parent
        one = next(r for r in mine if r.name == "1 · attempt 1")
        logs = await c.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[one.id]))
        )
        assert any("fake agent: task 1" in line.message for line in logs)


async def test_a_task_run_killed_mid_task_is_dispatched_again(server, deployed, worker, tmp_path):
    """kill -9 of a task run's flow-run process while its agent works: the worker reports
    the run crashed, the attempt counts as crashed, the task is dispatched again and passes;
    the killed run's agent does not outlive it (the task run's watchdog)."""
    import psutil

    from flows.execute_spec import execute_spec
    from tests.fixtures.fake import TAG_ENV
    from tests.fixtures.procs import live_processes, survivors

    _, repo, spec = _pooled(tmp_path, "killed", [("1", [])])
    tag = uuid.uuid4().hex
    agent = fake_agent(tmp_path / "trace.jsonl", plan={"1": "hang-once+write:one.txt"})
    agent["env"] = {TAG_ENV: tag}

    def agents() -> list[psutil.Process]:
        return live_processes(lambda p: p.environ().get(TAG_ENV) == tag)

    with on(server):
        run = asyncio.create_task(
            execute_spec(
                str(spec),
                agent=agent,
                repo=str(repo),
                isolation="worktree",
                dispatch="pool",
                retries=1,
                timeout_seconds=300,
                return_state=True,
            )
        )
        deadline = time.monotonic() + 120
        while not agents():
            assert time.monotonic() < deadline and not run.done(), worker.log()
            await asyncio.sleep(0.3)
        (hung,) = agents()
        flow_run_process = hung.parent()
        assert flow_run_process is not None
        flow_run_process.kill()
        killed_at = time.time()
        state = await asyncio.wait_for(run, 240)
        result = await state.result(raise_on_failure=False)
    assert isinstance(result, dict) and result["status"] == "success", (result, worker.log())
    from tasks_lib.runfolder import RunFolder

    first, second = RunFolder(spec, result["run_id"]).attempts("1")
    assert first.outcome.value == "crashed" and "crash" in first.reason, first.reason
    assert second.passed
    print(f"kill -9 -> attempt counted crashed after {first.ended - killed_at:.1f} s")
    assert survivors(agents, wait=10) == []


async def test_stopping_the_spec_run_cancels_its_task_runs_and_their_agents(
    server, deployed, worker, tmp_path
):
    """The spec's run stops (here its coroutine is cancelled, as on SIGINT): every task run it
    started is cancelled through the API, its worker stops it, its agent dies."""
    import psutil
    from prefect.client.schemas.filters import DeploymentFilterName

    from flows.execute_spec import execute_spec
    from tests.fixtures.fake import TAG_ENV
    from tests.fixtures.procs import live_processes, survivors

    _, repo, spec = _pooled(tmp_path, "stopped", [("1", []), ("2", [])])
    tag = uuid.uuid4().hex
    agent = fake_agent(tmp_path / "trace.jsonl", default="hang")
    agent["env"] = {TAG_ENV: tag}

    def agents() -> list[psutil.Process]:
        return live_processes(lambda p: p.environ().get(TAG_ENV) == tag)

    with on(server):
        run = asyncio.create_task(
            execute_spec(
                str(spec), agent=agent, repo=str(repo), isolation="worktree", dispatch="pool"
            )
        )
        deadline = time.monotonic() + 120
        while len(agents()) < 2:
            assert time.monotonic() < deadline and not run.done(), worker.log()
            await asyncio.sleep(0.3)
        run.cancel()
        with pytest.raises(BaseException):  # noqa: B017 - cancelled, or its Prefect wrapper
            await run
    assert survivors(agents, wait=30) == []
    async with client(server) as c:
        runs = await c.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["specwave-task"]))
        )
    mine = [
        r for r in runs if r.parameters["attempt"]["worker"]["workspace"]["spec_name"] == "stopped"
    ]
    assert len(mine) == 2
    assert all(r.state.type.value in ("CANCELLED", "CANCELLING", "CRASHED") for r in mine), [
        r.state.type for r in mine
    ]


# --------------------------------------------------------------------------- schedule


async def test_activating_the_schedule_creates_scheduled_runs(server, deployed):
    from flows.cli_deploy import activate_schedules

    async with client(server) as c:
        dep = await c.read_deployment_by_name("execute-spec/specwave-nightly")
        runs_of = DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
        assert [(s.schedule.cron, s.active) for s in dep.schedules] == [("0 2 * * *", False)]
        assert await c.read_flow_runs(deployment_filter=runs_of) == []
        with on(server):
            assert await activate_schedules("execute-spec/specwave-nightly") == 1
        deadline = time.monotonic() + 60
        runs = []
        while time.monotonic() < deadline and not runs:
            runs = await c.read_flow_runs(deployment_filter=runs_of)
            await asyncio.sleep(0.5)
        with on(server):  # and off again: nothing runs at 02:00 on the CI machine
            await activate_schedules("execute-spec/specwave-nightly", active=False)
    assert runs, "no scheduled run within 60 s of activating the schedule"
    assert all(r.state.is_scheduled() for r in runs)
    assert all(r.expected_start_time.hour == 2 and r.expected_start_time.minute == 0 for r in runs)


# --------------------------------------------------------------------------- docker, offline


async def test_docker_deployment_renders_offline_without_plain_secrets(server, deployed, repo):
    from prefect.blocks.system import Secret

    from deployments.render import render_docker_job, summary

    with on(server):
        await Secret(value=SECRET_VALUE).save("anthropic-api-key", overwrite=True)
    async with client(server) as c:
        pool = await c.read_work_pool("specwave-docker")
        dep = await c.read_deployment_by_name("execute-spec/specwave-docker")
        with on(server):  # like a worker of this server (its settings go into the env)
            cfg = await render_docker_job(
                "execute-spec/specwave-docker",
                client=c,
                parameters={**dep.parameters, "spec_folder": f"/repo/.agent-os/specs/{SPEC}"},
            )
    assert pool.type == "docker"
    assert dep.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/specwave"}}
    ]
    assert dep.parameters["repo"] == "/repo"
    assert dep.parameters["agent"]["env_secrets"] == {"ANTHROPIC_API_KEY": "anthropic-api-key"}

    job = summary(cfg)
    assert job["image"] == "specwave:latest"
    assert job["image_pull_policy"] == "IfNotPresent"
    assert job["volumes"] == [f"{repo.resolve()}:/repo"]
    env = job["env"]
    assert env["GIT_AUTHOR_NAME"] == "specwave"
    assert env["PREFECT_API_URL"] == server.api_url  # the container reports to this server
    assert env["PREFECT__FLOW_RUN_ID"]
    assert "ANTHROPIC_API_KEY" not in env
    assert cfg.command is None or "flow-run" in cfg.command  # the worker's default command
    # The secret is nowhere in plain text: not in the job, not in the deployment.
    rendered = json.dumps(cfg.model_dump(mode="json"), default=str)
    assert SECRET_VALUE not in rendered
    assert SECRET_VALUE not in json.dumps(dep.model_dump(mode="json"), default=str)
    assert deployed["docker_job"]["image"] == "specwave:latest"


def test_deploy_without_an_api_url_says_what_to_do(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.run(
        [*SPECWAVE, "deploy"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "PREFECT_API_URL is not set" in proc.stderr
    assert "prefect server start" in proc.stderr
