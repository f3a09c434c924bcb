"""An edge's pulls: a stream a viewer asks for is fetched from the origin over SRT.

`EdgePuller` is the first of the broker's providers: asked for a stream that
is not live here, it starts one `Pull` for it (our own SRT caller, with the
stream id of `pull_stream_id`) and answers once the first bytes are
published here under the same id, or once the attempt failed, in which case
the viewer gets the answer of an offline stream.  Every other viewer of the
id reads that one local copy.  A pull retries with backoff while someone
asks for or watches its stream (a viewer asking cuts the wait short, at most
once a second), and lets go `origin.idleTimeout` after the last one left
(`PacketHub.watched`, the rule on-demand variants follow).

The origin's stream is mirrored gaps included: when the origin sends nothing
for `STALL` seconds (its publisher left) or the connection drops, the local
publication ends and the broker's reconnect grace keeps the viewers; the
next bytes publish again.  An origin closes an edge's pull when a new
publisher takes over (see `srt/service.py`), so the edge publishes anew and
its readers resync exactly as the origin's do.
"""

from __future__ import annotations

import logging

import trio

from ghostream import monitoring
from ghostream.backoff import Backoff
from ghostream.broker.feeds import Feeds
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import Broker
from ghostream.broker.tasks import TaskOwner
from ghostream.config import OriginSettings, srt_address
from ghostream.edge.access import pull_stream_id
from ghostream.srt.endpoint import SrtClosed, SrtRejected, SrtSocket, connect
from ghostream.streamid import STREAM_ID

log = logging.getLogger(__name__)

PROTOCOL = "pull"
# How long a viewer's request waits for the first bytes from the origin.
START_TIMEOUT = 2.5
# A live stream sends several packets a second: this much silence means its publisher left.
STALL = 1.5
CHECK_PERIOD = 1.0
FIRST_RETRY = 0.25
MAX_RETRY = 4.0
# A viewer asking cuts a backoff short, but the origin is asked at most this often per stream.
ASKED_RETRY = 1.0


class Pull:
    """One stream pulled from the origin for as long as it is wanted here."""

    def __init__(self, stream_id: str, puller: EdgePuller) -> None:
        self.stream_id = stream_id
        self.puller = puller
        # The last attempt failed: the next failures of this outage are logged quietly.
        self.failed = False
        self.stopping = False
        self._backoff = Backoff(FIRST_RETRY, MAX_RETRY)
        self._brought = False
        self._outcomes = 0
        self._last_wanted = trio.current_time()
        self._changed = trio.lowlevel.ParkingLot()
        self._hurry = trio.Event()

    def ask(self) -> int:
        """Someone wants the stream: retry soon if in backoff; the outcomes so far."""
        self._last_wanted = trio.current_time()
        self._hurry.set()
        return self._outcomes

    def wanted(self) -> bool:
        now = trio.current_time()
        if self.puller.hub.watched(self.stream_id):
            self._last_wanted = now
        return now - self._last_wanted < self.puller.settings.idle_timeout

    async def settled(self, outcomes: int) -> None:
        """Wait until the stream is here, or an attempt after the first `outcomes` failed."""
        broker = self.puller.broker
        while broker.get(self.stream_id) is None and self._outcomes <= outcomes:
            if self.stopping:
                return
            await self._changed.park()

    async def run(self) -> None:
        try:
            while self.wanted():
                self._brought = False
                problem = await self._attempt()
                if problem is None:
                    continue
                if self._brought:
                    # The origin's publisher changed, or its stream ended: ask again.
                    log.info("%s: the origin ended the pull (%s)", self.stream_id, problem)
                    await trio.sleep(FIRST_RETRY)
                    continue
                # One line per outage, not one per retry.
                (log.debug if self.failed else log.warning)(
                    "%s: cannot pull from the origin: %s; retrying while it is asked for",
                    self.stream_id,
                    problem,
                )
                self._note(failed=True)
                if self.wanted():
                    await self._back_off()
        finally:
            self.stopping = True
            self._changed.unpark_all()
            self.puller.broker.end(self.stream_id)
            log.info("%s: pull from the origin stopped", self.stream_id)

    async def _back_off(self) -> None:
        failed_at = trio.current_time()
        delay = self._backoff.failed()
        self._hurry = trio.Event()
        with trio.move_on_after(delay):
            await self._hurry.wait()
        await trio.sleep_until(failed_at + min(delay, ASKED_RETRY))

    async def _attempt(self) -> str | None:
        """One connection to the origin: None if it brought the stream, else what went wrong."""
        puller = self.puller
        host, port = puller.address
        try:
            async with connect(
                host,
                port,
                streamid=pull_stream_id(self.stream_id, puller.settings.key),
                passphrase=puller.settings.passphrase,
                latency=puller.latency,
            ) as sock:
                while self.wanted():
                    chunk = await _receive(sock)
                    if chunk is not None:
                        await self._publish(sock, chunk)
                return None if self._brought else "the origin sent nothing"
        except SrtRejected as exc:
            return str(exc)
        except SrtClosed as exc:
            return f"connection closed ({exc.reason})"
        except OSError as exc:
            return exc.strerror or str(exc)

    async def _publish(self, sock: SrtSocket, chunk: bytes) -> None:
        """Publish what the origin sends until it stalls or nobody wants it."""
        bytes_in = monitoring.BYTES_IN.labels(self.stream_id)
        origin = self.puller.settings.url
        with self.puller.broker.publish(self.stream_id, origin, PROTOCOL) as stream:
            log.info("%s: pulling from the origin %s", self.stream_id, origin)
            self._note(failed=False)
            self._backoff.reset()
            self._brought = True
            checked = trio.current_time()
            while chunk is not None:
                stream.publish(chunk)
                bytes_in.inc(len(chunk))
                if trio.current_time() - checked >= CHECK_PERIOD:
                    checked = trio.current_time()
                    if not self.wanted():
                        return
                chunk = await _receive(sock)
            log.info("%s: the origin's stream paused; its viewers wait", self.stream_id)

    def _note(self, *, failed: bool) -> None:
        self.failed = failed
        self._outcomes += 1
        self._changed.unpark_all()


async def _receive(sock: SrtSocket) -> bytes | None:
    """The next message, or None after `STALL` seconds of silence."""
    with trio.move_on_after(STALL):
        return await sock.receive()
    return None


class EdgePuller(TaskOwner):
    """The `edge` service: a broker provider that owns one pull task per wanted stream."""

    def __init__(
        self, settings: OriginSettings, latency: float, broker: Broker, hub: PacketHub
    ) -> None:
        self.settings = settings
        self.address = srt_address(settings.url)
        self.latency = latency
        self.broker = broker
        self.hub = hub
        self.pulls = Feeds[Pull](
            broker.supervisor, "edge", Pull.run, ended=lambda pull: pull.stopping
        )
        # Before the transcoder: an edge's variants are pulled, made on the origin.
        broker.providers.insert(0, self.provide)

    async def provide(self, stream_id: str) -> bool:
        """Whether the stream is here after asking the origin; False as for an offline stream."""
        if not STREAM_ID.fullmatch(stream_id) or self._nursery is None:
            return False
        pull = self.pulls.open(self._nursery, stream_id, lambda: Pull(stream_id, self))
        outcomes = pull.ask()
        with trio.move_on_after(START_TIMEOUT):
            await pull.settled(outcomes)
        return self.broker.get(stream_id) is not None
