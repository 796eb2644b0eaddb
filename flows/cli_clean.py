"""``specwave clean``: remove what a spec's ``--isolation worktree`` runs left in a repository.

A run removes each merged task's worktree and branch as it merges it, and its integration
worktree when it ends; a failed task's worktree and branch stay for the user to look at, and a
run that was killed leaves everything. ``clean`` removes the spec's task worktrees and branches
(``specwave/<spec>--*``) whose work is in the integration branch, the integration worktree,
stale worktree entries (``git worktree prune``) and the worktrees folder once it is empty. A
task branch holding commits the integration branch lacks, or a worktree holding uncommitted
files, is kept and named (exit 1) unless ``--force``. The integration branch itself (the
result), the user's checkout and every branch outside ``specwave/<spec>--*`` are never touched.

Exit codes: 0 nothing holding work is left; 1 something holding work was kept (or could not be
removed); 2 invalid input (one line, no traceback).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from flows.cli import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    FormatOpt,
    SpecPath,
    TagOpt,
    _err,
    _fail,
    app,
)
from tasks_lib.errors import SpecError

if TYPE_CHECKING:
    from tasks_lib.workspaces.worktree import CleanStep, Leftover, Leftovers


@app.command()
def clean(
    spec_dir: Path = SpecPath,
    repo: Path | None = typer.Option(
        None, "--repo", help="The repository the spec ran in (default: current directory)."
    ),
    into: str | None = typer.Option(
        None,
        "--into",
        metavar="BRANCH",
        help="The integration branch the runs used (default specwave/<spec>).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Also remove task branches and worktrees holding unmerged work."
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print what would be removed and kept; change nothing (same exit code).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print what was done as JSON."),
    format: str | None = FormatOpt,
    tag: str | None = TagOpt,
) -> None:
    """Remove the worktrees and branches a spec's worktree runs left (unmerged ones: --force)."""
    from tasks_lib.workspaces import git
    from tasks_lib.workspaces.worktree import clean_plan, finish_clean, remove_leftover

    try:
        name, found = _find(spec_dir, repo, into, format, tag, dry_run)
    except SpecError as exc:
        _fail(exc)
    steps = clean_plan(found, force=force)
    items: list[dict[str, Any]] = []
    failed = 0
    for step in steps:
        action = ("would_remove" if step.remove else "would_keep") if dry_run else "kept"
        reason = step.reason
        if step.remove and not dry_run:
            try:
                remove_leftover(found, step.leftover)
                action = "removed"
            except (git.GitError, OSError) as exc:
                action, reason, failed = "failed", str(exc), failed + 1
        items.append({**_item_json(step.leftover), "action": action, "reason": reason})
    removed_dirs: list[str] = []
    if not dry_run:
        try:
            removed_dirs = finish_clean(found)
        except git.GitError as exc:
            _err(f"specwave clean: {exc}")
            failed += 1
    # what --force would remove (a branch checked out elsewhere is never removed: not counted)
    kept = [
        s for s in steps if not s.remove and s.leftover.holds_work and not s.leftover.checked_out_at
    ]
    code = EXIT_INCOMPLETE if kept or failed else EXIT_OK
    if as_json:
        doc = {
            "spec": name,
            "repo": str(found.root),
            "worktrees_dir": str(found.worktrees_dir),
            "integration_branch": found.integration_branch,
            "integration_exists": found.integration_exists,
            "compared_with": found.compared_with,
            "dry_run": dry_run,
            "force": force,
            "items": items,
            "removed_dirs": removed_dirs,
            "kept_with_work": len(kept),
            "failed": failed,
            "exit_code": code,
        }
        print(json.dumps(doc, indent=2))
    else:
        _print_lines(name, found, steps, items, removed_dirs, dry_run)
    if kept:
        _err(_refusal(kept))
    if failed:
        _err(f"{failed} item(s) could not be removed")
    raise typer.Exit(code)


def _find(
    spec_dir: Path,
    repo: Path | None,
    into: str | None,
    format: str | None,
    tag: str | None,
    dry_run: bool,
) -> tuple[str, Leftovers]:
    """The spec's name and leftovers; SpecError (one line, exit 2) on bad input."""
    from tasks_lib.formats import load_spec
    from tasks_lib.store import RunLock
    from tasks_lib.workspaces import git
    from tasks_lib.workspaces.worktree import leftovers

    spec = load_spec(spec_dir, format=format, tag=tag)
    where = repo or Path.cwd()
    if not where.is_dir():
        raise SpecError.single(
            str(where), "repository folder not found", hint="pass an existing folder with --repo"
        )
    try:
        git.require_git()
        root = git.repo_root(where)
        if root is None:
            raise SpecError.single(
                str(where), "is not a git repository", hint="pass the spec's repository with --repo"
            )
        if into is not None and not git.is_valid_branch_name(into):
            raise SpecError.single(
                into, "is not a branch name git accepts", hint="pass the run's --into branch"
            )
        if not dry_run:
            RunLock(spec.folder).check()  # a run of this spec is using its worktrees now
        return spec.name, leftovers(str(root), spec.name, into)
    except git.GitError as exc:
        raise SpecError.single(str(where), str(exc)) from None


def _item_json(item: Leftover) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "branch": item.branch,
        "path": item.path,
        "head": item.head,
        "unmerged_commits": item.unmerged,
        "uncommitted_files": item.uncommitted,
        "stale": item.stale,
        "checked_out_at": item.checked_out_at,
    }


def _describe(item: Leftover) -> str:
    if item.kind == "integration":
        return f"integration worktree {item.path}"
    if item.kind == "directory":
        return f"folder {item.path}"
    if item.kind == "marker":
        return f"marker {item.path}"
    if item.branch and item.path:
        return f"{item.branch} (worktree {item.path})"
    return item.branch or f"worktree {item.path}"


_VERBS = {
    "removed": "removed",
    "kept": "kept",
    "failed": "FAILED",
    "would_remove": "would remove",
    "would_keep": "would keep",
}


def _print_lines(
    name: str,
    found: Leftovers,
    steps: list[CleanStep],
    items: list[dict[str, Any]],
    removed_dirs: list[str],
    dry_run: bool,
) -> None:
    """One line per item removed or kept."""
    if not steps:
        print(f"nothing to clean: spec {name} left no worktrees or branches in {found.root}")
    for step, item in zip(steps, items):
        verb = _VERBS[item["action"]]
        if step.leftover.stale and item["action"] == "removed":
            verb = "pruned"
        print(f"{verb}: {_describe(step.leftover)}: {item['reason']}")
    for folder in removed_dirs:
        print(f"removed: empty folder {folder}")
    if found.integration_exists:
        branch = found.integration_branch
        print(f"kept: {branch}: the integration branch, your result (`git merge {branch}`)")
    if dry_run:
        print("dry run: nothing was changed")


def _refusal(kept: list[CleanStep]) -> str:
    """Why the exit code is 1, in one line."""
    tasks = sum(1 for s in kept if s.leftover.kind == "task")
    parts = []
    if tasks:
        parts.append(f"{tasks} task branch(es) hold unmerged work")
    folders = sum(1 for s in kept if s.leftover.kind == "directory")
    if folders:
        parts.append(f"{folders} folder(s) unknown to git may hold work")
    if any(s.leftover.kind == "marker" for s in kept):
        parts.append("a merge was never verified")
    return "; ".join(parts) + "; rerun with --force to remove them"
