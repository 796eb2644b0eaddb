"""Branch names: safe parts kept as they are, everything else sanitized, never two ids on one
branch, and git accepts every name (checked with git itself)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks_lib.workspaces import git, names
from tasks_lib.workspaces.names import (
    integration_branch,
    integration_dirname,
    sanitize,
    short_hash,
    task_branch,
    worktree_dirname,
)
from tests.workspaces.conftest import sh

# what a sanitized part may look like: one ref component with no surprises
PART = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?")
MAX_BRANCH = len("specwave/") + names.MAX_SPEC_CHARS + 2 + names.MAX_TASK_CHARS

ids = st.text(max_size=80)
tricky = st.text(alphabet="aA1._-/ ~^:?*[\\@{}\x00\x7f\téß-.lock", max_size=30)


def test_safe_names_are_kept_as_they_are():
    assert integration_branch("2025-01-15-user-auth") == "specwave/2025-01-15-user-auth"
    assert task_branch("2025-01-15-user-auth", "1.1") == "specwave/2025-01-15-user-auth--1.1"
    assert task_branch("s", "3") == "specwave/s--3"
    assert worktree_dirname("s", "3") == "s--3"
    for part in ("a", "1.2.3", "fix-login", "v2.0-rc1"):
        assert sanitize(part) == part


@pytest.mark.parametrize(
    "raw, stem",
    [
        ("T001", "t001"),
        ("Task A", "task-a"),
        ("setup_db", "setup-db"),
        ("../etc", "etc"),
        ("-x", "x"),
        (".hidden", "hidden"),
        ("x.lock", "x.lock"),
        ("a..b", "a.b"),
        ("feat/login", "feat-login"),
        ("ü", "id"),
        ("", "id"),
        ("a~b^c:d?e*f[g\\h", "a-b-c-d-e-f-g-h"),
        ("tab\there\x01", "tab-here"),
    ],
)
def test_unsafe_names_get_a_clean_stem_and_the_hash_of_the_original(raw, stem):
    assert sanitize(raw) == f"{stem}_{short_hash(raw)}"


def test_long_names_are_cut_with_a_hash():
    long_id = "x" * 200
    part = sanitize(long_id)
    assert len(part) == names.MAX_TASK_CHARS and part.endswith("_" + short_hash(long_id))
    assert sanitize("x" * 199) != part
    assert len(task_branch("s" * 300, "t" * 300)) <= MAX_BRANCH
    with pytest.raises(ValueError):
        sanitize("x", max_chars=5)


def test_ids_that_differ_only_in_what_sanitizing_changes_stay_apart():
    group = ["A", "a", "a_", "a-", "a--", "a.", "a b", "a/b", "a-b", "a_b", "a--b", "A-B"]
    assert len({task_branch("s", t) for t in group}) == len(group)
    # the separator splits back: spec and task parts never contain "--"
    assert task_branch("a--b", "c") != task_branch("a", "b--c")
    assert integration_dirname("s") not in {worktree_dirname("s", t) for t in group}


@settings(max_examples=400, deadline=None)
@given(ids, ids)
def test_sanitized_parts_are_plain_bounded_and_distinct(a, b):
    for raw in (a, b):
        part = sanitize(raw)
        assert PART.fullmatch(part) or re.fullmatch(r"[a-z0-9][a-z0-9.-]*_[0-9a-f]{10}", part)
        assert ".." not in part and "--" not in part and not part.endswith(".lock")
        assert len(part) <= names.MAX_TASK_CHARS
        branch = task_branch(raw, raw)
        assert branch.count("--") == 1 and len(branch) <= MAX_BRANCH
    if a != b:
        assert sanitize(a) != sanitize(b)
        assert task_branch("s", a) != task_branch("s", b)


@settings(max_examples=25, deadline=None)
@given(st.one_of(ids, tricky), st.one_of(ids, tricky))
def test_git_accepts_every_branch_name(spec, task_id):
    for branch in (integration_branch(spec), task_branch(spec, task_id)):
        assert git.is_valid_branch_name(branch), branch


def test_integration_and_task_branches_coexist_in_one_repository(repo):
    spec = "2025-01-15 User Auth"
    created = [integration_branch(spec)] + [
        task_branch(spec, t) for t in ("1", "1.1", "T2", "a/b", "a-b")
    ]
    for branch in created:
        git.create_branch(repo, branch, "HEAD")
    listed = set(
        sh(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/specwave").splitlines()
    )
    assert listed == set(created)
