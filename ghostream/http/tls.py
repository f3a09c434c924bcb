"""HTTPS for the web server: the certificate of `web.tls`, reloaded when it is renewed.

The TLS context is Hypercorn's own (TLS 1.2 or later, HTTP/2 offered by
ALPN), built once; when the certificate or key file changes (a certbot
renewal), the new pair is checked on a scratch context and then loaded into
the live one, so new connections get it and open ones keep theirs.  A pair
caught half-written (a new certificate, the old key) is left for the next
change, the old one still served.

With `web.tls.redirectAddress`, plain-HTTP requests there are redirected to
the same path over HTTPS.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Framework, Scope
from starlette.datastructures import URL
from starlette.responses import PlainTextResponse, RedirectResponse

log = logging.getLogger(__name__)

# Seconds between looks at the files' modification times.
CHECK_INTERVAL = 2.0


class Certificate:
    """A certificate chain and its key, as the live TLS context of the web server."""

    def __init__(self, certfile: Path, keyfile: Path) -> None:
        self.certfile = certfile
        self.keyfile = keyfile
        config = Config()
        config.certfile, config.keyfile = str(certfile), str(keyfile)
        try:
            context = config.create_ssl_context()
        except OSError as exc:
            raise OSError(
                f"cannot load web.tls.certificate {certfile} with web.tls.key {keyfile}: {exc}"
            ) from None
        assert context is not None
        self.context = context
        self._stamp = self._modified()

    def _modified(self) -> tuple[int, int] | None:
        try:
            return (os.stat(self.certfile).st_mtime_ns, os.stat(self.keyfile).st_mtime_ns)
        except OSError:
            return None

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed since the last look; whether they were."""
        stamp = self._modified()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.certfile, self.keyfile)
            self.context.load_cert_chain(self.certfile, self.keyfile)
        except OSError as exc:
            log.warning(
                "web.tls: %s and %s changed but cannot be loaded (%s); still serving the "
                "previous certificate",
                self.certfile,
                self.keyfile,
                exc,
            )
            return False
        log.info("web.tls: certificate %s reloaded", self.certfile)
        return True

    async def watch(self) -> None:
        while True:
            await trio.sleep(CHECK_INTERVAL)
            self.reload_if_changed()


def redirect_plain_http(app: Framework, https_port: int) -> Framework:
    """The app over HTTPS; over plain HTTP, a redirect to the same URL over HTTPS."""

    async def redirecting(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "http":
            await app(scope, receive, send)  # type: ignore[call-arg]
            return
        url = URL(scope=scope)  # type: ignore[arg-type]
        if not url.hostname:
            answer = PlainTextResponse("this server is served over HTTPS\n", status_code=400)
        else:
            secure = url.replace(scheme="https", port=None if https_port == 443 else https_port)
            answer = RedirectResponse(str(secure), status_code=308)
        await answer(scope, receive, send)  # type: ignore[arg-type]

    return redirecting  # type: ignore[return-value]
