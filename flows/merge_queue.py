"""The merge queue (``--isolation worktree``): a passed task's branch goes into the
integration branch, one merge at a time, in the order tasks pass.

A task starts only after its dependencies are merged (the run loop reports a pass to the
scheduler only once its merge is done), so merging in pass order is merging in dependency
order. Each merge is proved by the user's verify command when one is set; a failure undoes
it. The outcome goes back to the loop as a :class:`~tasks_lib.records.MergeInfo` on the
attempt's record: ``merged`` / ``up_to_date`` (the dependents may start), ``conflict`` or
``verify_failed`` (the loop gives the task a new attempt from the new integration head, or
fails it).
"""

from __future__ import annotations

import asyncio

from prefect import get_run_logger

from tasks_lib.records import AttemptRecord, MergeInfo
from tasks_lib.workspaces import WorkspaceSpec, git
from tasks_lib.workspaces.integration import Integration, run_verify


class MergeQueue:
    """One run's merges into its integration branch."""

    def __init__(self, workspace: WorkspaceSpec, env: dict[str, str] | None = None):
        self.integration = Integration(workspace)
        self.verify = workspace.verify
        self.env = env or {}  # the run's marker: the verify run is reaped like an agent
        self._lock = asyncio.Lock()
        self.log: list[dict] = []  # every merge, in order: task, status, commit, files
        self.git_url = workspace.git_url  # pool dispatch: the remote shared with task runs
        self.remote_branches: list[str] = []  # merged task branches to delete there
        self.logger = get_run_logger()

    async def open(self) -> str:
        head = await asyncio.to_thread(self.integration.prepare)
        self.logger.info(f"integration branch {self.integration.branch} at {head[:12]}")
        await self._publish()
        return head

    async def _publish(self) -> None:
        """Pool dispatch: the integration branch goes to the remote the task runs start
        from (before the first task, after every verified merge)."""
        if self.git_url:
            from tasks_lib.workspaces import remote

            await asyncio.to_thread(
                remote.publish, self.integration.repo, self.integration.branch, self.git_url
            )

    async def merge(self, tid: str, title: str, record: AttemptRecord) -> MergeInfo:
        """Merge the attempt's branch (then verify); when merged, its worktree is parked for the
        next task and its branch deleted."""
        work = record.work
        assert work is not None, "a worktree attempt without its work info"
        async with self._lock:
            info, before = await asyncio.to_thread(self.integration.merge, tid, work.branch, title)
            if info.status == "merged" and self.verify:
                await asyncio.to_thread(self.integration.begin_verify, before)
                await asyncio.to_thread(self.integration.sync)
                try:
                    passed, tail = await run_verify(
                        self.verify, str(self.integration.path), env=self.env
                    )
                except BaseException:  # stopped mid-verify: an unproved merge does not stay
                    self.integration.undo(before)
                    raise
                if passed:
                    await asyncio.to_thread(self.integration.end_verify)
                else:
                    await asyncio.to_thread(self.integration.undo, before)
                    info = MergeInfo(
                        status="verify_failed",
                        commit=before,
                        verify_tail=tail,
                        seconds=info.seconds,
                    )
            if info.status == "merged":
                await self._publish()
        if info.ok and work.host:  # a pool worker's: its worktree is there, its branch here
            self.remote_branches.append(work.branch)
            await asyncio.to_thread(self.integration.forget_task, work.branch)
        elif info.ok:  # out of the queue's lock: the next merge need not wait for it
            await asyncio.to_thread(self.integration.remove_task, work.worktree, work.branch)
        self.log.append(
            {"task": tid, "status": info.status, "commit": info.commit, "files": info.files}
        )
        level = self.logger.info if info.ok else self.logger.warning
        level(f"merge {tid}: {info.status}" + ("" if info.ok else f" — {info.reason()}"))
        return info

    def previous_diff(self, record: AttemptRecord, max_bytes: int = 12_000) -> str:
        work = record.work
        if work is None:
            return ""
        try:
            return git.diff_text(self.integration.repo, work.base, work.commit, max_bytes)
        except git.GitError:
            return ""

    async def close(self) -> str | None:
        """The run is over: the integration worktree goes (the branch stays); its head."""
        try:
            head = await asyncio.to_thread(self.integration.head)
            await asyncio.to_thread(self.integration.close)
            if self.git_url and self.remote_branches and not self.integration.spec.keep_branches:
                from tasks_lib.workspaces import remote

                await asyncio.to_thread(
                    remote.delete_remote_branches,
                    self.integration.repo,
                    self.git_url,
                    self.remote_branches,
                )
            return head
        except git.GitError as exc:
            self.logger.error(f"could not close the integration worktree: {exc}")
            return None


def retry_prompt(prompt: str, tid: str, info: MergeInfo, diff: str) -> str:
    """The task's prompt for an attempt after its merge failed: what went wrong, and the diff
    of the attempt that could not be merged."""
    what = (
        f"it conflicted with work merged meanwhile in: {', '.join(info.files)}"
        if info.status == "conflict"
        else f"the verify command failed after merging it:\n\n```\n{info.verify_tail[-3000:]}\n```"
    )
    parts = [
        prompt.rstrip(),
        "",
        f"## Your previous attempt at task {tid} was not merged",
        "",
        f"It passed, but {what}",
        "",
        "You now start again from the integration branch's latest head (it holds the "
        "work merged since). Redo the task on top of it.",
    ]
    if diff:
        parts += [
            "",
            "Your previous attempt's diff, for reference:",
            "",
            "```diff",
            diff.rstrip(),
            "```",
        ]
    return "\n".join(parts) + "\n"


__all__ = ["MergeQueue", "retry_prompt"]
