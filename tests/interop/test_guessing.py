"""Guessing a stream key is slow: wrong passwords from one host are refused ever later.

The attacker is our own SRT caller, a fresh UDP socket (a fresh source
port) per try; the publisher with the right password calls from another
loopback address.  Delays are scaled down (10 ms doubling, 1 s cap)
so that the test takes seconds; the server's defaults are 1 s and 60 s.
"""

from __future__ import annotations

import bcrypt
import pytest
import trio
from harness.server_process import ServerProcess
from harness.udp_relay import CONCLUSION, UdpRelay

from ghostream.srt.endpoint import SrtRejected, connect

BASE_DELAY = 0.010
MAX_DELAY = 1.0
GUESSES = 20


@pytest.fixture
def server(ghostream_server) -> ServerProcess:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    return ghostream_server(
        {
            "auth": {
                "basic": {"credentials": {"alice": hashed}},
                "failureDelay": int(BASE_DELAY * 1000),
                "maxFailureDelay": int(MAX_DELAY * 1000),
            }
        }
    )


async def guess(server: ServerProcess, password: str, port: int | None = None) -> float:
    """Seconds until the server refuses a publish of `alice` with `password` (sent to `port`)."""
    start = trio.current_time()
    with pytest.raises(SrtRejected) as refused:
        async with connect("127.0.0.1", port or server.srt_port, streamid=f"alice:{password}"):
            pass
    assert refused.value.code == 1403
    return trim(trio.current_time() - start)


def trim(seconds: float) -> float:
    return round(seconds, 3)


async def test_wrong_passwords_wait_longer_and_longer(server) -> None:
    waited = [await guess(server, f"wrong{n}") for n in range(GUESSES - 1)]
    # Free first failure, then 10 ms doubling: 0, .01, .02, ... .64, then the 1 s cap.
    expected = [min(BASE_DELAY * 2 ** (n - 1), MAX_DELAY) if n else 0.0 for n in range(GUESSES)]
    for n, (got, least) in enumerate(zip(waited, expected, strict=False)):
        assert least <= got, (n, waited)
    # Capped: the last waits stop doubling (uncapped, the last five would span 16 times).
    assert max(waited[-5:]) < 2 * min(waited[-5:]), waited

    # While the last guess waits out its second, the right password from another host gets in.
    times: dict[str, float] = {}

    async def last_guess(relay: UdpRelay) -> None:
        await guess(server, "wrong-again", relay.address[1])
        times["refused"] = trio.current_time()

    with UdpRelay(("127.0.0.1", server.srt_port)) as relay:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(last_guess, relay)
            # Once the guess is with the server (its conclusion handshake went through).
            with trio.fail_after(10):
                while not any(
                    not back and kind == CONCLUSION for _, back, kind in relay.handshakes
                ):
                    await trio.sleep(0.01)
            async with connect(
                "127.0.0.1", server.srt_port, streamid="alice:s3cret", local_host="127.0.0.2"
            ):
                times["accepted"] = trio.current_time()
    assert times["accepted"] < times["refused"]
    assert "s3cret" not in server.log and "wrong-again" not in server.log
