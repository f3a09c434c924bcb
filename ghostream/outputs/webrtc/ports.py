"""The one reach into aioice: binding its ICE sockets to the configured UDP range."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable


class PortRange:
    """Binds aiortc's ICE sockets to the configured UDP range instead of any port.

    aioice binds host candidates to port 0; the loop's datagram endpoint
    factory is wrapped so that those binds take the next free port of the
    range, and fail (leaving the session without candidates) when none is.
    """

    def __init__(self, low: int, high: int) -> None:
        self.ports = list(range(low, high + 1))
        self._next = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        create = loop.create_datagram_endpoint

        async def create_in_range(factory: Callable, local_addr=None, **kwargs):
            if local_addr is None or local_addr[1] != 0 or "sock" in kwargs:
                return await create(factory, local_addr=local_addr, **kwargs)
            return await create(factory, sock=self.bind(local_addr[0]), **kwargs)

        loop.create_datagram_endpoint = create_in_range  # type: ignore[method-assign]

    def bind(self, host: str) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(len(self.ports)):
            port = self.ports[self._next]
            self._next = (self._next + 1) % len(self.ports)
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            sock.setblocking(False)
            return sock
        raise OSError(errno.EADDRINUSE, "every port of webrtc.minPortUDP..maxPortUDP is in use")
