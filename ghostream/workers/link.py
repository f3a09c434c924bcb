"""A worker's side of its parent: say when it is ready, stop when the parent is gone.

The parent holds the write end of the worker's stdin: whether the parent
stops or is killed, the worker reads the end of its stdin and shuts down as
on SIGTERM, so no worker outlives its parent.  Readiness goes to the
parent's unix datagram socket in the runtime directory.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import trio

from ghostream.config import WorkerRole

log = logging.getLogger(__name__)

PARENT_SOCKET = "parent.sock"


def parent_address(runtime: Path) -> str:
    return str(runtime / PARENT_SOCKET)


def report_ready(role: WorkerRole) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(f"ready {role.index} {os.getpid()}".encode(), parent_address(role.runtime))
        except OSError as exc:
            log.warning(
                "cannot tell the parent process that worker %d is ready: %s", role.index, exc
            )


async def until_parent_gone() -> None:
    """Return when stdin, held open by the parent, ends."""
    stream = trio.lowlevel.FdStream(os.dup(0))
    async with stream:
        while await stream.receive_some(1024):
            pass
