"""The RTMP and RTMPS listeners: one task per connection drives a sans-IO `RtmpSession`.

The stream key `ID:PASSWORD` (OBS: server `rtmp://HOST/live`, any
application name) is checked by the same gatekeeper as SRT's, with its
per-host throttle; a refusal reaches the encoder as an `onStatus` error
whose description it shows.  An admitted publish goes into the broker
like an SRT one (history protocol "rtmp"), its FLV tags remuxed to
MPEG-TS as they arrive.  Anything malformed ends that connection with one
log line; other streams never notice.
"""

from __future__ import annotations

import logging
import math
import secrets
import ssl
from functools import partial

import trio

from ghostream import monitoring
from ghostream.auth import Gatekeeper
from ghostream.broker.registry import Broker, StreamBusy
from ghostream.broker.stream import Stream, StreamState
from ghostream.config import RtmpSettings
from ghostream.rtmp import RtmpError
from ghostream.rtmp.flv import FlvRemuxer, UnsupportedMedia
from ghostream.rtmp.greeting import BLOCK_SIZE
from ghostream.rtmp.session import Event, Media, PublishEnded, PublishRequested, RtmpSession
from ghostream.srt.endpoint import peer_text
from ghostream.srt.packet import RejectReason
from ghostream.streamid import InvalidStreamId, Mode, parse_stream_id

log = logging.getLogger(__name__)

PROTOCOL = "rtmp"
COMPONENT = "rtmp"
RECEIVE_SIZE = 65536
KEY_HINT = "use the stream key ID:PASSWORD"


class ConnectionEnded(Exception):
    """The peer closed the connection, or the session ended it (a refusal it was sent)."""


class _Link:
    """A byte stream and the session it feeds: the only place that reads and writes."""

    def __init__(self, stream: trio.abc.Stream, session: RtmpSession) -> None:
        self.stream = stream
        self.session = session

    async def events(self) -> list[Event]:
        """The next events; RtmpError on bad input or a timeout, ConnectionEnded at EOF."""
        while True:
            await self.flush()
            if self.session.closed:
                raise ConnectionEnded
            deadline = self.session.deadline
            with trio.move_on_at(math.inf if deadline is None else deadline):
                data = await self.stream.receive_some(RECEIVE_SIZE)
                if not data:
                    raise ConnectionEnded
                events = self.session.receive(data, trio.current_time())
                if events:
                    await self.flush()
                    return events
                continue
            self.session.check_time(trio.current_time())

    async def flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            await self.stream.send_all(data)


class RtmpIngest:
    def __init__(
        self, settings: RtmpSettings, broker: Broker, gatekeeper: Gatekeeper, *, edge: bool
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.gatekeeper = gatekeeper
        # An edge serves its origin's streams; a local publish would shadow the origin's.
        self.edge = edge
        self._connections = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        address = self.settings.listen_address
        listeners: list[tuple[str, list[trio.abc.Listener]]] = [
            ("RTMP", await trio.open_tcp_listeners(address.port, host=address.host or None))
        ]
        tls = self.settings.tls
        if tls.enabled:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(tls.certificate, tls.key)
            except (OSError, ssl.SSLError) as exc:
                raise OSError(f"rtmp.tls: cannot load the certificate and key: {exc}") from exc
            plain = await trio.open_tcp_listeners(
                tls.listen_address.port, host=tls.listen_address.host or None
            )
            secure = [trio.SSLListener(listener, context) for listener in plain]
            listeners.append(("RTMPS", secure))
        task_status.started()
        async with trio.open_nursery() as nursery:
            for name, group in listeners:
                handler = partial(self._connection, name)
                nursery.start_soon(partial(trio.serve_listeners, handler, group))

    async def _connection(self, name: str, stream: trio.abc.Stream) -> None:
        peer = _peer(stream)
        if self._connections >= self.settings.max_clients:
            log.warning("%s from %s refused: rtmp.maxClients connections are open", name, peer)
            self.broker.reject("", peer, PROTOCOL, "too many connections", code=1402)
            await trio.aclose_forcefully(stream)
            return
        self._connections += 1
        session = RtmpSession(trio.current_time(), secrets.token_bytes(BLOCK_SIZE - 8))
        link = _Link(stream, session)
        try:
            await self._serve(name, link, peer)
        except RtmpError as exc:
            log.warning("%s from %s closed: %s", name, peer, exc)
        except (ConnectionEnded, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            # A bug in one connection must not stop the listener or other streams.
            log.exception("%s connection from %s failed", name, peer)
        finally:
            self._connections -= 1
            await trio.aclose_forcefully(stream)

    async def _serve(self, name: str, link: _Link, peer: str) -> None:
        request = None
        while request is None:
            events = await link.events()
            request = next((e for e in events if isinstance(e, PublishRequested)), None)
        stream_id = await self._admit(name, link, peer, request)
        if stream_id is None:
            await link.flush()
            return
        run = partial(self._publish, name, link, peer, stream_id)
        await self.broker.supervisor.run(stream_id, COMPONENT, run)

    async def _admit(
        self, name: str, link: _Link, peer: str, request: PublishRequested
    ) -> str | None:
        """The stream id of an authorized publish, or None once the peer was told why not."""
        key, _, _ = request.name.partition("?")
        try:
            wanted = parse_stream_id(key)
        except InvalidStreamId as exc:
            reason = f"invalid stream key: {exc}"
            return self._refuse(link, peer, "", RejectReason.BAD_REQUEST, reason)
        stream_id = wanted.stream_id
        if wanted.mode is not Mode.PUBLISH:
            reason = f"no password in the stream key: {KEY_HINT}"
            return self._refuse(link, peer, stream_id, RejectReason.UNAUTHORIZED, reason)
        if self.edge:
            reason = "this server is an edge: publish to its origin"
            return self._refuse(link, peer, stream_id, RejectReason.FORBIDDEN, reason)
        result = await self.gatekeeper.admit(stream_id, wanted.password, peer, protocol=PROTOCOL)
        if not result.ok:
            # The encoder learns only that the key is wrong, not whether the id exists.
            self.broker.reject(
                stream_id, peer, PROTOCOL, result.reason, code=int(RejectReason.UNAUTHORIZED)
            )
            link.session.refuse(
                "NetStream.Publish.Unauthorized", f"wrong stream key for {stream_id!r}: {KEY_HINT}"
            )
            return None
        current = self.broker.get(stream_id)
        if current is not None and current.state is StreamState.LIVE:
            reason = f"{stream_id!r} already has a publisher"
            return self._refuse(link, peer, stream_id, RejectReason.CONFLICT, reason)
        log.debug("%s publish of %s from %s admitted (app %r)", name, stream_id, peer, request.app)
        return stream_id

    def _refuse(
        self, link: _Link, peer: str, stream_id: str, code: RejectReason, reason: str
    ) -> None:
        log.warning("RTMP publish of %s from %s refused: %s", stream_id or "(no id)", peer, reason)
        self.broker.reject(stream_id, peer, PROTOCOL, reason, code=int(code))
        status = "NetStream.Publish.BadName"
        link.session.refuse(status, reason)

    async def _publish(self, name: str, link: _Link, peer: str, stream_id: str) -> None:
        reason = "publisher left"
        try:
            with self.broker.publish(stream_id, peer, PROTOCOL) as stream:
                link.session.accept(f"publishing {stream_id}")
                log.info("%s publishing %s over %s", peer, stream_id, name)
                try:
                    reason = await self._receive(link, stream)
                except UnsupportedMedia as exc:
                    reason = str(exc)
                    link.session.refuse("NetStream.Publish.Rejected", reason)
                    await link.flush()
                except RtmpError as exc:
                    reason = f"bad input: {exc}"
                except (ConnectionEnded, trio.BrokenResourceError):
                    reason = "publisher disconnected"
        except StreamBusy:
            reason = "lost a race with another publisher"
            link.session.refuse("NetStream.Publish.BadName", f"{stream_id!r} has a publisher")
            await link.flush()
        finally:
            log.info("%s stopped publishing %s over %s: %s", peer, stream_id, name, reason)

    async def _receive(self, link: _Link, stream: Stream) -> str:
        remuxer = FlvRemuxer()
        bytes_in = monitoring.BYTES_IN.labels(stream.id)
        while True:
            for event in await link.events():
                if isinstance(event, PublishEnded):
                    return event.reason
                assert isinstance(event, Media)
                if event.kind == "video":
                    chunk = remuxer.video(event.timestamp, event.payload)
                else:
                    chunk = remuxer.audio(event.timestamp, event.payload)
                if chunk:
                    stream.publish(chunk)
                    bytes_in.inc(len(chunk))


def _peer(stream: trio.abc.Stream) -> str:
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    try:
        return peer_text(transport.socket.getpeername())  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return "unknown peer"
