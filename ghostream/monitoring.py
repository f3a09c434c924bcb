"""Prometheus metrics and the `/metrics` endpoint, served on Trio by Hypercorn.

Every metric of the server is defined here, in one registry, so that the
catalogue is in one place and tests can read values without scraping.
Names keep the original server's where it had them
(`ghostream_web_viewer_served_total`, `ghostream_webrtc_connected_sessions`).
"""

from __future__ import annotations

import platform

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ghostream import __version__
from ghostream.broker.events import (
    Event,
    PublishStarted,
    PublishStopped,
    Rejected,
    StreamFault,
    ViewerJoined,
    ViewerLeft,
)
from ghostream.config import ListenAddress
from ghostream.http.serving import serve_asgi

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

BUILD_INFO = Info("ghostream_build", "Ghostream version and Python runtime", registry=REGISTRY)
BUILD_INFO.info({"version": __version__, "python": platform.python_version()})

SRT_CONNECTIONS = Gauge(
    "ghostream_srt_connections", "Open SRT connections (publishers and viewers)", registry=REGISTRY
)
SRT_PACKETS_RETRANSMITTED = Counter(
    "ghostream_srt_packets_retransmitted_total",
    "SRT data packets sent again after a loss report",
    registry=REGISTRY,
)
SRT_PACKETS_DROPPED = Counter(
    "ghostream_srt_packets_dropped_total",
    "SRT data packets that arrived too late or never (skipped at play time)",
    registry=REGISTRY,
)
SRT_DATAGRAMS_INVALID = Counter(
    "ghostream_srt_datagrams_invalid_total",
    "Malformed or unroutable SRT datagrams dropped",
    registry=REGISTRY,
)
STREAMS_LIVE = Gauge("ghostream_streams_live", "Streams with a publisher", registry=REGISTRY)
VIEWERS = Gauge(
    "ghostream_viewers",
    "Connected viewers by stream and protocol",
    ["stream", "protocol"],
    registry=REGISTRY,
)
VIEWERS_SERVED = Counter(
    "ghostream_web_viewer_served_total",
    "Viewers served since start, by stream and protocol",
    ["stream", "protocol"],
    registry=REGISTRY,
)
BYTES_IN = Counter(
    "ghostream_bytes_received_total", "Stream bytes received from publishers", ["stream"],
    registry=REGISTRY,
)  # fmt: skip
BYTES_OUT = Counter(
    "ghostream_bytes_sent_total", "Stream bytes sent to viewers", ["stream", "protocol"],
    registry=REGISTRY,
)  # fmt: skip
REJECTIONS = Counter(
    "ghostream_rejections_total",
    "Refused connections by protocol and reason",
    ["protocol", "reason"],
    registry=REGISTRY,
)
VIEWERS_SKIPPED = Counter(
    "ghostream_viewer_skips_total",
    "Times a slow viewer was moved ahead to the latest keyframe",
    ["stream", "protocol"],
    registry=REGISTRY,
)
HLS_PART_REQUESTS = Counter(
    "ghostream_hls_part_requests_total",
    "LL-HLS parts served by the origin (behind a cache, once per part)",
    ["stream"],
    registry=REGISTRY,
)
FORWARD_ATTEMPTS = Counter(
    "ghostream_forward_attempts_total",
    "Connections opened to forward targets",
    ["stream"],
    registry=REGISTRY,
)
FORWARD_FAILURES = Counter(
    "ghostream_forward_failures_total",
    "Forward targets that refused, dropped or stalled",
    ["stream"],
    registry=REGISTRY,
)
FORWARD_DROPPED = Counter(
    "ghostream_forward_dropped_packets_total",
    "Packets not sent to a forward target slower than real time",
    ["stream"],
    registry=REGISTRY,
)
TRANSCODE_BEHIND = Counter(
    "ghostream_transcode_behind_total",
    "Times a source's variants fell behind real time and skipped to a keyframe",
    ["stream"],
    registry=REGISTRY,
)
STREAM_FAULTS = Counter(
    "ghostream_stream_faults_total",
    "Per-stream components (demux, llhls, opus, transcode, forward, srt, telnet) that failed "
    "on a stream's data and were restarted or stopped for that stream only",
    ["component"],
    registry=REGISTRY,
)
TEXT_CONVERSIONS = Gauge(
    "ghostream_text_conversions",
    "Streams decoded and scaled to text art for telnet viewers (one per stream)",
    registry=REGISTRY,
)
WEBRTC_SESSIONS = Gauge(
    "ghostream_webrtc_connected_sessions", "Connected WebRTC sessions", registry=REGISTRY
)


async def serve_metrics(
    address: ListenAddress, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    await serve_asgi(
        Starlette(routes=[Route("/metrics", metrics)]), address, task_status=task_status
    )


def observe(event: Event) -> None:
    """Keep the viewer and stream gauges in step with the broker (a broker listener)."""
    match event:
        case PublishStarted():
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
        case Rejected():
            REJECTIONS.labels(event.protocol, event.reason).inc()
