"""The shared checkout: every agent of a run works in the one repository directory."""

from __future__ import annotations

from tasks_lib.records import AttemptRecord
from tasks_lib.workspaces import WorkspaceSpec


class SharedCheckout:
    """Every attempt works in ``spec.path``; nothing is prepared and nothing is taken back
    (what the agents change stays in the checkout, uncommitted, as they left it)."""

    kind = "shared"

    def __init__(self, spec: WorkspaceSpec):
        self.path = spec.path

    async def enter(self, task_id: str, attempt: int, title: str = "") -> str:
        return self.path

    async def leave(self, task_id: str, attempt: int, record: AttemptRecord) -> AttemptRecord:
        return record
