"""RTP payloads made once per stream, and aiortc senders that send them as they are."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import trio
import trio_asyncio
from aiortc import RTCPeerConnection

from ghostream.media.demux import MediaPacket, Track
from ghostream.webrtc import internals
from ghostream.webrtc.packetize import SharedPayloads
from ghostream.webrtc.tracks import PacketTrack, RtpFrame

SPS = b"\x67\x42\xc0\x1e" + bytes(8)
PPS = b"\x68\xce\x3c\x80"
IDR = b"\x65" + bytes(range(256)) * 12


def access_unit() -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in (SPS, PPS, IDR))


def test_an_access_unit_becomes_stap_a_and_fu_a_payloads() -> None:
    payloads = internals.h264_payloads(access_unit())
    stap, *fragments = payloads
    assert stap[0] & 0x1F == 24  # STAP-A: the parameter sets together
    assert stap[1:] == b"".join(len(n).to_bytes(2, "big") + n for n in (SPS, PPS))
    assert all(p[0] & 0x1F == 28 for p in fragments) and len(fragments) > 1  # FU-A
    assert fragments[0][1] & 0x80 and fragments[-1][1] & 0x40  # start, end
    assert all(len(p) <= 1300 for p in payloads)
    assert bytes([IDR[0]]) + b"".join(p[2:] for p in fragments) == IDR


def test_a_vp8_frame_becomes_payloads_with_rfc7741_descriptors() -> None:
    frame = bytes(range(256)) * 12
    payloads = internals.vp8_payloads(frame, 0x1234)
    assert len(payloads) > 1 and all(len(p) <= 1300 for p in payloads)
    # X and S (start of partition) on the first, X alone after; a 15-bit picture id.
    assert [p[0] for p in payloads] == [0x90] + [0x80] * (len(payloads) - 1)
    assert all(p[1] == 0x80 and p[2:4] == b"\x92\x34" for p in payloads)
    assert b"".join(p[4:] for p in payloads) == frame


def test_every_viewer_of_a_packet_shares_one_packetization() -> None:
    track = Track(kind="video", codec="h264", extradata=b"")
    packet = MediaPacket(track, access_unit(), 0, 0, True)
    shared = SharedPayloads(capacity=2)
    first = shared.of(packet)
    assert all(shared.of(packet) is first for _ in range(50)) and shared.made == 1
    # Another packet with the same bytes is another access unit.
    assert shared.of(MediaPacket(track, access_unit(), 3600, 3600, True)) == first
    assert shared.made == 2
    for pts in range(3):
        shared.of(MediaPacket(track, access_unit(), pts, pts, False))
    shared.of(packet)  # forgotten: beyond the capacity
    assert shared.made == 6


def test_the_fast_clock_tells_the_time_aiortc_would() -> None:
    from aiortc import clock

    slow = clock.datetime_to_ntp(clock.current_datetime())
    fast = internals._ntp_now()
    assert abs(fast - slow) < (1 << 32) // 100  # 10 ms
    slow_ms = int((clock.current_datetime() - clock.NTP_EPOCH).total_seconds() * 1000)
    assert abs(internals._ms_now() - slow_ms) < 10


def opus_packet() -> bytes:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "stereo", "s16"
    encoder.time_base = Fraction(1, 48000)
    frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
    frame.planes[0].update(bytes(frame.planes[0].buffer_size))
    frame.sample_rate, frame.pts = 48000, 0
    return next(bytes(p) for f in (frame, None) for p in encoder.encode(f))


def test_a_prepacketized_sender_sends_the_payloads_it_is_given() -> None:
    payload = opus_packet()

    async def main() -> None:
        server, browser = RTCPeerConnection(), RTCPeerConnection()
        audio = PacketTrack("audio")
        internals.send_prepacketized(server.addTransceiver(audio, direction="sendonly").sender)
        await server.setLocalDescription(await server.createOffer())
        await browser.setRemoteDescription(server.localDescription)
        await browser.setLocalDescription(await browser.createAnswer())
        await server.setRemoteDescription(browser.localDescription)
        (receiver,) = browser.getReceivers()
        frame = RtpFrame([payload], 0, len(payload))
        async with asyncio.timeout(30):
            received = 0
            while received < 5:
                audio.offer(frame, True)
                frame = RtpFrame([payload], frame.timestamp + 960, len(payload))
                await asyncio.sleep(0.02)
                stats = await receiver.getStats()
                received = sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp")
            decoded = await receiver.track.recv()
        assert decoded.sample_rate == 48000 and audio.sent >= 5 * len(payload)
        for pc in (server, browser):
            await pc.close()

    async def in_loop() -> None:
        async with trio_asyncio.open_loop():
            await trio_asyncio.aio_as_trio(main)()

    trio.run(in_loop)
