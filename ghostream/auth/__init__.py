"""Who may publish: bcrypt password hashes (basic) or an LDAP bind (ldap).

Checks run in worker threads (bcrypt and LDAP block), and every refusal is
logged once, with the stream id and the peer but never the password.  An
address that keeps failing is slowed down, so guessing a stream key over SRT
costs an attacker seconds per try instead of milliseconds.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import bcrypt
import trio

log = logging.getLogger(__name__)

# Limits concurrent bcrypt/LDAP work so a flood of handshakes cannot starve the server.
_LIMITER = trio.CapacityLimiter(4)
# Compared against for unknown users, so that timing does not reveal which ids exist.
_DUMMY_HASH = bcrypt.hashpw(b"unused", bcrypt.gensalt(rounds=10))


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    reason: str = ""


class Authenticator(Protocol):
    async def check(self, stream_id: str, password: str) -> AuthResult: ...


class AllowAll:
    """`auth.enabled: false`."""

    async def check(self, stream_id: str, password: str) -> AuthResult:
        return AuthResult(True)


class BasicAuth:
    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._hashes = {user.lower(): hashed.encode() for user, hashed in credentials.items()}

    def _check(self, stream_id: str, password: str) -> AuthResult:
        hashed = self._hashes.get(stream_id)
        try:
            matches = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH)
        except ValueError:
            log.error("auth.basic.credentials: the hash of %r is not a bcrypt hash", stream_id)
            return AuthResult(False, "server has an invalid hash for this user")
        if hashed is None:
            return AuthResult(False, "unknown user")
        return AuthResult(True) if matches else AuthResult(False, "wrong password")

    async def check(self, stream_id: str, password: str) -> AuthResult:
        return await trio.to_thread.run_sync(self._check, stream_id, password, limiter=_LIMITER)


class FailureThrottle:
    """Delays attempts from an address after repeated failures (bounded memory)."""

    def __init__(
        self,
        *,
        free_failures: int = 3,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        forget_after: float = 600.0,
        max_addresses: int = 10_000,
    ) -> None:
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def delay_for(self, address: str) -> float:
        entry = self._failures.get(address)
        if entry is None:
            return 0.0
        count, last = entry
        if trio.current_time() - last > self.forget_after:
            del self._failures[address]
            return 0.0
        excess = count - self.free_failures
        if excess < 0:
            return 0.0
        return min(self.base_delay * 2**excess, self.max_delay)

    def failed(self, address: str) -> None:
        count, _ = self._failures.pop(address, (0, 0.0))
        self._failures[address] = (count + 1, trio.current_time())
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


class Gatekeeper:
    """The authenticator plus throttling and logging, as the protocols use it."""

    def __init__(self, authenticator: Authenticator, throttle: FailureThrottle | None = None):
        self.authenticator = authenticator
        self.throttle = throttle or FailureThrottle()

    async def admit(self, stream_id: str, password: str, address: str) -> AuthResult:
        delay = self.throttle.delay_for(address)
        if delay:
            await trio.sleep(delay)
        if not password and not isinstance(self.authenticator, AllowAll):
            result = AuthResult(False, "no password")
        else:
            result = await self.authenticator.check(stream_id, password)
        if result.ok:
            self.throttle.succeeded(address)
        else:
            self.throttle.failed(address)
            log.warning("publish of %r from %s refused: %s", stream_id, address, result.reason)
        return result


def create_authenticator(
    *,
    enabled: bool,
    backend: str,
    credentials: Mapping[str, str],
    ldap_uri: str,
    ldap_userdn: str,
    ldap_aliases: Mapping[str, str],
) -> Authenticator:
    if not enabled:
        return AllowAll()
    if backend == "ldap":
        from ghostream.auth.ldap import LdapAuth

        return LdapAuth(ldap_uri, ldap_userdn, ldap_aliases)
    return BasicAuth(credentials)
