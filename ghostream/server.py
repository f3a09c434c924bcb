"""The root of the running server: one Trio nursery, one child per enabled service.

The nursery tree mirrors the server: this nursery holds the services (SRT
listener, web server, metrics endpoint, history writer, broker), each service
holds its connections.  A service is an async function that binds what it
needs, calls `task_status.started()` and then serves until cancelled, so a
port already in use is reported before "Ghostream ready" and stops the server
with status 1.  A signal cancels the root nursery; everything unwinds from
there.  Which services run, and what each is handed, is the wiring's
(`ghostream.context`).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator

import trio

from ghostream.config import Settings
from ghostream.context import ServerContext

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1


async def serve(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM; the exit status says how it ended."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            context = ServerContext.create(settings)
        except OSError as exc:
            log.error("cannot open the history database: %s", exc)
            return EXIT_FAILURE
        if settings.auth.uses_demo_credentials:
            log.warning(
                "auth.basic.credentials is not set: anyone can publish with the demo "
                "stream key demo:demo; set credentials (ghostream hash-password) to stop this"
            )
        try:
            return await _run_services(context, signals)
        finally:
            context.close()


async def _run_services(context: ServerContext, signals: AsyncIterator[int]) -> int:
    services = context.services
    async with trio.open_nursery() as nursery:
        for service in services:
            try:
                await nursery.start(service.run)
            except OSError as exc:
                log.error(
                    "cannot listen on %s for %s: %s",
                    service.address,
                    service.name,
                    exc.strerror or exc,
                )
                nursery.cancel_scope.cancel()
                return EXIT_FAILURE
            context.listening.append(service.name)
        context.ready = True
        listening = ", ".join(f"{s.name} {s.address}" for s in services if s.address)
        log.info("Ghostream ready: %s", listening)
        async for signum in signals:
            log.info("%s received, shutting down", signal.Signals(signum).name)
            nursery.cancel_scope.cancel()
            break
    return EXIT_OK
