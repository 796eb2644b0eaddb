"""Work pools and the shared agent limit that the deployments in prefect.yaml need.

Both helpers are idempotent: they create what is missing and leave what exists alone (a limit's
slots are updated when asked), so ``specwave deploy`` can run any number of times.
"""

from __future__ import annotations

from typing import Any

PROCESS_POOL = "specwave-process"
DOCKER_POOL = "specwave-docker"
DEFAULT_LIMIT_NAME = "specwave-agents"


def base_job_template(pool_type: str) -> dict[str, Any]:
    """The default base job template of a worker type, from the installed worker class (no
    network: the server's worker registry is not needed)."""
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    if pool_type == "docker":
        try:
            from prefect_docker.worker import DockerWorker
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "the docker pool needs prefect-docker: pip install 'prefect-specwave[docker]'"
            ) from exc
        return DockerWorker.get_default_base_job_template()
    raise ValueError(f'unknown pool type "{pool_type}" — use "process" or "docker"')


async def ensure_work_pool(name: str, pool_type: str, client: Any = None) -> tuple[Any, bool]:
    """Create the work pool ``name`` of ``pool_type`` unless it exists.

    Returns:
        ``(work_pool, created)``. An existing pool of another type is an error (its workers
        could not run these deployments).

    Example:
        ``await ensure_work_pool("specwave-process", "process")`` — the same as
        ``prefect work-pool create specwave-process --type process``.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    if client is None:
        async with get_client() as c:
            return await ensure_work_pool(name, pool_type, c)
    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        pool = await client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type=pool_type,
                base_job_template=base_job_template(pool_type),
                description=f"specwave: {pool_type} workers for execute-spec runs",
            )
        )
        return pool, True
    if pool.type != pool_type:
        raise ValueError(
            f'work pool "{name}" exists with type "{pool.type}", not '
            f'"{pool_type}" — pick another name (--pool) or delete it: '
            f"prefect work-pool delete {name}"
        )
    return pool, False


async def ensure_concurrency_limit(
    name: str = DEFAULT_LIMIT_NAME, slots: int | None = None, client: Any = None
) -> tuple[Any, str]:
    """The global concurrency limit every agent launch occupies (flow parameter
    ``concurrency_limit``): create it with ``slots`` if missing, set its slots if they differ.

    Returns:
        ``(limit, action)`` with action ``created``, ``updated`` or ``unchanged``.

    Example:
        ``await ensure_concurrency_limit("specwave-agents", 4)`` — like
        ``prefect gcl create specwave-agents --limit 4``.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    if client is None:
        async with get_client() as c:
            return await ensure_concurrency_limit(name, slots, c)
    try:
        limit = await client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        if slots is None:
            raise ValueError(
                f'global concurrency limit "{name}" does not exist — give its size: --agent-slots N'
            ) from None
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True)
        )
        return await client.read_global_concurrency_limit_by_name(name), "created"
    if slots is not None and (limit.limit != slots or not limit.active):
        await client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(limit=slots, active=True)
        )
        return await client.read_global_concurrency_limit_by_name(name), "updated"
    return limit, "unchanged"
