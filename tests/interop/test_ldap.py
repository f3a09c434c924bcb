"""Publishing rights from a real OpenLDAP server (slapd), directly and through the server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.publisher import publishing
from harness.slapd import Slapd, running_slapd
from test_publish_watch import publish_command, refused

from ghostream.auth.ldap import LdapAuth


@pytest.fixture
def slapd(require_program, tmp_path: Path) -> Iterator[Slapd]:
    require_program("ldapadd")
    with running_slapd(require_program("slapd"), tmp_path / "ldap") as server:
        server.add_user("alice", "alice-pw")
        # A user whose name needs DN escaping: a comma and a plus sign.
        server.add_user("eve\\,admin\\+x", "eve-pw")
        yield server


async def test_bind_accepts_the_right_password_only(slapd: Slapd) -> None:
    auth = LdapAuth(slapd.uri, slapd.users_dn)
    assert (await auth.check("alice", "alice-pw")).ok
    assert (await auth.check("alice", "wrong")).reason == "invalid credentials"
    assert (await auth.check("bob", "alice-pw")).reason == "invalid credentials"
    # An empty password would be an anonymous bind, which LDAP accepts.
    assert not (await auth.check("alice", "")).ok


async def test_special_characters_name_exactly_one_entry(slapd: Slapd) -> None:
    auth = LdapAuth(slapd.uri, slapd.users_dn)
    assert (await auth.check("eve,admin+x", "eve-pw")).ok
    # Neither wildcards nor DN syntax in an id reach another entry.
    for hostile in ("*", "alice,cn=users", "alice)(cn=*", "cn=alice", "alice\\"):
        assert not (await auth.check(hostile, "alice-pw")).ok, hostile


async def test_aliases_map_stream_ids_to_accounts(slapd: Slapd) -> None:
    auth = LdapAuth(slapd.uri, slapd.users_dn, aliases={"club-tv": "alice"})
    assert (await auth.check("club-tv", "alice-pw")).ok


async def test_unreachable_server_refuses_with_a_clear_log(caplog, require_program) -> None:
    auth = LdapAuth("ldap://127.0.0.1:9", "cn=users,dc=example,dc=com", timeout=2)
    result = await auth.check("alice", "alice-pw")
    assert result.reason == "LDAP server unreachable"
    assert "LDAP server ldap://127.0.0.1:9 cannot be used" in caplog.text


def test_server_publishes_with_ldap_credentials_and_refuses_others(
    slapd: Slapd, ghostream_server, require_program
) -> None:
    require_program("ffmpeg")
    server = ghostream_server(
        {"auth": {"backend": "ldap", "ldap": {"uri": slapd.uri, "userdn": slapd.users_dn}}}
    )
    assert "demo stream key" not in server.log
    refused(publish_command, server.srt_url("alice:wrong"), 1403)
    server.wait_for_log("SRT alice from .* refused: invalid credentials")
    refused(publish_command, server.srt_url("demo:demo"), 1403)
    with publishing(server, "alice:alice-pw"):
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
             server.srt_url("alice")],
            capture_output=True, timeout=20,
        )  # fmt: skip
        assert "h264" in probe.stdout.decode()
