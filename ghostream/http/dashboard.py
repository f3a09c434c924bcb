"""The streamer's dashboard at `/admin`, and the admin JSON API it reads.

The page is static: its script polls `/api/admin/live` (live streams with
viewers by protocol and variant, forward targets' state, recent refusals)
and `/api/admin/shows` (shows, newest first; one with its chart of
concurrent viewers per minute by protocol).  The same answers serve any
other tool.  Every route here goes through `guard`, the admin credential
check: the page itself is private too, since it names forward targets.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ghostream.broker.registry import Broker
from ghostream.config import WebSettings
from ghostream.history import queries
from ghostream.history.log import EventLog
from ghostream.history.projections import base_stream
from ghostream.http.pages import site_templates
from ghostream.outputs.recording import with_recordings

Handler = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Handler], Handler]
MAX_SHOWS = 500
REFUSALS_SHOWN = 20


def dashboard_routes(
    settings: WebSettings,
    broker: Broker,
    history: EventLog | None,
    recordings: Path,
    guard: Guard,
) -> list[Route]:
    templates, site = site_templates(settings)

    async def page(request: Request) -> Response:
        return templates.TemplateResponse(
            request,
            "admin.html",
            {"site": site, "home_url": "/", "history": history is not None},
        )

    async def live(request: Request) -> JSONResponse:
        audience = broker.audience()
        summaries = broker.summaries()
        streams = []
        for summary in sorted(summaries, key=lambda s: s.id):
            if "@" in summary.id:
                continue
            variants = {
                s.id.partition("@")[2]: audience.get(s.id, {})
                for s in summaries
                if base_stream(s.id) == summary.id and s.id != summary.id
            }
            protocols = dict(audience.get(summary.id, {}))
            for counts in variants.values():
                for protocol, count in counts.items():
                    protocols[protocol] = protocols.get(protocol, 0) + count
            streams.append(
                {
                    "id": summary.id,
                    "state": summary.state,
                    "viewers": sum(protocols.values()),
                    "protocols": protocols,
                    "source": audience.get(summary.id, {}),
                    "variants": variants,
                    "bytes_in": summary.bytes_in,
                    "video_codec": summary.video_codec,
                }
            )
        body: dict = {"at": time.time(), "streams": streams, "forwards": [], "refusals": []}
        if history is not None:
            body["forwards"] = await history.query(queries.forwards)
            body["refusals"] = await history.query(queries.recent_refusals, REFUSALS_SHOWN)
        return JSONResponse(body)

    async def shows(request: Request) -> JSONResponse:
        if history is None:
            return JSONResponse({"shows": []})
        params = request.query_params
        try:
            limit = min(int(params.get("limit", "100")), MAX_SHOWS)
            since = float(params["since"]) if "since" in params else None
        except ValueError:
            return JSONResponse({"error": "limit and since must be numbers"}, status_code=400)
        found = await history.query(
            queries.shows, stream=params.get("stream") or None, since=since, limit=limit
        )
        found = await trio.to_thread.run_sync(with_recordings, recordings, found)
        return JSONResponse({"shows": found})

    async def show(request: Request) -> JSONResponse:
        found = None
        if history is not None:
            found = await history.query(queries.show, request.path_params["show_id"])
        if found is None:
            return JSONResponse({"error": "no such show"}, status_code=404)
        series = await history.query(
            queries.viewer_series, found["stream"], found["started"], found["ended"]
        )
        [found] = await trio.to_thread.run_sync(with_recordings, recordings, [found])
        return JSONResponse({"show": found, "series": series})

    return [
        Route("/admin", guard(page)),
        Route("/api/admin/live", guard(live)),
        Route("/api/admin/shows", guard(shows)),
        Route("/api/admin/shows/{show_id:int}", guard(show)),
    ]
