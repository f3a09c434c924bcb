"""Run an ASGI app with Hypercorn's Trio worker on one listen address."""

from __future__ import annotations

import logging
import socket

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import Framework

from ghostream.config import ListenAddress
from ghostream.errors import sole_error


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::", 0))
        return True
    except OSError:
        return False


def hypercorn_bind(address: ListenAddress) -> str:
    """An empty host listens on every interface, IPv6 included where the system has it."""
    if not address.host:
        return f"[::]:{address.port}" if _ipv6_available() else f"0.0.0.0:{address.port}"
    return str(address)


async def serve_asgi(
    app: Framework,
    address: ListenAddress,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; binding errors surface before `task_status.started`."""
    config = Config()
    config.bind = [hypercorn_bind(address)]
    config.accesslog = None
    config.errorlog = logging.getLogger("ghostream.http")
    config.graceful_timeout = 1.0
    try:
        await serve(app, config, task_status=task_status)
    except BaseExceptionGroup as group:
        # Hypercorn nests a bind error in its nurseries: the server reports it plainly.
        raise sole_error(group) from None
