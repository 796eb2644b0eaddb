"""Deployment steps for prefect.yaml.

``build_image`` builds the specwave worker image (``deployments/Dockerfile``) with prefect-docker,
or — with ``skip`` / ``SPECWAVE_SKIP_BUILD=1`` — builds nothing and only names an image that
already exists (built by CI, pulled from a registry, or no Docker engine on this machine: the
deployment is still created and its job configuration can be checked offline).
"""

from __future__ import annotations

import os
from typing import Any

DEFAULT_IMAGE_NAME = "specwave"
DEFAULT_TAG = "latest"
DEFAULT_DOCKERFILE = "deployments/Dockerfile"
_TRUE = {"1", "true", "yes", "on"}


def build_image(
    image_name: str | None = None,
    tag: str | None = None,
    dockerfile: str | None = None,
    skip: bool | str | None = None,
    **build_kwargs: Any,
) -> dict[str, Any]:
    """Build (or, skipped, just name) the specwave worker image.

    Empty values fall back to the defaults, so prefect.yaml can pass environment placeholders
    that may be unset (Prefect renders an unset ``{{ $VAR }}`` as empty).

    Args:
        image_name: repository of the image (default ``specwave``).
        tag: tag (default ``latest``).
        dockerfile: path from the build context, the project root (default
            ``deployments/Dockerfile``).
        skip: build nothing, return the names only; also on when the environment has
            ``SPECWAVE_SKIP_BUILD=1``.
        **build_kwargs: passed on to ``prefect_docker.deployments.steps.build_docker_image``
            (e.g. ``platform: linux/amd64``, ``pull: true``).

    Returns:
        The same keys as prefect-docker's step: ``image_name``, ``tag``, ``image``
        (``name:tag``), ``image_id`` (None when skipped), ``additional_tags``.

    Example:
        ```yaml
        build:
          - deployments.steps.build_image:
              id: build-image
              image_name: "{{ $SPECWAVE_IMAGE_NAME }}"  # default: specwave
              tag: "{{ $SPECWAVE_IMAGE_TAG }}"          # default: latest
              dockerfile: deployments/Dockerfile
              skip: "{{ $SPECWAVE_SKIP_BUILD }}"        # 1: use an existing image
        # then, in the deployment's job variables:
        #   image: "{{ build-image.image }}"
        ```
    """
    image_name = image_name or os.environ.get("SPECWAVE_IMAGE_NAME") or DEFAULT_IMAGE_NAME
    tag = tag or os.environ.get("SPECWAVE_IMAGE_TAG") or DEFAULT_TAG
    dockerfile = dockerfile or DEFAULT_DOCKERFILE
    if _truthy(skip) or _truthy(os.environ.get("SPECWAVE_SKIP_BUILD")):
        print(f" > SPECWAVE_SKIP_BUILD: not building; the deployment uses {image_name}:{tag}")
        return {
            "image_name": image_name,
            "tag": tag,
            "image": f"{image_name}:{tag}",
            "image_id": None,
            "additional_tags": [],
        }
    try:
        from prefect_docker.deployments.steps import build_docker_image
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "building the image needs prefect-docker: pip install "
            "'prefect-specwave[docker]' (or set SPECWAVE_SKIP_BUILD=1 to use an "
            "existing image)"
        ) from exc
    try:
        result = build_docker_image(
            image_name=image_name, tag=tag, dockerfile=dockerfile, **build_kwargs
        )
    except Exception as exc:
        msg = str(exc).lower()
        if (
            "not running" in msg
            or "connection" in msg
            or "docker_host" in msg
            or type(exc).__module__.startswith("docker")
        ):
            raise RuntimeError(
                f"could not build {image_name}:{tag} from {dockerfile}: {exc} — "
                "is a Docker engine running? (or set SPECWAVE_SKIP_BUILD=1 to "
                "use an existing image)"
            ) from exc
        raise
    return dict(result)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in _TRUE
