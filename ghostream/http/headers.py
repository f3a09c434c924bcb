"""Security headers of the web listener: a Content-Security-Policy for the pages, and more.

The policy allows the server's own origin and, beyond it, only what the
configuration names: the side widget (`web.widgetURL`, framed), the extra
stylesheet (`web.customCss`), the favicon and poster images, and the STUN
servers the player is given.  hls.js feeds the video element from blob:
URLs and may run its demuxer in a blob: worker, so both are allowed for
media and workers.  Every answer is also sent with `nosniff` and a
referrer policy that keeps page paths (stream ids) from other sites.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ghostream.config import Settings

REFERRER_POLICY = "strict-origin-when-cross-origin"


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of an absolute URL; "" for a path on this server."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return ""


def stun_source(url: str) -> str:
    """`host:port` of a `stun:`/`turn:` URL, as a CSP host source."""
    _, _, rest = url.partition(":")
    return rest.split("?", 1)[0].removeprefix("//")


def content_security_policy(settings: Settings) -> str:
    web = settings.web

    def sources(*urls: str) -> str:
        extra = sorted({origin for origin in map(origin_of, urls) if origin})
        return " ".join(["'self'", *extra])

    stun = sorted({stun_source(url) for url in settings.webrtc.stun_servers if stun_source(url)})
    directives = {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": sources(web.custom_css),
        "img-src": sources(web.favicon, web.player_poster) + " data:",
        "media-src": "'self' blob:",
        "worker-src": "'self' blob:",
        "connect-src": " ".join(["'self'", *stun]),
        "frame-src": sources(web.widget_url) if origin_of(web.widget_url) else "'self'",
        "object-src": "'none'",
        "base-uri": "'self'",
        "form-action": "'self'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


class SecurityHeaders:
    """ASGI middleware: the headers on every answer, the policy on HTML pages."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.policy = content_security_policy(settings).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", REFERRER_POLICY.encode()),
                ]
                content_type = dict(headers).get(b"content-type", b"")
                if content_type.startswith(b"text/html"):
                    headers.append((b"content-security-policy", self.policy))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
