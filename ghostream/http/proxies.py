"""The real client behind a reverse proxy (Traefik, nginx), from `X-Forwarded-For`.

Behind a proxy every request comes from the proxy's address, which would
make every per-host rule (guessing delays, WebRTC sessions and counted
pages per address) one rule for the whole audience.  A request from one of
`web.trustedProxies` is taken to come from the right-most address its
`X-Forwarded-For` names that is not itself a trusted proxy: the address the
last trusted proxy saw, which a client cannot forge.  Requests from anywhere
else keep their own address, whatever they claim.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Framework, Scope

from ghostream.peers import parse_host

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(texts: Sequence[str]) -> list[Network]:
    """Addresses or networks (`172.16.0.0/12`); ValueError naming the first that is neither."""
    return [ipaddress.ip_network(text.strip(), strict=False) for text in texts]


def forwarded_client(peer: str, forwarded_for: str, trusted: Sequence[Network]) -> str:
    """Who sent a request that reached us from `peer`, as the trusted proxies tell it."""
    if not _trusted(peer, trusted):
        return peer
    client = peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        if parse_host(hop) is None:
            break
        client = hop
        if not _trusted(hop, trusted):
            break
    return client


def _trusted(host: str, trusted: Sequence[Network]) -> bool:
    address = parse_host(host)
    return address is not None and any(address in network for network in trusted)


def behind_proxies(app: Framework, trusted: Sequence[Network]) -> Framework:
    """The app, seeing the client the trusted proxies name instead of the proxy."""
    if not trusted:
        return app

    async def real_client(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        client = scope.get("client") if scope["type"] in ("http", "websocket") else None
        if client:
            forwarded = b",".join(
                value for name, value in scope["headers"] if name == b"x-forwarded-for"
            )
            host = forwarded_client(client[0], forwarded.decode("latin-1"), trusted)
            if host != client[0]:
                scope = {**scope, "client": (host, 0)}  # type: ignore[assignment]
        await app(scope, receive, send)  # type: ignore[call-arg]

    return real_client  # type: ignore[return-value]
