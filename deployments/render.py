"""What a docker worker would start for a deployment, rendered without a Docker engine.

``render_docker_job`` merges the work pool's base job template with the deployment's job
variables (and per-run overrides) exactly as prefect-docker's worker does
(``DockerWorkerJobConfiguration.resolve_for_flow_run``) for an in-memory flow run: nothing is
created on the server, no container is started. ``specwave deploy --docker`` prints its
summary; the tests assert on it (image, the repository volume, env, no secret in plain text).
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4


async def render_docker_job(
    deployment_name: str,
    *,
    parameters: dict[str, Any] | None = None,
    job_variables: dict[str, Any] | None = None,
    client: Any = None,
) -> Any:
    """The ``DockerWorkerJobConfiguration`` a docker worker would build for a run of
    ``deployment_name`` (``"execute-spec/specwave-docker"``).

    Args:
        deployment_name: ``flow-name/deployment-name``.
        parameters: run parameters (default: the deployment's).
        job_variables: per-run job variable overrides (like ``prefect deployment run
            --job-variable``).

    Example:
        ```python
        cfg = await render_docker_job("execute-spec/specwave-docker")
        cfg.image, cfg.volumes, cfg.env
        ```
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect_docker.worker import DockerWorkerJobConfiguration

    if client is None:
        async with get_client() as c:
            return await render_docker_job(
                deployment_name, parameters=parameters, job_variables=job_variables, client=c
            )
    deployment = await client.read_deployment_by_name(deployment_name)
    if not deployment.work_pool_name:
        raise ValueError(f'deployment "{deployment_name}" has no work pool')
    pool = await client.read_work_pool(deployment.work_pool_name)
    if pool.type != "docker":
        raise ValueError(
            f'deployment "{deployment_name}" uses the {pool.type} pool '
            f'"{pool.name}", not a docker pool'
        )
    flow_run = FlowRun(
        id=uuid4(),
        name="specwave-render",
        flow_id=deployment.flow_id,
        deployment_id=deployment.id,
        parameters=parameters if parameters is not None else dict(deployment.parameters),
        job_variables=dict(job_variables or {}),
        work_pool_name=pool.name,
    )
    return await DockerWorkerJobConfiguration.resolve_for_flow_run(
        flow_run,
        client=client,
        work_pool=pool,
        worker_name="specwave-render",
        deployment=deployment,
    )


def summary(cfg: Any) -> dict[str, Any]:
    """The parts of a rendered docker job a reviewer checks (stable keys)."""
    return {
        "image": cfg.image,
        "image_pull_policy": cfg.image_pull_policy,
        "volumes": list(cfg.volumes or []),
        "env": dict(cfg.env or {}),
        "command": cfg.command,
        "network_mode": cfg.network_mode,
        "name": cfg.name,
    }
