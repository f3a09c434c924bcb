"""Publishing rights decided by the operator's own service: `auth.backend: http`.

Each attempt is POSTed as JSON to `auth.http.url`; a 2xx answer allows it,
anything else, an unreachable hook or no answer within `auth.http.timeout`
refuses it.  A refusal then goes through the same per-host throttle as a
wrong password, so a hook that says no is as slow to guess against as
bcrypt.  Allowances may be remembered for `auth.http.cacheSeconds`, so a
publisher's reconnect storm does not become a storm on the hook; a refusal
is never remembered, so that a fix on the hook's side takes effect at once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict

import httpx
import trio

from ghostream.auth import ANY_ATTEMPT, Attempt, AuthResult
from ghostream.config import HttpAuthSettings, site_of
from ghostream.peers import peer_host

log = logging.getLogger(__name__)

MAX_CACHED = 10_000


class HttpAuth:
    def __init__(self, settings: HttpAuthSettings) -> None:
        self.url = settings.url
        self.timeout = settings.timeout / 1000
        self.cache_seconds = settings.cache_seconds
        self._allowed: OrderedDict[str, float] = OrderedDict()

    async def check(
        self, stream_id: str, password: str, attempt: Attempt = ANY_ATTEMPT
    ) -> AuthResult:
        client = peer_host(attempt.peer) if attempt.peer else ""
        key = _cache_key(attempt.action, attempt.protocol, stream_id, password, client)
        if self._cached(key):
            return AuthResult(True)
        body = {
            "action": attempt.action,
            "protocol": attempt.protocol,
            "stream": stream_id,
            "user": stream_id,
            "password": password,
            "client": client,
        }
        try:
            with trio.fail_after(self.timeout):
                async with httpx.AsyncClient(timeout=None) as http:
                    response = await http.post(self.url, json=body)
        except trio.TooSlowError:
            log.error("auth hook %s gave no answer in %.1f s: refused", self.shown, self.timeout)
            return AuthResult(False, "auth hook did not answer")
        except httpx.HTTPError as exc:
            log.error("auth hook %s cannot be reached (%s): refused", self.shown, exc)
            return AuthResult(False, "auth hook unreachable")
        if not response.is_success:
            return AuthResult(False, f"refused by the auth hook (HTTP {response.status_code})")
        if self.cache_seconds:
            self._allowed[key] = time.monotonic() + self.cache_seconds
            self._allowed.move_to_end(key)
            while len(self._allowed) > MAX_CACHED:
                self._allowed.popitem(last=False)
        return AuthResult(True)

    @property
    def shown(self) -> str:
        return site_of(self.url)

    def _cached(self, key: str) -> bool:
        until = self._allowed.get(key)
        if until is None:
            return False
        if until < time.monotonic():
            del self._allowed[key]
            return False
        return True


def _cache_key(*parts: str) -> str:
    """The password is part of what is remembered, but only as a digest."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()
