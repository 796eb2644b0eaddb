"""Peak resident memory of an agent's process tree, sampled while it runs.

Used by the claude and codex agents for ``info["peak_rss_mb"]``: the sum of the RSS of the
leader and every descendant, four samples a second (pages shared between processes count
once per process, so this is an upper bound; PSS would be lower).
"""

from __future__ import annotations

import asyncio
import contextlib

import psutil

__all__ = ["RSS_INTERVAL_S", "RssSampler"]

RSS_INTERVAL_S = 0.25


class RssSampler:
    """Peak resident memory of a process tree (sum over the tree, 4 samples a second).

    Example:
        >>> sampler = RssSampler()          # doctest: +SKIP
        >>> sampler.start(pid)              # in the event loop, right after the spawn
        >>> ...; sampler.stop(); sampler.peak
    """

    def __init__(self) -> None:
        self.peak = 0
        self.task: asyncio.Task | None = None

    def start(self, pid: int) -> None:
        self.task = asyncio.ensure_future(self._run(pid))

    async def _run(self, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            leader = psutil.Process(pid)
            while True:
                self.sample(leader)
                await asyncio.sleep(RSS_INTERVAL_S)

    def sample(self, leader: psutil.Process) -> None:
        total = 0
        with contextlib.suppress(psutil.Error):
            for p in [leader, *leader.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        self.peak = max(self.peak, total)

    def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def peak_mb(self) -> float | None:
        """The peak in MiB (one decimal), None when nothing was sampled."""
        return round(self.peak / 2**20, 1) if self.peak else None
