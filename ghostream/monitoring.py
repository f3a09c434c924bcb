"""Prometheus metrics and the `/metrics` endpoint, served on Trio by Hypercorn.

Every metric of the server is defined here, in one registry, so that the
catalogue is in one place and tests can read values without scraping.
Names keep the original server's where it had them
(`ghostream_web_viewer_served_total`, `ghostream_webrtc_connected_sessions`).

Label values come from closed sets, so that no client can create series:
a `stream` label is the stream id only for streams that are configured or
were live in this run (at most MAX_STREAM_LABELS), otherwise "other"; the
`reason` of a rejection is one of REJECTION_KINDS.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    Metric,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ghostream import __version__
from ghostream.history.events import (
    Event,
    PublishStarted,
    PublishStopped,
    Rejected,
    StreamFault,
    ViewerJoined,
    ViewerLeft,
    ViewerSkipped,
)

MAX_STREAM_LABELS = 1000
OTHER = "other"
# A rejection's reject code (SRT's, whose 14xx mirror HTTP's 4xx) → its `reason` label.
REJECTION_KINDS = {
    1400: "invalid_request",
    1401: "unauthorized",
    1402: "overload",
    1403: "unauthorized",
    1404: "not_found",
    1409: "busy",
    10: "bad_secret",
    11: "unsecure",
}


class StreamLabels:
    """The stream ids that may be label values: configured ones and those seen live."""

    def __init__(self, limit: int = MAX_STREAM_LABELS) -> None:
        self.limit = limit
        self._known: set[str] = set()

    def allow(self, stream_id: str) -> None:
        """Admit an id, if there is room; once admitted, it stays (gauges go up and down)."""
        if len(self._known) < self.limit:
            self._known.add(stream_id)

    def __call__(self, stream_id: str) -> str:
        return stream_id if stream_id in self._known else OTHER


STREAM_LABELS = StreamLabels()


class _StreamLabelled:
    """A metric whose first label is a stream id, passed through STREAM_LABELS."""

    def labels(self, *values: str, **named: str):  # type: ignore[no-untyped-def]
        if values:
            values = (STREAM_LABELS(values[0]), *values[1:])
        elif "stream" in named:
            named["stream"] = STREAM_LABELS(named["stream"])
        return super().labels(*values, **named)  # type: ignore[misc]


class StreamCounter(_StreamLabelled, Counter):
    pass


class StreamGauge(_StreamLabelled, Gauge):
    pass


REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

BUILD_INFO = Info("ghostream_build", "Ghostream version and Python runtime", registry=REGISTRY)
BUILD_INFO.info({"version": __version__, "python": platform.python_version()})

STREAMS_LIVE = Gauge("ghostream_streams_live", "Streams with a publisher", registry=REGISTRY)
VIEWERS = StreamGauge(
    "ghostream_viewers",
    "Connected viewers by stream and protocol",
    ["stream", "protocol"],
    registry=REGISTRY,
)
VIEWERS_SERVED = StreamCounter(
    "ghostream_web_viewer_served_total",
    "Viewers served since start, by stream and protocol",
    ["stream", "protocol"],
    registry=REGISTRY,
)
BYTES_IN = StreamCounter(
    "ghostream_bytes_received_total", "Stream bytes received from publishers", ["stream"],
    registry=REGISTRY,
)  # fmt: skip
BYTES_OUT = StreamCounter(
    "ghostream_bytes_sent_total", "Stream bytes sent to viewers", ["stream", "protocol"],
    registry=REGISTRY,
)  # fmt: skip
REJECTIONS = Counter(
    "ghostream_rejections_total",
    "Refused connections by protocol and kind of refusal",
    ["protocol", "reason"],
    registry=REGISTRY,
)
VIEWERS_SKIPPED = StreamCounter(
    "ghostream_viewer_skips_total",
    "Times a slow viewer was moved ahead to the latest keyframe or dropped",
    ["stream", "protocol"],
    registry=REGISTRY,
)
HLS_PART_REQUESTS = StreamCounter(
    "ghostream_hls_part_requests_total",
    "LL-HLS parts served by the origin (behind a cache, once per part)",
    ["stream"],
    registry=REGISTRY,
)
FORWARD_ATTEMPTS = StreamCounter(
    "ghostream_forward_attempts_total",
    "Connections opened to forward targets",
    ["stream"],
    registry=REGISTRY,
)
FORWARD_FAILURES = StreamCounter(
    "ghostream_forward_failures_total",
    "Forward targets that refused, dropped or stalled",
    ["stream"],
    registry=REGISTRY,
)
FORWARD_DROPPED = StreamCounter(
    "ghostream_forward_dropped_packets_total",
    "Packets not sent to a forward target slower than real time",
    ["stream"],
    registry=REGISTRY,
)
TRANSCODE_BEHIND = StreamCounter(
    "ghostream_transcode_behind_total",
    "Times a source's variants fell behind real time and skipped to a keyframe",
    ["stream"],
    registry=REGISTRY,
)
STREAM_FAULTS = Counter(
    "ghostream_stream_faults_total",
    "Per-stream components (demux, llhls, opus, vp8, transcode, forward, srt, telnet, edge) that "
    "failed on a stream's data and were restarted or stopped for that stream only",
    ["component"],
    registry=REGISTRY,
)

WEBHOOK_DELIVERIES = Counter(
    "ghostream_webhook_deliveries_total",
    "Event deliveries to each configured webhook, by outcome (delivered or failed)",
    ["webhook", "outcome"],
    registry=REGISTRY,
)
WEBHOOK_BEHIND = Gauge(
    "ghostream_webhook_behind_events",
    "Events logged that a webhook's receiver has not acknowledged yet",
    ["webhook"],
    registry=REGISTRY,
)

RECORDED_BYTES = StreamCounter(
    "ghostream_recorded_bytes_total", "Bytes of shows written to recordings", ["stream"],
    registry=REGISTRY,
)  # fmt: skip
RECORDING_FAILURES = StreamCounter(
    "ghostream_recording_failures_total",
    "Recordings stopped early by a write error (a full disk, a read-only directory)",
    ["stream"],
    registry=REGISTRY,
)


class EdgeViewers:
    """Viewers that edges report per stream, read from the audience at each scrape."""

    _name = "ghostream_edge_viewers"
    _labelnames = ("stream",)

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, int]] = dict

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            self._name,
            "Viewers of a stream on the edge servers that pull it from this one",
            labels=self._labelnames,
        )
        totals: dict[str, int] = {}
        for stream, count in self.source().items():
            label = STREAM_LABELS(stream)
            totals[label] = totals.get(label, 0) + count
        for label, count in sorted(totals.items()):
            family.add_metric([label], count)
        yield family


EDGE_VIEWERS = EdgeViewers()
REGISTRY.register(EDGE_VIEWERS)

TEXT_CONVERSIONS = Gauge(
    "ghostream_text_conversions",
    "Streams decoded and scaled to text art for telnet viewers (one per stream)",
    registry=REGISTRY,
)
WEBRTC_SESSIONS = Gauge(
    "ghostream_webrtc_connected_sessions", "Connected WebRTC sessions", registry=REGISTRY
)
WEBRTC_DROPPED = Counter(
    "ghostream_webrtc_dropped_packets_total",
    "Packets on the shared WebRTC ports that belong to no session, by why",
    ["reason"],
    registry=REGISTRY,
)


SRT_ROLES = ("publish", "watch")


@dataclass
class SrtFigures:
    """What the SRT stack counted for the connections of one role."""

    connections: int = 0
    retransmitted: int = 0
    lost: int = 0
    dropped: int = 0
    rtt_total: float = 0.0


class SrtSource(Protocol):
    def srt_figures(self) -> dict[str, SrtFigures]: ...

    def srt_invalid_datagrams(self) -> int: ...


class SrtCollector:
    """SRT statistics read from the SRT service at scrape time.

    The stack counts retransmissions, losses, drops and RTT per connection
    anyway; reading them on demand costs nothing per packet.  `role` is
    publish (the server receives) or watch (the server sends).
    """

    def __init__(self) -> None:
        self.source: SrtSource | None = None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        figures = self.source.srt_figures() if self.source else {}
        by_role = [(role, figures.get(role, SrtFigures())) for role in SRT_ROLES]
        families = [
            (GaugeMetricFamily, "ghostream_srt_connections", "Open SRT connections", "connections"),
            (
                CounterMetricFamily,
                "ghostream_srt_packets_retransmitted",
                "SRT data packets retransmitted: received again from publishers, sent again to "
                "viewers",
                "retransmitted",
            ),
            (
                CounterMetricFamily,
                "ghostream_srt_packets_lost",
                "SRT data packets the server found missing as a receiver (then asked for again)",
                "lost",
            ),
            (
                CounterMetricFamily,
                "ghostream_srt_packets_dropped",
                "SRT data packets given up: arrived too late or never, or too late to send",
                "dropped",
            ),
        ]
        for family_type, name, documentation, field in families:
            family = family_type(name, documentation, labels=["role"])
            for role, figure in by_role:
                family.add_metric([role], getattr(figure, field))
            yield family
        rtt = GaugeMetricFamily(
            "ghostream_srt_rtt_seconds",
            "Mean smoothed round-trip time of open SRT connections",
            labels=["role"],
        )
        for role, figure in by_role:
            rtt.add_metric(
                [role], figure.rtt_total / figure.connections if figure.connections else 0
            )
        yield rtt
        invalid = self.source.srt_invalid_datagrams() if self.source else 0
        yield CounterMetricFamily(
            "ghostream_srt_datagrams_invalid",
            "Malformed, undecryptable or unroutable SRT datagrams dropped",
            value=invalid,
        )


SRT = SrtCollector()
REGISTRY.register(SRT)


def observe(event: Event) -> None:
    """Keep the viewer and stream gauges in step with the broker (a broker listener)."""
    match event:
        case PublishStarted():
            STREAM_LABELS.allow(event.stream_id)
            STREAMS_LIVE.inc()
        case PublishStopped():
            STREAMS_LIVE.dec()
        case ViewerJoined():
            VIEWERS.labels(event.stream_id, event.protocol).inc()
            VIEWERS_SERVED.labels(event.stream_id, event.protocol).inc()
        case ViewerLeft():
            VIEWERS.labels(event.stream_id, event.protocol).dec()
        case StreamFault():
            STREAM_FAULTS.labels(event.component).inc()
        case ViewerSkipped():
            VIEWERS_SKIPPED.labels(event.stream_id, event.protocol).inc()
        case Rejected():
            kind = REJECTION_KINDS.get(event.detail.get("code", 0), OTHER)
            REJECTIONS.labels(event.protocol, kind).inc()
