"""The web listener's ASGI app: viewer counts, stream stats and history as JSON.

`/_stats/ID/` keeps the original server's answer (`{"ConnectedViewers": N}`)
because players and third-party widgets poll it.  `/api/streams` and
`/api/streams/ID` are the richer views: what is live now, and a stream's
totals read from the event log.  These public answers never hold a peer's
address or a refusal; `/api/admin/streams/ID` adds the recent sessions and
events (peers, refusals, forward errors) for holders of the admin credential,
who also get the streamer's dashboard (`/admin`, `ghostream.http.dashboard`).

LL-HLS lives below `/ID/` (`index.m3u8`, `media.m3u8`, inits and parts);
its handlers only translate `ghostream.outputs.llhls` answers into HTTP,
with CORS so that players on other origins can load them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import trio
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ghostream.audience import Audience
from ghostream.auth import Gatekeeper
from ghostream.auth.throttle import failure_throttle, host_key
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import Broker, StreamSummary
from ghostream.config import Profile, Settings
from ghostream.edge.access import is_edge_key
from ghostream.history import queries
from ghostream.history.log import EventLog
from ghostream.http.admin import AdminAuth, admin_only
from ghostream.http.bodies import closing, read_body
from ghostream.http.dashboard import dashboard_routes
from ghostream.http.headers import SecurityHeaders
from ghostream.http.pages import page_routes
from ghostream.http.proxies import behind_proxies, parse_networks
from ghostream.http.pushes import push_routes
from ghostream.http.serving import serve_asgi
from ghostream.http.shows import show_routes
from ghostream.http.tls import Certificate
from ghostream.outputs.llhls import HlsAnswer, LlHls
from ghostream.outputs.llhls.players import client_key

if TYPE_CHECKING:
    from ghostream.webrtc import WebRtcOutput

# Characters of a stream id in a URL; anything else is a 404 like any unknown page.
STREAM_PATH = "{stream_id:str}"
STREAM_ID_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789@_-.")
MAX_REPORT_BYTES = 64 * 1024
# The player page names itself in its LL-HLS requests, so it is counted once.
PAGE_VIEWER_HEADER = "x-ghostream-viewer"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, X-Ghostream-Viewer",
    "Access-Control-Max-Age": "86400",
}


class HlsMediaConvertor(Convertor[str]):
    """Init, segment and part names only, so `/ID/NAME` shadows no other page."""

    regex = r"(?:init|seg|part)-[0-9a-f]+-[0-9]+(?:-[0-9]+)?\.(?:mp4|m4s)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("hlsmedia", HlsMediaConvertor())


def _valid_id(stream_id: str) -> bool:
    return bool(stream_id) and len(stream_id) <= 128 and set(stream_id) <= STREAM_ID_CHARACTERS


def parse_report(body: bytes | None) -> tuple[str, dict[str, int]] | None:
    """`{"edge": ID, "viewers": {STREAM: N}}` as values; None when malformed."""
    try:
        data = json.loads(body) if body is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    edge, viewers = data.get("edge"), data.get("viewers")
    if not isinstance(edge, str) or not 0 < len(edge) <= 64 or not isinstance(viewers, dict):
        return None
    counts = {
        stream_id: count
        for stream_id, count in viewers.items()
        if _valid_id(stream_id) and type(count) is int and 0 <= count <= 10_000_000
    }
    return edge, counts


def _summary(summary: StreamSummary, audience: int, webrtc: WebRtcOutput | None) -> dict:
    """`viewers` are this server's connections (an edge is one); `audience` counts people."""
    delivery = webrtc.delivery(summary.id, summary.video_codec, summary.video) if webrtc else None
    return {
        "id": summary.id,
        "state": summary.state,
        "viewers": summary.viewers,
        "audience": audience,
        "bytes_in": summary.bytes_in,
        "video_codec": summary.video_codec,
        "audio_codecs": list(summary.audio_codecs),
        "video": summary.video.as_dict() if summary.video else None,
        # How WebRTC viewers get the video (passed through, re-encoded, refused) and why,
        # and which re-encoded copies (H.264, VP8) run for them now.
        "webrtc": delivery,
    }


def _hls_client(request: Request) -> tuple[str, str]:
    """Who fetches LL-HLS media (a viewer while it does) and from where."""
    host, port = request.client if request.client else ("?", 0)
    page = request.headers.get(PAGE_VIEWER_HEADER, "")
    client = client_key(host, request.headers.get("user-agent", ""), page)
    peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return client, peer


def _not_found() -> JSONResponse:
    return JSONResponse({"error": "not found"}, status_code=404)


# An answer other than the preflight only needs the origin: the other CORS
# headers are the preflight's, and every header costs h11 a validation.
_CORS_RAW = [(b"access-control-allow-origin", CORS_HEADERS["Access-Control-Allow-Origin"].encode())]


class _HlsResponse(Response):
    """An HLS answer sent with the header bytes it carries: nothing is built per request.

    Parts and playlists go to every player alike, thousands of times a
    second with a few hundred players; Starlette's `Response` would encode
    and check the same headers on each.
    """

    def __init__(self, answer: HlsAnswer) -> None:
        self.status_code = answer.status
        self.body = answer.body
        self.raw_headers = [*_CORS_RAW, *answer.headers]
        self.background = None


_PREFLIGHT = Response(
    status_code=204, headers=CORS_HEADERS | {"Cache-Control": HlsAnswer(204, b"").cache_control}
)
_NO_SUCH_STREAM = HlsAnswer(404, b"no such live stream\n")


class Site(Protocol):
    """What the web app serves of the running server; the wiring's `ServerContext` is one."""

    settings: Settings
    broker: Broker
    gatekeeper: Gatekeeper
    history: EventLog | None
    hls: LlHls
    packets: PacketHub
    audience: Audience
    webrtc: WebRtcOutput | None
    # Services listening so far, and whether all of them are (for /healthz).
    listening: list[str]
    ready: bool

    @property
    def variant_profiles(self) -> list[Profile]: ...


def create_app(context: Site) -> Starlette:
    broker = context.broker
    audience = context.audience
    edge_throttle = failure_throttle(context.settings.auth)

    async def health(request: Request) -> JSONResponse:
        """Ready (200) once every enabled service listens; a container's HEALTHCHECK asks."""
        body = {
            "status": "ok" if context.ready else "starting",
            "services": context.listening,
            "streams": len(broker.summaries()),
        }
        return JSONResponse(body, status_code=200 if context.ready else 503)

    async def viewer_count(request: Request) -> JSONResponse:
        stream_id = request.path_params["stream_id"]
        if not _valid_id(stream_id):
            return _not_found()
        uid = request.query_params.get("uid", "")
        if uid:
            audience.pages.saw(uid[:64], stream_id, request.client.host if request.client else "?")
        return JSONResponse({"ConnectedViewers": audience.total(stream_id)})

    async def edge_report(request: Request) -> Response:
        """An edge's viewers per stream, so that this server's counts include them.

        The answer is the totals of those streams, for the edge's own counter.
        """
        presented = request.headers.get("authorization", "").removeprefix("Bearer ")
        client = host_key(request.client.host if request.client else "?")
        if not is_edge_key(context.settings.srt.pull_keys, presented):
            # Guessing keys is slow, as for stream keys and the admin credential.
            await trio.sleep(edge_throttle.failed(client))
            return JSONResponse({"error": "not an edge of this server"}, status_code=403)
        edge_throttle.succeeded(client)
        body = await read_body(request, MAX_REPORT_BYTES)
        if body is None:
            too_large = {"error": f"the report is larger than {MAX_REPORT_BYTES} bytes"}
            return JSONResponse(too_large, status_code=413, headers=closing(request))
        report = parse_report(body)
        if report is None:
            return JSONResponse({"error": "malformed report"}, status_code=400)
        edge, counts = report
        audience.receive(edge, counts)
        totals = {stream_id: audience.total(stream_id) for stream_id in counts}
        return JSONResponse({"viewers": totals})

    async def streams(request: Request) -> JSONResponse:
        summaries = broker.summaries()
        return JSONResponse(
            {"streams": [_summary(s, audience.count(s.id), context.webrtc) for s in summaries]}
        )

    async def stream_detail(request: Request, *, private: bool = False) -> JSONResponse:
        stream_id = request.path_params["stream_id"]
        if not _valid_id(stream_id):
            return _not_found()
        live = next((s for s in broker.summaries() if s.id == stream_id), None)
        summary = _summary(live, audience.count(stream_id), context.webrtc) if live else None
        body: dict = {"id": stream_id, "live": summary}
        history = context.history
        if history is not None:
            stats = await history.query(queries.stream_stats, stream_id)
            body["stats"] = stats.as_dict()
            if private:
                sessions = await history.query(queries.read_sessions, stream=stream_id, limit=50)
                events = await history.query(queries.events, stream=stream_id, limit=50)
                body |= {"sessions": sessions, "events": events}
        elif live is None:
            return _not_found()
        return JSONResponse(body)

    async def admin_stream_detail(request: Request) -> JSONResponse:
        return await stream_detail(request, private=True)

    async def webhooks(request: Request) -> JSONResponse:
        history = context.history
        cursors = await history.query(queries.webhook_cursors) if history is not None else []
        configured = {hook.label for hook in context.settings.webhooks}
        return JSONResponse({"webhooks": [c for c in cursors if c["name"] in configured]})

    admin = AdminAuth(context.settings.admin, failure_throttle(context.settings.auth))

    hls = context.hls

    def hls_route(path: str, answer: Callable[[str, Request], Awaitable[HlsAnswer]]) -> Route:
        async def handler(request: Request) -> Response:
            stream_id = request.path_params["stream_id"]
            if request.method == "OPTIONS":
                return _PREFLIGHT
            if not _valid_id(stream_id):
                return _HlsResponse(_NO_SUCH_STREAM)
            return _HlsResponse(await answer(stream_id, request))

        return Route(f"/{STREAM_PATH}/{path}", handler, methods=["GET", "HEAD", "OPTIONS"])

    routes = [
        Route("/healthz", health),
        Route(f"/_stats/{STREAM_PATH}/", viewer_count),
        Route("/_edges/viewers", edge_report, methods=["POST"]),
        Route("/api/streams", streams),
        Route(f"/api/streams/{STREAM_PATH}", stream_detail),
        Route(f"/api/admin/streams/{STREAM_PATH}", admin_only(admin, admin_stream_detail)),
        Route("/api/admin/webhooks", admin_only(admin, webhooks)),
        hls_route(
            "index.m3u8",
            lambda stream_id, request: hls.multivariant(
                stream_id, all_variants="variants" in request.query_params
            ),
        ),
        hls_route("media.m3u8", lambda s, request: hls.media_playlist(s, request.query_params)),
        hls_route(
            "{name:hlsmedia}",
            lambda stream_id, request: hls.media_file(
                stream_id, request.path_params["name"], *_hls_client(request)
            ),
        ),
    ]
    if context.webrtc is not None:
        from ghostream.http.whep import whep_routes
        from ghostream.http.whip import whip_routes

        routes += whep_routes(context.webrtc, context.gatekeeper, STREAM_PATH, _valid_id)
        routes += whip_routes(context.webrtc, context.gatekeeper, STREAM_PATH, _valid_id)
    routes += push_routes(broker, audience, context.history, admin, STREAM_PATH, _valid_id)
    routes += show_routes(
        context.settings, broker, context.packets, context.history, partial(admin_only, admin)
    )
    # Pages last: `/ID` must not shadow any other route.
    guard = partial(admin_only, admin)
    recordings = context.settings.recording_directory
    routes += dashboard_routes(context.settings.web, broker, context.history, recordings, guard)
    webrtc = context.webrtc is not None
    routes += page_routes(context.settings, broker, context.variant_profiles, webrtc, _valid_id)
    return Starlette(
        routes=routes, middleware=[Middleware(SecurityHeaders, settings=context.settings)]
    )


async def serve_web(
    context: Site, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    web = context.settings.web
    worker = context.settings.worker
    certificate = None
    if web.tls.enabled:
        certificate = Certificate(Path(web.tls.certificate), Path(web.tls.key))
    app = behind_proxies(create_app(context), parse_networks(web.trusted_proxies))
    await serve_asgi(
        app,
        web.listen_address,
        certificate=certificate,
        redirect=web.tls.redirect_address if web.tls.redirect_address.port else None,
        workers=worker.count if worker is not None else 1,
        task_status=task_status,
    )
