"""Run an ASGI app with Hypercorn's Trio worker on one listen address.

Whatever a client sends is bounded before the app sees it: the request
line and headers (bytes and count), and how long a connection may stay
silent.  Hypercorn's read timeout counts while an answer is being sent too,
so no route may take longer than READ_TIMEOUT to answer a silent client
(LL-HLS holds a playlist request for a few seconds at most).

With a certificate (`tls.Certificate`) it speaks HTTPS, HTTP/2 included,
and may also take plain HTTP on another address only to redirect it.
"""

from __future__ import annotations

import logging
import socket
from ssl import SSLContext

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Framework, Scope

from ghostream.config import ListenAddress
from ghostream.exceptiongroups import sole_error
from ghostream.http.tls import Certificate, redirect_plain_http

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
# Seconds a client may stay silent on a connection, and between two requests.
READ_TIMEOUT = 60
KEEP_ALIVE_TIMEOUT = 30


class _Config(Config):
    """Hypercorn's settings, with our TLS context: built once, reloaded in place."""

    ssl_context: SSLContext | None = None

    def create_ssl_context(self) -> SSLContext | None:
        return self.ssl_context


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


def shared_bind(address: ListenAddress) -> str:
    """`fd://N` of a TCP socket bound with SO_REUSEPORT, for the workers of one server."""
    host, _, port = hypercorn_bind(address).rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        for level, option in (
            (socket.SOL_SOCKET, socket.SO_REUSEADDR),
            (socket.SOL_SOCKET, socket.SO_REUSEPORT),
            (socket.IPPROTO_TCP, socket.TCP_NODELAY),
        ):
            sock.setsockopt(level, option, 1)
        sock.bind((host, int(port)))
    except OSError:
        sock.close()
        raise
    return f"fd://{sock.detach()}"


def limit_headers(app: Framework) -> Framework:
    """The app, answering 431 to a request with more than MAX_HEADERS headers."""

    async def limited(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "http" and len(scope["headers"]) > MAX_HEADERS:
            await send(
                {
                    "type": "http.response.start",
                    "status": 431,
                    "headers": [(b"content-type", b"text/plain"), (b"connection", b"close")],
                }
            )
            await send({"type": "http.response.body", "body": b"too many headers\n"})
            return
        await app(scope, receive, send)  # type: ignore[call-arg]

    return limited  # type: ignore[return-value]


async def serve_asgi(
    app: Framework,
    address: ListenAddress,
    *,
    certificate: Certificate | None = None,
    redirect: ListenAddress | None = None,
    workers: int = 1,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; binding errors surface before `task_status.started`.

    With a `certificate`, over HTTPS (and plain HTTP at `redirect`, redirected).
    `workers` > 1: the ports are shared with the other worker processes of this server.
    """
    bind = hypercorn_bind if workers == 1 else shared_bind
    config = _Config()
    config.bind = [bind(address)]
    app = limit_headers(app)
    if certificate is not None:
        config.certfile, config.keyfile = str(certificate.certfile), str(certificate.keyfile)
        config.ssl_context = certificate.context
        if redirect is not None:
            config.insecure_bind = [bind(redirect)]
            app = redirect_plain_http(app, address.port)
    config.accesslog = None
    config.errorlog = logging.getLogger("ghostream.http")
    config.graceful_timeout = 1.0
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.h2_max_header_list_size = MAX_HEADER_BYTES
    config.read_timeout = READ_TIMEOUT
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    try:
        async with trio.open_nursery() as nursery:
            if certificate is not None:
                nursery.start_soon(certificate.watch)
            await serve(app, config, task_status=task_status)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Hypercorn nests a bind error in its nurseries: the server reports it plainly.
        raise sole_error(group) from None
