"""The site: a home page listing live streams, a player and a publish page per stream, static files.

Every `web.*` setting ends up here: the site name, hostname, favicon, extra
stylesheet, poster, counter period and side widget are rendered into the
templates of `ghostream/web/templates`; `oneStreamPerDomain` and `mapDomainToStream`
choose the stream from the request's host, as the original server did.
hls.js and uPlot come from npm, shipped in the package (see `ghostream.resources`).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ghostream import monitoring
from ghostream.broker.registry import Broker
from ghostream.config import Profile, Settings, WebSettings
from ghostream.resources import PACKAGE, VENDOR, on_disk

WEB = on_disk(PACKAGE / "web")


def site_templates(settings: WebSettings) -> tuple[Jinja2Templates, dict]:
    """The templates, and what every page shows of the site (name, host, favicon...)."""
    site = {
        "name": settings.name,
        "hostname": settings.hostname,
        "favicon": settings.favicon,
        "custom_css": settings.custom_css,
        "player_poster": settings.player_poster,
    }
    return Jinja2Templates(directory=str(WEB / "templates")), site


def page_routes(
    settings: Settings,
    broker: Broker,
    offered_profiles: list[Profile],
    webrtc: bool,
    valid_id: Callable[[str], bool],
) -> list:
    """The site's pages; `offered_profiles` are the variants players may ask for."""
    web = settings.web
    templates, site = site_templates(web)

    def domain_stream(request: Request) -> str | None:
        """The stream a domain is dedicated to, if any."""
        host = request.headers.get("host", "").rsplit(":", 1)[0].lower()
        mapped = web.map_domain_to_stream.get(host.replace(".", "-"))
        if mapped:
            return mapped
        return host if web.one_stream_per_domain and valid_id(host) else None

    def player(request: Request, stream_id: str, dedicated: bool) -> Response:
        monitoring.VIEWERS_SERVED.labels(stream_id, "web").inc()
        widget = ""
        if web.widget_url and "nowidget" not in request.query_params:
            widget = web.widget_url.replace("{{.Path}}", stream_id)
        config = {
            "stream": stream_id,
            "webrtc": webrtc,
            "iceServers": list(settings.webrtc.stun_servers),
            "counterPeriod": web.viewers_counter_refresh_period,
            # Variants the transcoder can make on request, besides those already live.
            "variants": [f"{stream_id}@{p.name}" for p in offered_profiles],
        }
        return templates.TemplateResponse(
            request,
            "player.html",
            {
                "site": site,
                "stream_id": stream_id,
                "widget_url": widget,
                "player_config": config,
                "home_url": "/about" if dedicated else "/",
            },
        )

    def home(request: Request, dedicated: bool) -> Response:
        watch = request.query_params.get("watch", "").strip().lower()
        if watch and valid_id(watch):
            return RedirectResponse(f"/{watch}", status_code=303)
        streams = [s for s in broker.summaries() if "@" not in s.id and s.state == "live"]
        return templates.TemplateResponse(
            request,
            "home.html",
            {
                "site": site,
                "streams": sorted(streams, key=lambda s: s.id),
                "srt_port": settings.srt.listen_address.port,
                "home_url": "/about" if dedicated else "/",
            },
        )

    async def root(request: Request) -> Response:
        dedicated = domain_stream(request)
        return player(request, dedicated, True) if dedicated else home(request, False)

    async def about(request: Request) -> Response:
        dedicated = domain_stream(request)
        if dedicated is None:
            return await stream_page(request)
        return home(request, True)

    async def stream_page(request: Request) -> Response:
        dedicated = domain_stream(request)
        if dedicated is not None:
            return player(request, dedicated, True)
        stream_id = request.path_params.get("stream_id", "about")
        if not valid_id(stream_id):
            return PlainTextResponse("Not Found\n", status_code=404)
        return player(request, stream_id, False)

    async def publish_page(request: Request) -> Response:
        stream_id = request.path_params["stream_id"]
        if not webrtc or not valid_id(stream_id) or "@" in stream_id:
            return PlainTextResponse("Not Found\n", status_code=404)
        size = request.query_params.get("size", "")
        width, _, height = size.partition("x")
        if not (width.isdigit() and height.isdigit() and 0 < int(width) * int(height) <= 1 << 22):
            width, height = "1280", "720"
        config = {
            "stream": stream_id,
            "iceServers": list(settings.webrtc.stun_servers),
            "width": int(width),
            "height": int(height),
        }
        return templates.TemplateResponse(
            request,
            "publish.html",
            {"site": site, "stream_id": stream_id, "publish_config": config, "home_url": "/"},
        )

    async def vendor(request: Request) -> Response:
        name = request.path_params["name"]
        asset = VENDOR.get(name)
        if asset is None:
            return PlainTextResponse("Not Found\n", status_code=404)
        if not asset.is_file():
            return PlainTextResponse(
                f"{name} is not installed: run scripts/run (npm install --prefix ghostream/web)\n",
                status_code=404,
            )
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        return FileResponse(on_disk(asset), media_type=kind)

    return [
        Route("/", root),
        Route("/about", about),
        Route("/static/vendor/{name:str}", vendor),
        Mount("/static", StaticFiles(directory=str(WEB / "static")), name="static"),
        Route("/{stream_id:str}/publish", publish_page),
        Route("/{stream_id:str}", stream_page),
    ]
