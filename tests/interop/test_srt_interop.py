"""Ghostream's SRT stack against libsrt peers: ffmpeg and srt-live-transmit.

Each test moves a real MPEG-TS file (made by ffmpeg at test time) and checks
it arrives byte for byte, directly (at the default 120 ms latency) and through
a seeded lossy relay (5% loss with reordering), in clear and encrypted.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from harness.media import signal_source, write_ts
from harness.udp_relay import UdpRelay

from ghostream.srt.endpoint import Reject, SrtClosed, SrtListener, SrtRejected, SrtSocket, connect
from ghostream.srt.packet import RejectReason

PASSPHRASE = "correct horse battery"
CHUNK = 1316
# 2 ms per 1316-byte packet is about 5 Mbit/s: a realistic live rate.
PACE = 0.002
# MPEG-TS null packets: what a sender adds after the data so that a peer that
# holds back a partial read buffer (srt-live-transmit does) lets the data go.
FILLER = (b"\x47\x1f\xff\x10" + bytes(184)) * 7
IMPAIRMENTS = {
    "direct": None,
    "lossy": {"loss": 0.05, "reorder": 0.05, "duplicate": 0.01, "delay_ms": 5, "seed": 7},
}
# What the lossy runs check is loss recovery.  The relay is a thread of this
# process, so a busy 2-core runner that stalls the process for ~100 ms stalls
# "the network" too, and 120 ms would no longer leave room for a NAK and its
# retransmission; a longer latency keeps the check about recovery alone.
RECOVERY_LATENCY_MS = 500
MODES = [
    pytest.param(impairment, passphrase, id=f"{impairment}-{'aes' if passphrase else 'clear'}")
    for impairment in IMPAIRMENTS
    for passphrase in ("", PASSPHRASE)
]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seconds of small H.264 in MPEG-TS, about 70 kB."""
    path = tmp_path_factory.mktemp("media") / "source.ts"
    write_ts(path, 2, signal_source(preset=None, audio=None))
    return path


def through(impairment: str, stack: ExitStack, port: int) -> int:
    """The port a peer should call: ours, or a relay in front of it."""
    settings = IMPAIRMENTS[impairment]
    if settings is None:
        return port
    relay = stack.enter_context(UdpRelay(("127.0.0.1", port), **settings))
    return relay.address[1]


def latency(impairment: str, program: str) -> dict[str, str]:
    """The latency option for a peer program: ffmpeg counts microseconds, libsrt's tools ms."""
    if IMPAIRMENTS[impairment] is None:
        return {}
    scale = 1000 if program == "ffmpeg" else 1
    return {"latency": str(RECOVERY_LATENCY_MS * scale)}


def srt_url(port: int, passphrase: str, **params: str) -> str:
    query = dict(params)
    if passphrase:
        query["passphrase"] = passphrase
    text = "&".join(f"{key}={value}" for key, value in query.items())
    return f"srt://127.0.0.1:{port}" + (f"?{text}" if text else "")


class Recorder:
    """Accepts one connection per stream id and records what it sends."""

    def __init__(self, reject: Callable[[str], int | None] = lambda stream_id: None) -> None:
        self.reject = reject
        self.received = bytearray()
        self.stream_ids: list[str] = []
        self.closed = trio.Event()

    async def accept(self, request):
        self.stream_ids.append(request.stream_id)
        code = self.reject(request.stream_id)
        if code is not None:
            return Reject(code)
        return self.handle

    async def handle(self, sock: SrtSocket) -> None:
        try:
            while True:
                self.received.extend(await sock.receive())
        except SrtClosed:
            self.closed.set()


@asynccontextmanager
async def running(command: list[str], **options) -> AsyncIterator[trio.Process]:
    """A peer program that is stopped, whatever happens, when the block ends."""
    process = await trio.lowlevel.open_process(command, **options)
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with trio.move_on_after(5):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def frame_hashes(framemd5: bytes) -> list[bytes]:
    return [line.split(b",")[-1].strip() for line in framemd5.splitlines() if line[:1] != b"#"]


async def wait_for_output(stream: trio.abc.ReceiveStream, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"peer ended before printing {marker!r}: {seen!r}")
        seen += chunk
    return seen


async def start_listener(nursery: trio.Nursery, accept, passphrase: str = "") -> SrtListener:
    listener = SrtListener("127.0.0.1", 0, accept, passphrase=passphrase)
    await nursery.start(listener.serve)
    return listener


async def send_paced(sock: SrtSocket, data: bytes) -> None:
    for offset in range(0, len(data), CHUNK):
        await sock.send(data[offset : offset + CHUNK])
        await trio.sleep(PACE)


@pytest.mark.parametrize(("impairment", "passphrase"), MODES)
async def test_ffmpeg_publishes_to_our_listener(
    media: Path, impairment: str, passphrase: str, require_program
) -> None:
    """ffmpeg relays the file's bytes unchanged (as raw 8-bit audio at 5 Mbit/s).

    Its input stays open until everything arrived: live SRT drops what is
    still unacknowledged when the sender closes, so the test must not end the
    stream before the retransmissions are done.
    """
    ffmpeg = require_program("ffmpeg")
    recorder = Recorder()
    data = media.read_bytes()
    # ffmpeg reads raw input in 4096-byte blocks and holds a partial one until EOF.
    data += bytes(-len(data) % 4096)
    with ExitStack() as stack, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            listener = await start_listener(nursery, recorder.accept, passphrase)
            port = through(impairment, stack, listener.address[1])
            url = srt_url(
                port, passphrase, streamid="cam", pkt_size="1316", **latency(impairment, "ffmpeg")
            )
            async with running(
                [
                    ffmpeg, "-hide_banner", "-loglevel", "error", "-re",
                    "-probesize", "32", "-analyzeduration", "0",
                    "-f", "u8", "-ar", "625000", "-ac", "1", "-i", "pipe:0",
                    "-c", "copy", "-f", "u8", url,
                ],
                stdin=subprocess.PIPE,
            ) as process:  # fmt: skip
                assert process.stdin is not None
                await process.stdin.send_all(data)
                with trio.fail_after(15):
                    while len(recorder.received) < len(data):
                        await trio.sleep(0.05)
                await process.stdin.aclose()
            await recorder.closed.wait()
            nursery.cancel_scope.cancel()
    assert recorder.stream_ids == ["cam"]
    assert bytes(recorder.received) == data


@pytest.mark.parametrize(("impairment", "passphrase"), MODES)
async def test_srt_live_transmit_publishes_to_our_listener(
    media: Path, impairment: str, passphrase: str, require_program
) -> None:
    slt = require_program("srt-live-transmit")
    recorder = Recorder()
    data = media.read_bytes()
    with ExitStack() as stack, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            listener = await start_listener(nursery, recorder.accept, passphrase)
            port = through(impairment, stack, listener.address[1])
            url = srt_url(port, passphrase, streamid="live", **latency(impairment, "slt"))
            async with running(
                [slt, "-chunk:1316", "file://con", url],
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ) as process:
                # What it reads before its connection is up, it throws away.
                await wait_for_output(process.stderr, b"connected")
                assert process.stdin is not None
                for offset in range(0, len(data), CHUNK):
                    await process.stdin.send_all(data[offset : offset + CHUNK])
                    await trio.sleep(PACE)
                with trio.fail_after(10):
                    while len(recorder.received) < len(data):
                        await process.stdin.send_all(FILLER)
                        await trio.sleep(PACE)
            nursery.cancel_scope.cancel()
    assert bytes(recorder.received[: len(data)]) == data
    assert set(recorder.received[len(data) :]) <= set(FILLER)


@pytest.mark.parametrize(("impairment", "passphrase"), MODES)
async def test_our_caller_publishes_to_srt_live_transmit(
    media: Path,
    tmp_path: Path,
    impairment: str,
    passphrase: str,
    require_program,
    free_udp_port_factory,
) -> None:
    slt = require_program("srt-live-transmit")
    data = media.read_bytes()
    output = tmp_path / "received.ts"
    port = free_udp_port_factory()
    with ExitStack() as stack, trio.fail_after(30), output.open("wb") as sink:
        url = srt_url(port, passphrase, mode="listener", **latency(impairment, "slt"))
        command = [slt, "-q", url, "file://con"]
        async with running(command, stdout=sink):
            target = through(impairment, stack, port)
            # No wait for the peer to bind: the caller resends its handshake until answered.
            async with connect("127.0.0.1", target, passphrase=passphrase) as sock:
                await send_paced(sock, data)
                with trio.fail_after(10):
                    while output.stat().st_size < len(data):
                        await send_paced(sock, FILLER)
    received = output.read_bytes()
    assert received[: len(data)] == data
    assert set(received[len(data) :]) <= set(FILLER)


@pytest.mark.parametrize(("impairment", "passphrase"), MODES)
async def test_srt_live_transmit_and_ffmpeg_read_from_our_listener(
    media: Path, tmp_path: Path, impairment: str, passphrase: str, require_program
) -> None:
    slt = require_program("srt-live-transmit")
    ffmpeg = require_program("ffmpeg")
    data = media.read_bytes()
    output = tmp_path / "received.ts"
    expected = frame_hashes(
        subprocess.run(
            [ffmpeg, "-loglevel", "error", "-i", str(media), "-map", "0:v", "-f", "framemd5", "-"],
            capture_output=True,
            check=True,
        ).stdout
    )

    async def serve(sock: SrtSocket) -> None:
        # The file in a loop, as a live source, until the reader hangs up.
        while True:
            await send_paced(sock, data)

    async def accept(request):
        return serve

    with ExitStack() as stack, trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            listener = await start_listener(nursery, accept, passphrase)
            port = through(impairment, stack, listener.address[1])
            with output.open("wb") as sink:
                url = srt_url(port, passphrase, streamid="watch", **latency(impairment, "slt"))
                command = [slt, "-q", url, "file://con"]
                async with running(command, stdout=sink):
                    with trio.fail_after(15):
                        while output.stat().st_size < len(data):
                            await trio.sleep(0.05)
            watch = srt_url(port, passphrase, streamid="watch", **latency(impairment, "ffmpeg"))
            decoded = await trio.run_process(
                [
                    ffmpeg, "-hide_banner", "-loglevel", "error",
                    "-i", watch,
                    "-map", "0:v", "-frames:v", str(len(expected)), "-f", "framemd5", "-",
                ],
                capture_stdout=True,
            )  # fmt: skip
            nursery.cancel_scope.cancel()
    received = output.read_bytes()
    assert received[: len(data)] == data
    # Every frame, decoded to the same pixels, in order.
    assert frame_hashes(decoded.stdout) == expected


async def test_rejected_stream_id_makes_ffmpeg_fail_with_a_rejection(require_program) -> None:
    ffmpeg = require_program("ffmpeg")
    recorder = Recorder(reject=lambda stream_id: RejectReason.FORBIDDEN)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listener = await start_listener(nursery, recorder.accept)
            result = await trio.run_process(
                [
                    ffmpeg, "-hide_banner", "-i",
                    srt_url(listener.address[1], "", streamid="nobody"), "-f", "null", "-",
                ],
                check=False, capture_stderr=True,
            )  # fmt: skip
            nursery.cancel_scope.cancel()
    assert result.returncode != 0
    # libsrt names the reason, which it only knows from our rejection (not a timeout).
    assert b"Application-defined rejection reason" in result.stderr
    assert recorder.stream_ids == ["nobody"]


async def test_wrong_passphrase_is_rejected_cleanly(require_program) -> None:
    ffmpeg = require_program("ffmpeg")
    recorder = Recorder()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listener = await start_listener(nursery, recorder.accept, PASSPHRASE)
            result = await trio.run_process(
                [
                    ffmpeg, "-hide_banner", "-i",
                    srt_url(listener.address[1], "not the passphrase", streamid="x"),
                    "-f", "null", "-",
                ],
                check=False, capture_stderr=True,
            )  # fmt: skip
            nursery.cancel_scope.cancel()
    assert result.returncode != 0
    assert b"Incorrect passphrase" in result.stderr
    assert recorder.stream_ids == []


async def test_our_caller_reports_rejection_from_srt_live_transmit(
    require_program, free_udp_port_factory
) -> None:
    slt = require_program("srt-live-transmit")
    port = free_udp_port_factory()
    command = [slt, "-q", srt_url(port, PASSPHRASE, mode="listener"), "file://con"]
    async with running(command, stdout=subprocess.DEVNULL):
        with trio.fail_after(10), pytest.raises(SrtRejected) as rejected:
            async with connect("127.0.0.1", port, passphrase="a wrong passphrase"):
                pass
    assert rejected.value.code == RejectReason.BADSECRET
