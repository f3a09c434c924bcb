"""Who may publish: bcrypt password hashes (basic), an LDAP bind (ldap) or a hook (http).

Checks run in worker threads (bcrypt and LDAP block), and every refusal is
logged once, with the stream id and the peer but never the password.  A
host or a stream id that keeps failing is slowed down (`ghostream.auth.throttle`):
a right password is let in at once, a wrong one is refused late, so guessing
a stream key over SRT costs an attacker up to a minute per try.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import bcrypt
import trio

from ghostream.auth.throttle import FailureThrottle, host_key
from ghostream.config import HttpAuthSettings

log = logging.getLogger(__name__)

# Limits concurrent bcrypt/LDAP work so a flood of handshakes cannot starve the server.
_LIMITER = trio.CapacityLimiter(4)
# Compared against for unknown users, so that timing does not reveal which ids exist.
BCRYPT_MAX_BYTES = 72
_DUMMY_HASH = bcrypt.hashpw(b"unused", bcrypt.gensalt(rounds=10))


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Attempt:
    """Who asks and how, beyond the stream key: what an HTTP hook decides on."""

    action: str = "publish"
    protocol: str = ""
    peer: str = ""


ANY_ATTEMPT = Attempt()


class Authenticator(Protocol):
    async def check(
        self, stream_id: str, password: str, attempt: Attempt = ANY_ATTEMPT
    ) -> AuthResult: ...


class AllowAll:
    """`auth.enabled: false`."""

    async def check(
        self, stream_id: str, password: str, attempt: Attempt = ANY_ATTEMPT
    ) -> AuthResult:
        return AuthResult(True)


class BasicAuth:
    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._hashes = {user.lower(): hashed.encode() for user, hashed in credentials.items()}

    def _check(self, stream_id: str, password: str) -> AuthResult:
        hashed = self._hashes.get(stream_id)
        # bcrypt reads 72 bytes; older bcrypt releases cut longer passwords there silently.
        secret = password.encode()[:BCRYPT_MAX_BYTES]
        try:
            matches = bcrypt.checkpw(secret, hashed or _DUMMY_HASH)
        except ValueError:
            log.error("auth.basic.credentials: the hash of %r is not a bcrypt hash", stream_id)
            return AuthResult(False, "server has an invalid hash for this user")
        if hashed is None:
            return AuthResult(False, "unknown user")
        return AuthResult(True) if matches else AuthResult(False, "wrong password")

    async def check(
        self, stream_id: str, password: str, attempt: Attempt = ANY_ATTEMPT
    ) -> AuthResult:
        return await trio.to_thread.run_sync(self._check, stream_id, password, limiter=_LIMITER)


class Gatekeeper:
    """The authenticator plus throttling and logging, as the protocols use it."""

    def __init__(
        self,
        authenticator: Authenticator,
        throttle: FailureThrottle | None = None,
        *,
        check_reads: bool = False,
    ) -> None:
        self.authenticator = authenticator
        self.throttle = throttle if throttle is not None else FailureThrottle()
        self.check_reads = check_reads

    async def admit(
        self, stream_id: str, password: str, peer: str, *, protocol: str = ""
    ) -> AuthResult:
        """Check a publisher; a refusal returns only after the throttle's delay."""
        if not password and not isinstance(self.authenticator, AllowAll):
            result = AuthResult(False, "no password")
        else:
            attempt = Attempt("publish", protocol, peer)
            result = await self.authenticator.check(stream_id, password, attempt)
        return await self._settled(result, "publish", stream_id, peer)

    async def admit_reader(
        self, stream_id: str, token: str, peer: str, *, protocol: str
    ) -> AuthResult:
        """Check a viewer when the hook decides reads (`auth.http.reads`); else anyone watches."""
        if not self.check_reads:
            return AuthResult(True)
        attempt = Attempt("read", protocol, peer)
        result = await self.authenticator.check(stream_id, token, attempt)
        return await self._settled(result, "watch", stream_id, peer)

    async def _settled(
        self, result: AuthResult, action: str, stream_id: str, peer: str
    ) -> AuthResult:
        keys = (host_key(peer), f"stream:{stream_id}")
        if result.ok:
            self.throttle.succeeded(*keys)
            return result
        delay = self.throttle.failed(*keys)
        log.warning("%s of %r from %s refused: %s", action, stream_id, peer, result.reason)
        await trio.sleep(delay)
        return result


def create_authenticator(
    *,
    enabled: bool,
    backend: str,
    credentials: Mapping[str, str],
    ldap_uri: str,
    ldap_userdn: str,
    ldap_aliases: Mapping[str, str],
    http: HttpAuthSettings | None = None,
) -> Authenticator:
    if not enabled:
        return AllowAll()
    if backend == "http" and http is not None:
        from ghostream.auth.hook import HttpAuth

        return HttpAuth(http)
    if backend == "ldap":
        from ghostream.auth.ldap import LdapAuth

        return LdapAuth(ldap_uri, ldap_userdn, ldap_aliases)
    return BasicAuth(credentials)
