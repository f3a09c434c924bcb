"""The client a trusted proxy names, and nobody else's word for it."""

from __future__ import annotations

from ghostream.http.proxies import forwarded_client, parse_networks

TRUSTED = parse_networks(["172.16.0.0/12", "2001:db8:1::1"])


def test_a_trusted_proxy_names_the_client() -> None:
    assert forwarded_client("172.18.0.2", "198.51.100.7", TRUSTED) == "198.51.100.7"
    assert forwarded_client("2001:db8:1::1", "2001:db8:9::5", TRUSTED) == "2001:db8:9::5"


def test_what_the_client_wrote_before_the_proxy_is_not_believed() -> None:
    # The client sent "X-Forwarded-For: 10.0.0.1"; the proxy appended the address it saw.
    assert forwarded_client("172.18.0.2", "10.0.0.1, 198.51.100.7", TRUSTED) == "198.51.100.7"
    # Proxies behind proxies are skipped, up to the first address none of them is.
    assert forwarded_client("172.18.0.2", "198.51.100.7, 172.20.0.3", TRUSTED) == "198.51.100.7"


def test_anyone_else_keeps_their_own_address() -> None:
    assert forwarded_client("203.0.113.9", "198.51.100.7", TRUSTED) == "203.0.113.9"
    assert forwarded_client("172.18.0.2", "", TRUSTED) == "172.18.0.2"
    assert forwarded_client("172.18.0.2", "not an address", TRUSTED) == "172.18.0.2"
