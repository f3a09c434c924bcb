"""The admin credential: who may read peers, refusals and other private details.

`AdminAuth.authorized(request)` is the one check every admin route makes
(`admin_only` wraps a handler with it): HTTP Basic against `admin.credentials`
(user → bcrypt hash) or a Bearer token against `admin.token` (a bcrypt hash).
Without either setting nothing is admin, and the routes answer 401, late
for a client that keeps failing (the same throttle as publishers).  A
verified credential is remembered for a minute by its SHA-256, so that a
dashboard polling every few seconds does not pay bcrypt on every request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import bcrypt
import trio
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from ghostream.auth import BCRYPT_MAX_BYTES
from ghostream.auth.throttle import FailureThrottle, host_key
from ghostream.config import AdminSettings

# bcrypt is slow on purpose: a few checks at once, never the event loop.
_LIMITER = trio.CapacityLimiter(2)
VERIFIED_TTL = 60.0
MAX_VERIFIED = 64
MAX_CREDENTIAL_BYTES = 1024

Handler = Callable[[Request], Awaitable[Response]]


class AdminAuth:
    def __init__(self, settings: AdminSettings, throttle: FailureThrottle) -> None:
        self.throttle = throttle
        self._users = {user: hashed.encode() for user, hashed in settings.credentials.items()}
        self._token = settings.token.encode()
        self._verified: OrderedDict[bytes, float] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return bool(self._users or self._token)

    async def authorized(self, request: HTTPConnection) -> bool:
        """Whether the request carries a valid admin credential."""
        header = request.headers.get("authorization", "")
        client = host_key(request.client.host if request.client else "?")
        if not self.enabled or not header or len(header) > MAX_CREDENTIAL_BYTES:
            return await self._refuse(client)
        digest = hashlib.sha256(header.encode()).digest()
        seen = self._verified.get(digest)
        if seen is not None and time.monotonic() - seen < VERIFIED_TTL:
            return True
        if not await trio.to_thread.run_sync(self._check, header, limiter=_LIMITER):
            return await self._refuse(client)
        self.throttle.succeeded(client)
        self._verified[digest] = time.monotonic()
        while len(self._verified) > MAX_VERIFIED:
            self._verified.popitem(last=False)
        return True

    async def _refuse(self, client: str) -> bool:
        await trio.sleep(self.throttle.failed(client))
        return False

    def _check(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return _matches(value.strip(), self._token)
        if scheme != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, colon, password = decoded.partition(":")
        hashed = self._users.get(user)
        if not colon or not self._users:
            return False
        # An unknown user costs a comparison too, so timing does not tell which users exist.
        matches = _matches(password, hashed or next(iter(self._users.values())))
        return matches and hashed is not None


def _matches(secret: str, hashed: bytes) -> bool:
    if not hashed:
        return False
    try:
        return bcrypt.checkpw(secret.encode()[:BCRYPT_MAX_BYTES], hashed)
    except ValueError:
        return False


def unauthorized() -> Response:
    return JSONResponse(
        {"error": "admin credential required"},
        status_code=401,
        headers={"WWW-Authenticate": 'Basic realm="ghostream admin", charset="UTF-8"'},
    )


def admin_only(auth: AdminAuth, handler: Handler) -> Handler:
    """The handler, answering 401 to requests without the admin credential."""

    async def guarded(request: Request) -> Response:
        if not await auth.authorized(request):
            return unauthorized()
        return await handler(request)

    return guarded
