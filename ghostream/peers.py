"""What the server keeps of a peer's address: the host, or only its network.

Peers arrive as text (`1.2.3.4:5000`, `[2001:db8::1]:5000`, an IPv4-mapped
`::ffff:1.2.3.4`, or a bare host); these helpers read any of them.
"""

from __future__ import annotations

import ipaddress

IPV4_KEPT_BITS = 24
IPV6_KEPT_BITS = 48
# The block one subscriber usually gets: changing the last 64 bits is no new host.
IPV6_HOST_BITS = 64

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def peer_host(peer: str) -> str:
    """The host part of `host:port`, `[v6]:port`, or a bare address."""
    if peer.startswith("["):
        return peer[1:].partition("]")[0]
    if peer.count(":") == 1:
        return peer.partition(":")[0]
    return peer


def parse_host(host: str) -> IpAddress | None:
    """The address, IPv4-mapped IPv6 read as IPv4; None for anything that is not an address."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def truncated_peer(peer: str) -> str:
    """The peer's network (IPv4 /24, IPv6 /48) without its port, for a history kept anonymous."""
    address = parse_host(peer_host(peer))
    if address is None:
        return "?"
    bits = IPV4_KEPT_BITS if address.version == 4 else IPV6_KEPT_BITS
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


def source_host(peer: str) -> str:
    """Who sent it, for limits per sender: the IPv4 address or the IPv6 /64 of a peer."""
    address = parse_host(peer_host(peer))
    if address is None:
        return peer_host(peer)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{IPV6_HOST_BITS}", strict=False))
    return str(address)
