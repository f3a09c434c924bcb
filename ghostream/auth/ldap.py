"""Publishing rights from an LDAP directory: a publisher may publish if it can bind.

The stream id becomes the RDN `cn=<id>` under `auth.ldap.userdn`, escaped so
that an id such as `x,cn=admin` cannot name another entry.  An empty password
is refused before any bind, because LDAP treats it as an anonymous bind that
succeeds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio
from ldap3 import Connection, Server
from ldap3.core.exceptions import LDAPBindError, LDAPException, LDAPInvalidCredentialsResult
from ldap3.utils.dn import escape_rdn

from ghostream.auth import _LIMITER, ANY_ATTEMPT, Attempt, AuthResult

log = logging.getLogger(__name__)


class LdapAuth:
    def __init__(
        self, uri: str, userdn: str, aliases: Mapping[str, str] | None = None, timeout: int = 5
    ) -> None:
        self.uri = uri
        self.userdn = userdn
        self.aliases = dict(aliases or {})
        self.timeout = timeout

    def user_dn(self, stream_id: str) -> str:
        account = self.aliases.get(stream_id, stream_id)
        return f"cn={escape_rdn(account)},{self.userdn}"

    def _check(self, stream_id: str, password: str) -> AuthResult:
        if not password:
            return AuthResult(False, "no password")
        server = Server(self.uri, connect_timeout=self.timeout)
        try:
            connection = Connection(
                server,
                user=self.user_dn(stream_id),
                password=password,
                receive_timeout=self.timeout,
                raise_exceptions=True,
            )
            connection.bind()
            connection.unbind()
        except (LDAPBindError, LDAPInvalidCredentialsResult):
            return AuthResult(False, "invalid credentials")
        except LDAPException as exc:
            log.error("LDAP server %s cannot be used: %s", self.uri, exc)
            return AuthResult(False, "LDAP server unreachable")
        return AuthResult(True)

    async def check(
        self, stream_id: str, password: str, attempt: Attempt = ANY_ATTEMPT
    ) -> AuthResult:
        return await trio.to_thread.run_sync(self._check, stream_id, password, limiter=_LIMITER)
