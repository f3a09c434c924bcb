"""What every service of a running server shares: settings, broker, history, gatekeeper."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from ghostream import monitoring
from ghostream.audience import Audience
from ghostream.auth import Gatekeeper, create_authenticator
from ghostream.auth.throttle import FailureThrottle
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import Broker
from ghostream.config import Profile, Settings
from ghostream.history.log import EventLog
from ghostream.outputs.llhls import LlHls
from ghostream.workers.claims import StreamClaims

if TYPE_CHECKING:
    from ghostream.edge.puller import EdgePuller
    from ghostream.outputs.forward import Forwarder
    from ghostream.outputs.telnet import TelnetOutput
    from ghostream.outputs.transcode import Transcoder
    from ghostream.webrtc import WebRtcOutput

log = logging.getLogger(__name__)


@dataclass
class ServerContext:
    settings: Settings
    broker: Broker
    gatekeeper: Gatekeeper
    history: EventLog | None
    packets: PacketHub
    hls: LlHls
    audience: Audience
    webrtc: WebRtcOutput | None = None
    forwarder: Forwarder | None = None
    transcoder: Transcoder | None = None
    edge: EdgePuller | None = None
    telnet: TelnetOutput | None = None
    # Services listening so far, and whether all of them are (for /healthz).
    listening: list[str] = field(default_factory=list)
    ready: bool = False

    @classmethod
    def create(cls, settings: Settings) -> ServerContext:
        """Wire the broker to its listeners; OSError when the history cannot be opened."""
        broker = Broker(reconnect_grace=settings.streams.reconnect_grace)
        if settings.worker is not None:
            broker.claim = StreamClaims(settings.worker.runtime).claim
        broker.on_event.append(monitoring.observe)
        for stream_id in configured_streams(settings):
            monitoring.STREAM_LABELS.allow(stream_id)
        history = None
        if settings.history.enabled:
            history = EventLog.open(
                settings.history.database,
                retention_days=settings.history.retention,
                truncate_peers=settings.history.truncate_peers,
            )
            broker.on_event.append(history.record)
        auth = settings.auth
        authenticator = create_authenticator(
            enabled=auth.enabled,
            backend=auth.backend,
            credentials=auth.basic.credentials,
            ldap_uri=auth.ldap.uri,
            ldap_userdn=auth.ldap.userdn,
            ldap_aliases=auth.ldap.aliases,
        )
        packets = PacketHub(broker)
        broker.on_event.append(packets.observe)
        transcoding = settings.transcoding
        variant_names = [p.name for p in transcoding.parsed_profiles] if transcoding.enabled else []
        hls = LlHls(packets, broker, variant_names)
        edge = None
        if settings.origin.url:
            from ghostream.edge.puller import EdgePuller

            edge = EdgePuller(settings.origin, settings.srt.latency / 1000, broker, packets)
            # An edge pulls its variants, made on the origin; it makes only the WebRTC copy.
            transcoding = dataclasses.replace(transcoding, profiles=[])
        transcoder = None
        copies_for_webrtc = settings.webrtc.enabled and settings.webrtc.transcode != "never"
        if copies_for_webrtc or (transcoding.enabled and transcoding.profiles):
            from ghostream.outputs.transcode import Transcoder

            transcoder = Transcoder(transcoding, broker, packets)
            broker.on_event.append(transcoder.observe)
        webrtc = None
        if settings.webrtc.enabled:
            from ghostream.webrtc import WebRtcOutput

            webrtc = WebRtcOutput(settings.webrtc, broker, packets, transcoder)
        forwarder = None
        if settings.forwarding:
            from ghostream.outputs.forward import Forwarder

            forwarder = Forwarder(settings.forwarding, broker, packets)
            broker.on_event.append(forwarder.observe)
        audience = Audience(broker, partial(counted_pages, hls, webrtc))
        monitoring.EDGE_VIEWERS.source = audience.edge_viewers
        gatekeeper = Gatekeeper(authenticator, failure_throttle(settings))
        context = cls(
            settings,
            broker,
            gatekeeper,
            history,
            packets,
            hls,
            audience,
            webrtc,
            forwarder,
            transcoder,
            edge,
        )
        if settings.telnet.enabled and not settings.transcoder.text.enabled:
            log.warning("telnet output off: it needs transcoder.text.enabled too")
        elif settings.telnet.enabled:
            from ghostream.outputs.telnet import TelnetOutput

            context.telnet = TelnetOutput(
                settings.telnet, settings.transcoder.text, broker, packets
            )
        return context

    @property
    def variant_profiles(self) -> list[Profile]:
        """Variants offered to players: made here, or on the origin an edge pulls them from."""
        transcoding = self.settings.transcoding
        if self.edge is not None:
            return transcoding.parsed_profiles if transcoding.enabled else []
        return list(self.transcoder.profiles.values()) if self.transcoder is not None else []

    def close(self) -> None:
        if self.history is not None:
            self.history.close()


def failure_throttle(settings: Settings) -> FailureThrottle:
    """A throttle with the configured delays (publishers and the admin credential each get one)."""
    return FailureThrottle(
        base_delay=settings.auth.failure_delay / 1000,
        max_delay=settings.auth.max_failure_delay / 1000,
    )


def configured_streams(settings: Settings) -> set[str]:
    """Stream ids the configuration names: these may be metric labels before they go live."""
    ids = set(settings.auth.basic.credentials) | set(settings.forwarding)
    ids |= set(settings.web.map_domain_to_stream.values())
    if settings.srt.default_stream:
        ids.add(settings.srt.default_stream)
    return {stream_id.lower() for stream_id in ids}


def counted_pages(hls: LlHls, webrtc: WebRtcOutput | None) -> set[str]:
    """Player pages already counted as viewers: over WebRTC, or fetching LL-HLS."""
    pages = hls.audience.page_ids()
    return pages | webrtc.page_uids() if webrtc is not None else pages
