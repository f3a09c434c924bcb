"""Services whose work is a changing set of tasks (one per stream, per target, per session)."""

from __future__ import annotations

import trio


class TaskOwner:
    """Runs as a service: owns the nursery its on-demand tasks are started in.

    Tasks started from elsewhere (an HTTP request, a broker event) still
    belong to the service in the nursery tree, and end with it.
    """

    _nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()
