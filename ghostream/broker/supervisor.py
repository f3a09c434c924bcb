"""The error boundary of every per-stream task: one stream's bad data never stops the server.

Trio cancels a whole nursery when one child raises: right for the server's
own wiring, wrong for a task that works on what a publisher sends.  Every
per-stream, per-output and per-session task (demux, LL-HLS packager, Opus
feed, transcoder, forward targets, SRT publishers and viewers, WebRTC
sessions and WHIP publishes, telnet clients) runs through `Supervisor.run`,
which turns a failure into one log line, a `StreamFault` event (history and
the `ghostream_stream_faults_total` metric) and then either a restart with
backoff or a clean stop of that component, for that stream only.

A `MalformedStream` is the publisher's doing and a `PeerFailed` a remote
peer's (a forward target that refuses or stalls): one line, no traceback
unless the server runs with `-v`.  Any other exception is a bug met on
stream data: it is logged with its traceback but still contained.
`UnsupportedStream` (audio only for LL-HLS, say) is no fault at all: the
component just stops.  Nor is what a client causes (a bad offer, a viewer
gone): the caller names those exceptions (`passes`) and gets them back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio

from ghostream.backoff import Backoff
from ghostream.history.events import Event, StreamFault
from ghostream.media.errors import MalformedStream, UnsupportedStream

log = logging.getLogger(__name__)

FIRST_RETRY = 1.0
MAX_RETRY = 30.0
# A run that lasted this long was healthy: the next failure restarts quickly again.
HEALTHY_AFTER = 30.0


class PeerFailed(Exception):
    """The peer a component talks to failed it (refused, dropped, stalled): a fault, not a bug."""


def stream_problem(exc: BaseException) -> BaseException:
    """The exception to judge: the only one inside an exception group, else itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class Supervisor:
    def __init__(self, emit: Callable[[Event], None]) -> None:
        self.emit = emit

    async def run(
        self,
        stream_id: str,
        component: str,
        run: Callable[[], Awaitable[object]],
        *,
        again: Callable[[], bool] | None = None,
        passes: tuple[type[Exception], ...] = (),
    ) -> None:
        """Run a per-stream task; after a failure, restart it with backoff while `again()`.

        An exception of `passes` is no failure of the component but the
        caller's to answer (a client's mistake): it is raised as it is.
        """
        backoff = Backoff(FIRST_RETRY, MAX_RETRY, HEALTHY_AFTER)
        while True:
            began = trio.current_time()
            try:
                await run()
                return
            except Exception as failure:
                exc = stream_problem(failure)
                if isinstance(exc, passes):
                    raise exc from None
                if isinstance(exc, UnsupportedStream):
                    log.info("%s: %s stopped: %s", stream_id, component, exc)
                    return
                delay = backoff.failed(trio.current_time() - began)
                restart = again is not None and again()
                action = f"restarting in {delay:.0f} s" if restart else "stopped"
                self.report(stream_id, component, exc, action)
            if again is None or not restart or not await _wait_while(again, delay):
                return

    def report(self, stream_id: str, component: str, exc: BaseException, action: str) -> None:
        """Log, count and record one fault of a component on a stream."""
        # A session outside any stream (a telnet prompt) has no stream to name.
        where = f"{stream_id}: {component}" if stream_id else component
        if isinstance(exc, MalformedStream | PeerFailed):
            reason = f"malformed stream: {exc}" if isinstance(exc, MalformedStream) else str(exc)
            log.warning(
                "%s %s: %s", where, action, reason,
                exc_info=exc if log.isEnabledFor(logging.DEBUG) else None,
            )  # fmt: skip
        else:
            reason = f"internal error: {type(exc).__name__}: {exc}"
            log.error("%s %s after an %s", where, action, reason, exc_info=exc)
        self.emit(StreamFault(stream_id, component, time.time(), reason, action))


async def _wait_while(again: Callable[[], bool], delay: float) -> bool:
    """Wait `delay` seconds, or less once `again()` says no more (stream gone); whether to go on."""
    deadline = trio.current_time() + delay
    while trio.current_time() < deadline:
        await trio.sleep(min(1.0, deadline - trio.current_time()))
        if not again():
            return False
    return True
