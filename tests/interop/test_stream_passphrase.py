"""A stream with its own SRT passphrase: libsrt peers with it get in, others are refused."""

from __future__ import annotations

import subprocess
import urllib.request

import pytest
from harness.media import signal_source
from harness.server_process import ServerProcess
from harness.udp_relay import UdpRelay, refusal

STREAM_PASSPHRASE = "only-for-demo-2026"


@pytest.fixture
def server(require_program, ghostream_server) -> ServerProcess:
    for program in ("ffmpeg", "srt-live-transmit"):
        require_program(program)
    return ghostream_server({"srt": {"passphrases": {"demo": STREAM_PASSPHRASE}}})


def view_command(url: str) -> list[str]:
    return ["ffmpeg", "-hide_banner", "-loglevel", "info", "-i", url, "-t", "1", "-f", "null", "-"]


def view_url(server: ServerProcess, passphrase: str, streamid: str = "demo") -> str:
    return server.srt_url(streamid, **({"passphrase": passphrase} if passphrase else {}))


def refused(server: ServerProcess, passphrase: str, streamid: str = "demo") -> tuple[int, str]:
    """A viewer that must be refused: the reject code it got, and what libsrt said."""
    return refusal(view_url(server, passphrase, streamid), view_command)


def test_a_stream_passphrase_admits_its_peers_only(server: ServerProcess) -> None:
    source = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", *signal_source(),
         "-t", "20", "-f", "mpegts", "-"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    publisher = subprocess.Popen(
        ["srt-live-transmit", "-q", "-chunk:1316", "file://con",
         server.srt_url("demo:demo", passphrase=STREAM_PASSPHRASE)],
        stdin=source.stdout, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        server.wait_for_log("publishing demo over SRT")
        watched = subprocess.run(
            view_command(view_url(server, STREAM_PASSPHRASE)), capture_output=True, timeout=30
        )
        assert watched.returncode == 0, watched.stderr.decode()
        # SRT_REJ_BADSECRET (10) and SRT_REJ_UNSECURE (11), as libsrt's own listener says them.
        code, said = refused(server, "not-the-passphrase")
        assert code == 10 and "Incorrect passphrase" in said, said
        assert refused(server, "")[0] == 11
        server.wait_for_log("SRT demo from .* refused: wrong passphrase")
        server.wait_for_log("SRT demo from .* refused: caller has no passphrase")
        # Streams without their own passphrase need none.
        assert refused(server, "", streamid="nobody")[0] == 1404
        server.wait_for_log("SRT nobody from .* refused: no such live stream")
        assert publisher.poll() is None
    finally:
        for process in (publisher, source):
            process.kill()
            process.wait()
    assert STREAM_PASSPHRASE not in server.log
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    assert 'ghostream_rejections_total{protocol="srt",reason="bad_secret"} 1.0' in metrics


def test_variants_and_users_take_their_passphrase_from_srt_passphrases(
    require_program, ghostream_server
) -> None:
    """`demo@240p` uses its source's passphrase, a `#!::u=alice` caller alice's own."""
    require_program("ffmpeg")
    alice = "alice-has-her-own-2026"
    server = ghostream_server({"srt": {"passphrases": {"demo": STREAM_PASSPHRASE, "alice": alice}}})
    as_alice = "#!::r=other,u=alice"
    # SRT_REJ_UNSECURE (11) without one, SRT_REJ_BADSECRET (10) with another's; with the right
    # one the handshake goes on, to "no such live stream" (1404): nothing is published here.
    expected = {
        ("demo@240p", ""): 11,
        ("demo@240p", alice): 10,
        ("demo@240p", STREAM_PASSPHRASE): 1404,
        (as_alice, ""): 11,
        (as_alice, STREAM_PASSPHRASE): 10,
        (as_alice, alice): 1404,
    }
    got = {key: refused(server, key[1], key[0])[0] for key in expected}
    assert got == expected
    assert alice not in server.log and STREAM_PASSPHRASE not in server.log


def test_guessing_a_passphrase_is_slowed_like_guessing_a_password(
    require_program, ghostream_server
) -> None:
    """Each wrong passphrase from a host waits longer before its refusal; the right one does not."""
    require_program("ffmpeg")
    server = ghostream_server(
        {"srt": {"passphrase": STREAM_PASSPHRASE}, "auth": {"failureDelay": 300}}
    )
    with UdpRelay(("127.0.0.1", server.srt_port)) as relay:
        for attempt in range(3):
            wrong = subprocess.run(
                view_command(relay.url(view_url(server, f"wrong-guess-number-{attempt}"))),
                capture_output=True, timeout=30,
            )  # fmt: skip
            assert b"Incorrect passphrase" in wrong.stderr, wrong.stderr.decode()
        right = subprocess.run(
            view_command(relay.url(view_url(server, STREAM_PASSPHRASE))),
            capture_output=True, timeout=30,
        )  # fmt: skip
        assert right.returncode != 0
    # On the wire: the first mistake is refused at once, then the wait doubles (0.3 s, 0.6 s);
    # the right passphrase is not made to wait (its stream is just not live).
    assert relay.reject_codes() == [10, 10, 10, 1404]
    free, first, second, right_away = relay.refusal_delays()
    assert first >= 0.3 and second >= 0.6, relay.refusal_delays()
    assert max(free, right_away) < first, relay.refusal_delays()
    assert server.log.count("refused: wrong passphrase") == 3
