"""prefect.yaml's build step and the deploy helpers, without a server or a Docker engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployments.steps import build_image
from flows.cli_deploy import deploy_env, project_dir
from tests.deployments.conftest import ROOT


def test_build_image_skipped_names_the_image(monkeypatch):
    monkeypatch.setenv("SPECWAVE_SKIP_BUILD", "1")
    assert build_image() == {
        "image_name": "specwave",
        "tag": "latest",
        "image": "specwave:latest",
        "image_id": None,
        "additional_tags": [],
    }
    # Unset prefect.yaml placeholders arrive empty: defaults apply.
    assert build_image(image_name="", tag="", skip="")["image"] == "specwave:latest"
    monkeypatch.delenv("SPECWAVE_SKIP_BUILD")
    assert (
        build_image("reg.example/team/specwave", "1.2", skip=True)["image"]
        == "reg.example/team/specwave:1.2"
    )


def test_build_without_a_docker_engine_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("SPECWAVE_SKIP_BUILD", raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    monkeypatch.chdir(ROOT)
    with pytest.raises(RuntimeError) as err:
        build_image()
    assert "is a Docker engine running?" in str(err.value)
    assert "SPECWAVE_SKIP_BUILD=1" in str(err.value)


def test_deploy_env_sets_the_placeholders(tmp_path):
    env = deploy_env(tmp_path, tmp_path / "spec", skip_build=True, image="reg:5000/sw:7")
    assert env["SPECWAVE_REPO"] == str(tmp_path)
    assert env["SPECWAVE_SPEC"] == str(tmp_path / "spec")
    assert env["SPECWAVE_SKIP_BUILD"] == "1"
    assert (env["SPECWAVE_IMAGE_NAME"], env["SPECWAVE_IMAGE_TAG"]) == ("reg:5000/sw", "7")
    env = deploy_env(tmp_path, None, skip_build=False, image="reg:5000/sw")
    assert env["SPECWAVE_IMAGE_NAME"] == "reg:5000/sw" and "SPECWAVE_IMAGE_TAG" not in env


def test_project_dir_is_this_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert project_dir(None) == ROOT
    assert project_dir(ROOT) == ROOT


def test_prefect_yaml_declares_the_three_deployments():
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in doc["deployments"]}
    assert set(deps) == {"specwave", "specwave-nightly", "specwave-docker"}
    for d in deps.values():
        assert d["entrypoint"] == "flows/execute_spec.py:execute_spec"
        assert d["enforce_parameter_schema"] is True
        assert "ANTHROPIC_API_KEY" not in str(d["parameters"]["agent"].get("env", {}))
    assert deps["specwave"]["work_pool"]["name"] == "specwave-process"
    assert [s["active"] for s in deps["specwave-nightly"]["schedules"]] == [False]
    docker = deps["specwave-docker"]
    assert docker["work_pool"]["name"] == "specwave-docker"
    assert docker["work_pool"]["job_variables"]["image"] == "{{ build-image.image }}"
    assert docker["work_pool"]["job_variables"]["volumes"] == ["{{ $SPECWAVE_REPO }}:/repo"]
    assert list(docker["build"][0]) == ["deployments.steps.build_image"]
    # The Dockerfile the build step uses exists and installs specwave and the Claude Code CLI.
    dockerfile = ROOT / docker["build"][0]["deployments.steps.build_image"]["dockerfile"]
    text = dockerfile.read_text()
    assert 'pip install -e ".[docker]"' in text and "/usr/local/bin/claude" in text
    assert Path(ROOT / "deployments" / "Dockerfile") == dockerfile
