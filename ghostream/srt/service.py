"""The SRT service: publishers push MPEG-TS into the broker, viewers pull it back out.

Everything is decided at handshake time, so that a refused peer hears why
(ffmpeg prints the reject reason) instead of timing out: the stream id says
publish or watch; publishing needs the auth backend's approval and a free
stream; watching needs a live stream (or, with an empty id, the default one).
The passphrase is chosen from the stream id too: `srt.passphrases` names
streams (and their variants) or users with their own, others use
`srt.passphrase`.

The service is also the source of the SRT metrics: it knows each open
connection's role and keeps the totals of those that closed.  The wiring
(`ghostream.context`) hands it what it uses: its settings, the broker, the
gatekeeper, the audience, and how to tell an edge's pull key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial

import trio
from prometheus_client import Counter

from ghostream import monitoring
from ghostream.audience import Audience
from ghostream.auth import Gatekeeper
from ghostream.auth.throttle import host_key
from ghostream.broker.registry import Broker, StreamBusy, StreamNotFound
from ghostream.broker.stream import StreamEnded, StreamState, Subscription
from ghostream.config import SrtSettings, WorkerRole
from ghostream.srt.connection import PEER_CLOSED, Stats
from ghostream.srt.endpoint import Handler, Reject, SrtClosed, SrtListener, SrtSocket, peer_text
from ghostream.srt.handshake import ConnectionRequest
from ghostream.srt.packet import RejectReason
from ghostream.srt.steering import Steering
from ghostream.streamid import InvalidStreamId, Mode, StreamRequest, parse_stream_id

log = logging.getLogger(__name__)

PROTOCOL = "srt"
COMPONENT = "srt"
# Seven TS packets: the payload every SRT live sender uses, and what players expect.
MESSAGE_SIZE = 7 * 188


class SrtService:
    def __init__(
        self,
        settings: SrtSettings,
        broker: Broker,
        gatekeeper: Gatekeeper,
        audience: Audience,
        *,
        is_edge_key: Callable[[str], bool],
        edge: bool = False,
        worker: WorkerRole | None = None,
    ) -> None:
        """`is_edge_key` tells an edge's pull key; on an `edge`, streams are published upstream.

        A `worker` shares the SRT port with the other workers of this server.
        """
        self.settings = settings
        self.broker = broker
        self.gatekeeper = gatekeeper
        self.audience = audience
        self.is_edge_key = is_edge_key
        self.edge = edge
        self.listener = SrtListener(
            settings.listen_address.host,
            settings.listen_address.port,
            self.accept,
            latency=settings.latency / 1000,
            passphrase=settings.passphrase,
            max_clients=settings.max_clients,
            max_per_host=settings.max_clients_per_host,
            on_overload=self._overloaded,
            passphrase_for=self._passphrase_for,
            on_rejected=self._handshake_refused,
            guess_delay=self._guess_delay,
            steering=Steering(worker) if worker is not None else None,
        )
        self._passphrases = {name.lower(): phrase for name, phrase in settings.passphrases.items()}
        self._open: dict[SrtSocket, str] = {}
        self._closed = {role: monitoring.SrtFigures() for role in monitoring.SRT_ROLES}
        self._closed_invalid = 0
        monitoring.SRT.source = self

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.listener.serve(task_status=task_status)

    def srt_figures(self) -> dict[str, monitoring.SrtFigures]:
        figures = {
            role: monitoring.SrtFigures(0, closed.retransmitted, closed.lost, closed.dropped, 0.0)
            for role, closed in self._closed.items()
        }
        for sock, role in self._open.items():
            _add(figures[role], sock.connection.stats)
            figures[role].connections += 1
            figures[role].rtt_total += sock.connection.rtt
        return figures

    def srt_invalid_datagrams(self) -> int:
        stats = self.listener.stats
        open_invalid = sum(_invalid(sock.connection.stats) for sock in self._open)
        return (
            stats.datagrams_invalid
            + stats.datagrams_unroutable
            + self._closed_invalid
            + open_invalid
        )

    @contextmanager
    def _counted(self, sock: SrtSocket, role: str) -> Iterator[None]:
        self._open[sock] = role
        try:
            yield
        finally:
            del self._open[sock]
            _add(self._closed[role], sock.connection.stats)
            self._closed_invalid += _invalid(sock.connection.stats)

    def _passphrase_for(self, raw_stream_id: str) -> str:
        default = self.settings.passphrase
        if not self._passphrases:
            return default
        try:
            wanted = parse_stream_id(raw_stream_id)
        except InvalidStreamId:
            return default
        for name in (wanted.user.lower(), wanted.stream_id, wanted.stream_id.partition("@")[0]):
            if name and name in self._passphrases:
                return self._passphrases[name]
        return default

    def _guess_keys(self, request: ConnectionRequest) -> tuple[str, str]:
        # Apart from the password counts: a passphrase known to every viewer
        # must not wipe a host's record of wrong publish passwords.
        host = host_key(peer_text(request.peer))
        return f"passphrase-{host}", f"passphrase-stream:{_requested_id(request.stream_id)}"

    def _guess_delay(self, request: ConnectionRequest) -> float:
        """A wrong passphrase counts as a failed guess, like a wrong password."""
        delay = self.gatekeeper.throttle.failed(*self._guess_keys(request))
        if delay:
            log.info(
                "SRT %s from %s: another wrong passphrase, refused in %.1f s",
                _requested_id(request.stream_id) or "(no stream id)",
                peer_text(request.peer),
                delay,
            )
        return delay

    def _overloaded(self, request: ConnectionRequest, why: str) -> None:
        self._refuse(request, _requested_id(request.stream_id), RejectReason.OVERLOAD, why)

    def _refuse(
        self, request: ConnectionRequest, stream_id: str, code: RejectReason, reason: str
    ) -> Reject:
        self._record_refusal(request.peer, stream_id, code, reason)
        return Reject(code, reason)

    def _handshake_refused(self, peer: tuple, raw_stream_id: str, code: int, reason: str) -> None:
        """A refusal by the handshake itself (passphrase, version, file mode)."""
        self._record_refusal(peer, _requested_id(raw_stream_id), code, reason)

    def _record_refusal(self, peer: tuple, stream_id: str, code: int, reason: str) -> None:
        text = peer_text(peer)
        log.warning("SRT %s from %s refused: %s", stream_id or "(no stream id)", text, reason)
        self.broker.reject(stream_id, text, PROTOCOL, reason, code=int(code))

    async def accept(self, request: ConnectionRequest) -> Handler | Reject:
        if request.cipher is not None:
            # The right passphrase: this host's earlier mistakes no longer slow it down.
            self.gatekeeper.throttle.succeeded(self._guess_keys(request)[0])
        try:
            wanted = parse_stream_id(request.stream_id)
        except InvalidStreamId as exc:
            # The raw id may hold a password: log only what the parser says.
            return self._refuse(request, "", RejectReason.BAD_REQUEST, f"invalid stream id: {exc}")
        if wanted.mode is Mode.PUBLISH:
            return await self._accept_publisher(request, wanted)
        return await self._accept_viewer(request, wanted)

    async def _accept_publisher(
        self, request: ConnectionRequest, wanted: StreamRequest
    ) -> Handler | Reject:
        stream_id = wanted.stream_id
        peer = peer_text(request.peer)
        if self.edge:
            # An edge serves its origin's streams; a local one would shadow the origin's.
            reason = "this server is an edge: publish to its origin"
            return self._refuse(request, stream_id, RejectReason.FORBIDDEN, reason)
        result = await self.gatekeeper.admit(stream_id, wanted.password, peer, protocol="srt")
        if not result.ok:
            return self._refuse(request, stream_id, RejectReason.FORBIDDEN, result.reason)
        stream = self.broker.get(stream_id)
        if stream is not None and stream.state is StreamState.LIVE:
            return self._refuse(
                request, stream_id, RejectReason.CONFLICT, "the stream already has a publisher"
            )

        async def publish(sock: SrtSocket) -> None:
            with self._counted(sock, "publish"):
                run = partial(self._publish, sock, stream_id, peer)
                await self.broker.supervisor.run(stream_id, COMPONENT, run)

        return publish

    async def _accept_viewer(
        self, request: ConnectionRequest, wanted: StreamRequest
    ) -> Handler | Reject:
        stream_id = wanted.stream_id
        settings = self.settings
        # An edge pulling the stream: counted through its own viewers' report, not as one.
        edge_pull = self.is_edge_key(wanted.password)
        if settings.pull_only and not edge_pull:
            return self._refuse(
                request,
                stream_id,
                RejectReason.FORBIDDEN,
                "only edges may watch over SRT here (srt.pullOnly): no valid pull key",
            )
        if wanted.is_default:
            stream_id = self.broker.default_stream(settings.default_stream) or ""
            if not stream_id:
                return self._refuse(
                    request,
                    "",
                    RejectReason.NOTFOUND,
                    "no stream id and no default stream (set srt.defaultStream)",
                )
        peer = peer_text(request.peer)
        if not edge_pull:
            allowed = await self.gatekeeper.admit_reader(
                stream_id, wanted.password, peer, protocol="srt"
            )
            if not allowed.ok:
                return self._refuse(request, stream_id, RejectReason.FORBIDDEN, allowed.reason)
        if not await self.broker.provide(stream_id):
            return self._refuse(request, stream_id, RejectReason.NOTFOUND, "no such live stream")
        audience = self.audience

        async def watch(sock: SrtSocket) -> None:
            with (
                self._counted(sock, "watch"),
                audience.edge_pull(stream_id) if edge_pull else nullcontext(),
            ):
                run = partial(self._watch, sock, stream_id, peer, edge_pull)
                await self.broker.supervisor.run(stream_id, COMPONENT, run)

        return watch

    async def _publish(self, sock: SrtSocket, stream_id: str, peer: str) -> None:
        bytes_in = monitoring.BYTES_IN.labels(stream_id)
        try:
            with self.broker.publish(stream_id, peer, PROTOCOL) as stream:
                log.info("%s publishing %s over SRT", peer, stream_id)
                try:
                    while True:
                        chunk = await sock.receive()
                        stream.publish(chunk)
                        bytes_in.inc(len(chunk))
                except SrtClosed:
                    pass
        except StreamBusy:
            # Lost a race with another publisher between handshake and start.
            log.warning("SRT publish of %s from %s refused: already published", stream_id, peer)
        finally:
            log.info("%s stopped publishing %s: %s", peer, stream_id, sock.closed_reason or "")

    async def _watch(self, sock: SrtSocket, stream_id: str, peer: str, edge_pull: bool) -> None:
        bytes_out = monitoring.BYTES_OUT.labels(stream_id, PROTOCOL)
        reason = "viewer left"
        try:
            with self.broker.watch(stream_id, peer, PROTOCOL) as subscription:
                kind = " (an edge pulling it)" if edge_pull else ""
                log.info("%s watching %s over SRT%s", peer, stream_id, kind)
                ended = await _serve_viewer(sock, subscription, bytes_out, edge_pull=edge_pull)
                if ended is not None:
                    reason = ended.reason
                    raise ended
                if sock.closed_reason not in (None, PEER_CLOSED):
                    reason = sock.closed_reason
        except StreamNotFound:
            reason = "the stream ended before playback began"
        except StreamEnded:
            pass
        finally:
            log.info("%s stopped watching %s: %s", peer, stream_id, reason)


def _add(figures: monitoring.SrtFigures, stats: Stats) -> None:
    figures.retransmitted += stats.packets_retransmitted + stats.packets_retransmit_received
    figures.lost += stats.packets_lost
    figures.dropped += stats.packets_dropped


def _invalid(stats: Stats) -> int:
    return stats.packets_invalid + stats.packets_undecryptable


def _requested_id(raw: str) -> str:
    """The stream id a refused peer asked for, for the log (never its password)."""
    try:
        return parse_stream_id(raw).stream_id
    except InvalidStreamId:
        return ""


async def _serve_viewer(
    sock: SrtSocket, subscription: Subscription, bytes_out: Counter, *, edge_pull: bool = False
) -> StreamEnded | None:
    """Send the stream until it ends (returned) or the viewer hangs up (None).

    An edge's pull ends when a new publisher takes over: the edge pulls
    again and publishes anew, so that its readers resync as they do here.
    """
    ended = None
    generation = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_until_closed, sock, nursery.cancel_scope)
        try:
            while True:
                data = await subscription.receive()
                if edge_pull and generation not in (None, subscription.generation):
                    ended = StreamEnded("a new publisher: the edge pulls again")
                    break
                generation = subscription.generation
                # Slices of a view: the datagram made from each is the only copy.
                view = memoryview(data)
                offsets = range(0, len(data), MESSAGE_SIZE)
                await sock.send_many(view[offset : offset + MESSAGE_SIZE] for offset in offsets)
                bytes_out.inc(len(data))
        except SrtClosed:
            pass
        except StreamEnded as exc:
            ended = exc
        nursery.cancel_scope.cancel()
    return ended


async def _until_closed(sock: SrtSocket, scope: trio.CancelScope) -> None:
    """Read what a viewer sends (nothing useful): its hanging up ends the watch at once."""
    try:
        while True:
            await sock.receive()
    except SrtClosed:
        scope.cancel()
