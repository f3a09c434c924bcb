"""The wiring: which parts of the server run, what each is handed, the order they start in.

`ServerContext.create` is the one place that decides, from the settings,
which components exist and what each is given: only what it uses (the SRT
service gets its settings, the broker, the gatekeeper and the audience;
WebRTC gets a way to start a stream's copy for browsers, not the
transcoder).  `services` lists, in start order, what the root nursery
(`ghostream.server`) runs.  The web app reads the rest (`http.app.Site`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from ghostream import monitoring
from ghostream.audience import Audience
from ghostream.auth import Gatekeeper, create_authenticator
from ghostream.auth.throttle import failure_throttle
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import Broker
from ghostream.config import Profile, Settings
from ghostream.history.log import EventLog
from ghostream.outputs.llhls import LlHls
from ghostream.workers.claims import StreamClaims

if TYPE_CHECKING:
    from ghostream.edge.puller import EdgePuller
    from ghostream.outputs.forward import Forwarder
    from ghostream.outputs.recording import Recorder
    from ghostream.outputs.telnet import TelnetOutput
    from ghostream.outputs.transcode import Transcoder
    from ghostream.webrtc import WebRtcOutput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Service:
    """A child of the root nursery: binds, calls `task_status.started()`, serves until cancelled."""

    name: str
    address: str
    run: Callable[..., Awaitable[object]]


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
    recorder: Recorder | None = None
    # What the root nursery runs, in start order.
    services: list[Service] = field(default_factory=list)
    # Services listening so far, and whether all of them are (for /healthz).
    listening: list[str] = field(default_factory=list)
    ready: bool = False

    @classmethod
    def create(cls, settings: Settings) -> ServerContext:
        """Build and wire what the settings enable; OSError when the history cannot be opened."""
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
            http=auth.http,
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

            start_copy = transcoder.webrtc_copy if transcoder is not None else None
            webrtc = WebRtcOutput(settings.webrtc, broker, packets, start_copy)
        forwarder = None
        if settings.forwarding:
            from ghostream.outputs.forward import Forwarder

            forwarder = Forwarder(settings.forwarding, broker, packets)
            broker.on_event.append(forwarder.observe)
        audience = Audience(broker, partial(counted_pages, hls, webrtc))
        monitoring.EDGE_VIEWERS.source = audience.edge_viewers
        reads = auth.enabled and auth.backend == "http" and auth.http.reads
        gatekeeper = Gatekeeper(authenticator, failure_throttle(settings.auth), check_reads=reads)
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
        if settings.recording.enabled:
            from ghostream.outputs.recording import Recorder

            recorder = Recorder(settings.recording, settings.recording_directory, packets, broker)
            broker.on_event.append(recorder.observe)
            context.recorder = recorder
        context.services = planned_services(context)
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


def planned_services(context: ServerContext) -> list[Service]:
    """The services of the wired components, in the order the root nursery starts them."""
    from ghostream.edge.access import is_edge_key
    from ghostream.http.app import serve_web
    from ghostream.http.metrics import serve_metrics
    from ghostream.srt.service import SrtService

    settings = context.settings
    services = [
        Service("broker", "", context.broker.run),
        Service("demux", "", context.packets.run),
        Service("LL-HLS", "", context.hls.run),
    ]
    if context.history is not None:
        services.append(Service("history", str(settings.history.database), context.history.run))
    if settings.webhooks and context.history is not None:
        from ghostream.history.webhooks import deliver_webhooks

        hooks = partial(deliver_webhooks, settings.webhooks, context.history)
        services.append(Service("webhooks", "", hooks))
    if settings.srt.enabled:
        srt = SrtService(
            settings.srt,
            context.broker,
            context.gatekeeper,
            context.audience,
            is_edge_key=partial(is_edge_key, settings.srt.pull_keys),
            edge=context.edge is not None,
            worker=settings.worker,
        )
        services.append(Service("SRT", f"{settings.srt.listen_address}/udp", srt.serve))
    # The RTMP port is not shared between workers: only worker 0 listens on it.
    if settings.rtmp.enabled and (settings.worker is None or settings.worker.index == 0):
        from ghostream.rtmp.ingest import RtmpIngest

        rtmp = RtmpIngest(
            settings.rtmp, context.broker, context.gatekeeper, edge=context.edge is not None
        )
        address = f"{settings.rtmp.listen_address}/tcp"
        if settings.rtmp.tls.enabled:
            address += f" {settings.rtmp.tls.listen_address}/tcp (RTMPS)"
        services.append(Service("RTMP", address, rtmp.serve))
    if context.transcoder is not None:
        services.append(Service("transcoding", "", context.transcoder.run))
    if context.edge is not None:
        services.append(Service("edge", "", context.edge.run))
        if settings.origin.web_url:
            from ghostream.edge.reports import EdgeReporter

            reporter = EdgeReporter(settings.origin, context.audience)
            services.append(Service("edge reports", "", reporter.run))
    if context.forwarder is not None:
        services.append(Service("forwarding", "", context.forwarder.run))
    if context.webrtc is not None:
        ports = f"{settings.webrtc.min_port_udp}-{settings.webrtc.max_port_udp}/udp"
        if settings.webrtc.tcp_listen_address.port:
            ports += f" {settings.webrtc.tcp_listen_address}/tcp"
        services.append(Service("WebRTC", ports, context.webrtc.run))
    if context.recorder is not None:
        directory = str(settings.recording_directory)
        services.append(Service("recording", directory, context.recorder.run))
    if context.telnet is not None:
        address = f"{settings.telnet.listen_address}/tcp"
        services.append(Service("telnet", address, context.telnet.run))
    if settings.web.enabled:
        address = f"{settings.web.listen_address}/tcp"
        services.append(Service("web", address, partial(serve_web, context)))
    if settings.monitoring.enabled:
        address = settings.monitoring.listen_address
        services.append(Service("monitoring", f"{address}/tcp", partial(serve_metrics, address)))
    return services
