"""Services whose work is a changing set of tasks (one per stream, per target, per session)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from ghostream.broker.supervisor import Supervisor

K = TypeVar("K")
T = TypeVar("T")


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


def start_registered(
    nursery: trio.Nursery,
    registry: dict[K, T],
    key: K,
    item: T,
    run: Callable[[], Awaitable[object]],
    *,
    supervisor: Supervisor,
    component: str,
    again: Callable[[], bool] | None = None,
) -> None:
    """Run `run()` in `nursery` with `item` registered under `key` for as long as it runs.

    Lookups in `registry` find only running items, so a caller that finds
    none starts a new one; a newer item under the same key is left alone.
    The key names a stream: `run` is that stream's `component`, under the
    supervisor's error boundary (restarted while `again()` says so).
    """
    registry[key] = item

    async def registered() -> None:
        try:
            await supervisor.run(str(key), component, run, again=again)
        finally:
            if registry.get(key) is item:
                del registry[key]

    nursery.start_soon(registered, name=f"{type(item).__name__} {key}")
