"""Real git in tmp repositories, isolated from the machine's git configuration."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

IDENTITY = ["-c", "user.name=Test Person", "-c", "user.email=test@example.com"]


@pytest.fixture(scope="module", autouse=True)
def isolated_git_config(tmp_path_factory):
    """No system or global git config (the user's hooksPath, signing, identity...): an empty
    global file of the tests' own, for every git these tests start."""
    home = tmp_path_factory.mktemp("git-home")
    config = home / "gitconfig"
    config.write_text("[init]\n\tdefaultBranch = main\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GIT_CONFIG_GLOBAL", str(config))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        for name in (
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_AUTHOR_NAME",
            "GIT_AUTHOR_EMAIL",
            "GIT_COMMITTER_NAME",
            "GIT_COMMITTER_EMAIL",
            "EMAIL",
        ):
            mp.delenv(name, raising=False)
        yield config


def sh(cwd: Path, *args: str, check: bool = True) -> str:
    """Plain git, as a user would run it (with an identity for the commits it makes)."""
    result = subprocess.run(
        ["git", *IDENTITY, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {result.stderr}")
    return result.stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A repository at ``path`` on branch main with one commit holding ``files``."""
    path.mkdir(parents=True, exist_ok=True)
    sh(path, "init", "-q", "-b", "main")
    for name, text in (files or {"README.md": "hello\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    sh(path, "add", "-A")
    sh(path, "commit", "-q", "-m", "init")
    return path


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    """These tests drive git only: no Prefect API to start (overrides tests/conftest.py)."""
    yield
