"""The web listener's ASGI app: viewer counts, stream stats and history as JSON.

`/_stats/ID/` keeps the original server's answer (`{"ConnectedViewers": N}`)
because players and third-party widgets poll it.  `/api/streams` and
`/api/streams/ID` are the richer views: what is live now, and a stream's
totals read from the event log.  These public answers never hold a peer's
address or a refusal; `/api/admin/streams/ID` adds the recent sessions and
events (peers, refusals, forward errors) for holders of the admin credential.

LL-HLS lives below `/ID/` (`index.m3u8`, `media.m3u8`, inits and parts);
its handlers only translate `ghostream.outputs.llhls` answers into HTTP,
with CORS so that players on other origins can load them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ghostream.broker.registry import StreamSummary
from ghostream.context import ServerContext, failure_throttle
from ghostream.http.admin import AdminAuth, admin_only
from ghostream.http.headers import SecurityHeaders
from ghostream.http.pages import page_routes
from ghostream.http.serving import serve_asgi
from ghostream.outputs.llhls import HlsAnswer

if TYPE_CHECKING:
    from ghostream.outputs.webrtc import WebRtcOutput

# Characters of a stream id in a URL; anything else is a 404 like any unknown page.
STREAM_PATH = "{stream_id:str}"
STREAM_ID_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789@_-.")
# A browser page polls the counter every 20 s; one not seen for this long has left.
PAGE_VIEWER_TTL = 40.0
MAX_PAGE_VIEWERS = 100_000
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range",
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


class PageViewers:
    """Browser pages that poll `/_stats/ID/?uid=…`, each counted once while it polls."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, float]] = {}

    def saw(self, uid: str, stream_id: str) -> None:
        self._seen.pop(uid, None)
        self._seen[uid] = (stream_id, time.monotonic())
        if len(self._seen) > MAX_PAGE_VIEWERS:
            self._expire(force_oldest=True)

    def count(self, stream_id: str, already_counted: set[str]) -> int:
        """Pages of a stream, except those whose WebRTC session is counted as a viewer."""
        self._expire()
        return sum(
            1
            for uid, (stream, _) in self._seen.items()
            if _same_stream(stream, stream_id) and uid not in already_counted
        )

    def _expire(self, *, force_oldest: bool = False) -> None:
        limit = time.monotonic() - PAGE_VIEWER_TTL
        for uid, (_, seen) in list(self._seen.items()):
            if seen >= limit and not force_oldest:
                break
            del self._seen[uid]
            force_oldest = False


def _same_stream(stream: str, wanted: str) -> bool:
    """A quality variant (`id@480p`) counts toward its stream."""
    return stream == wanted or stream.startswith(wanted + "@")


def _valid_id(stream_id: str) -> bool:
    return bool(stream_id) and len(stream_id) <= 128 and set(stream_id) <= STREAM_ID_CHARACTERS


def _summary(summary: StreamSummary, webrtc: WebRtcOutput | None) -> dict:
    delivery = webrtc.delivery(summary.video_codec, summary.video) if webrtc else None
    return {
        "id": summary.id,
        "state": summary.state,
        "viewers": summary.viewers,
        "bytes_in": summary.bytes_in,
        "video_codec": summary.video_codec,
        "audio_codecs": list(summary.audio_codecs),
        "video": summary.video.as_dict() if summary.video else None,
        # How WebRTC viewers get the video (passed through, re-encoded, refused) and why.
        "webrtc": delivery,
    }


def _not_found() -> JSONResponse:
    return JSONResponse({"error": "not found"}, status_code=404)


def _hls_response(request: Request, answer: HlsAnswer) -> Response:
    headers = CORS_HEADERS | {"Cache-Control": answer.cache_control}
    if request.method == "OPTIONS":
        return Response(status_code=204, headers=headers)
    return Response(answer.body, answer.status, headers, answer.content_type)


def create_app(context: ServerContext) -> Starlette:
    broker = context.broker
    pages = PageViewers()

    def live_viewers(stream_id: str) -> int:
        return sum(s.viewers for s in broker.summaries() if _same_stream(s.id, stream_id))

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
            pages.saw(uid[:64], stream_id)
        sessions = context.webrtc.page_uids() if context.webrtc else set()
        count = live_viewers(stream_id) + pages.count(stream_id, sessions)
        return JSONResponse({"ConnectedViewers": count})

    async def streams(request: Request) -> JSONResponse:
        return JSONResponse({"streams": [_summary(s, context.webrtc) for s in broker.summaries()]})

    async def stream_detail(request: Request, *, private: bool = False) -> JSONResponse:
        stream_id = request.path_params["stream_id"]
        if not _valid_id(stream_id):
            return _not_found()
        live = next((s for s in broker.summaries() if s.id == stream_id), None)
        body: dict = {"id": stream_id, "live": _summary(live, context.webrtc) if live else None}
        history = context.history
        if history is not None:
            stats = await history.query(history.stream_stats, stream_id)
            body["stats"] = stats.as_dict()
            if private:
                sessions = await history.query(lambda: history.sessions(stream=stream_id, limit=50))
                events = await history.query(lambda: history.events(stream=stream_id, limit=50))
                body |= {"sessions": sessions, "events": events}
        elif live is None:
            return _not_found()
        return JSONResponse(body)

    async def admin_stream_detail(request: Request) -> JSONResponse:
        return await stream_detail(request, private=True)

    admin = AdminAuth(context.settings.admin, failure_throttle(context.settings))

    hls = context.hls

    def hls_route(path: str, answer: Callable[[str, Request], Awaitable[HlsAnswer]]) -> Route:
        async def handler(request: Request) -> Response:
            stream_id = request.path_params["stream_id"]
            if request.method == "OPTIONS":
                return _hls_response(request, HlsAnswer(204, b""))
            if not _valid_id(stream_id):
                return _hls_response(request, HlsAnswer(404, b"no such live stream\n"))
            return _hls_response(request, await answer(stream_id, request))

        return Route(f"/{STREAM_PATH}/{path}", handler, methods=["GET", "HEAD", "OPTIONS"])

    routes = [
        Route("/healthz", health),
        Route(f"/_stats/{STREAM_PATH}/", viewer_count),
        Route("/api/streams", streams),
        Route(f"/api/streams/{STREAM_PATH}", stream_detail),
        Route(f"/api/admin/streams/{STREAM_PATH}", admin_only(admin, admin_stream_detail)),
        hls_route(
            "index.m3u8",
            lambda stream_id, request: hls.multivariant(
                stream_id, all_variants="variants" in request.query_params
            ),
        ),
        hls_route("media.m3u8", lambda s, request: hls.media_playlist(s, request.query_params)),
        hls_route(
            "{name:hlsmedia}",
            lambda stream_id, request: hls.media_file(stream_id, request.path_params["name"]),
        ),
    ]
    if context.webrtc is not None:
        from ghostream.http.whep import whep_routes
        from ghostream.http.whip import whip_routes

        routes += whep_routes(context.webrtc, STREAM_PATH, _valid_id)
        routes += whip_routes(context.webrtc, context.gatekeeper, STREAM_PATH, _valid_id)
    # Pages last: `/ID` must not shadow any other route.
    routes += page_routes(context, _valid_id)
    return Starlette(
        routes=routes, middleware=[Middleware(SecurityHeaders, settings=context.settings)]
    )


async def serve_web(
    context: ServerContext, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    await serve_asgi(
        create_app(context), context.settings.web.listen_address, task_status=task_status
    )
