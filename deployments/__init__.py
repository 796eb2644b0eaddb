"""Deployment helpers for specwave: work pools and the shared agent limit (``pools``), the
prefect.yaml build step (``steps``), the rendered docker job configuration (``render``).

prefect.yaml (project root) declares the deployments; ``specwave deploy`` creates what they
need and runs ``prefect deploy``. See docs/service.md.
"""

from deployments.pools import (
    DEFAULT_LIMIT_NAME,
    DOCKER_POOL,
    PROCESS_POOL,
    ensure_concurrency_limit,
    ensure_work_pool,
)

__all__ = [
    "DEFAULT_LIMIT_NAME",
    "DOCKER_POOL",
    "PROCESS_POOL",
    "ensure_concurrency_limit",
    "ensure_work_pool",
]
