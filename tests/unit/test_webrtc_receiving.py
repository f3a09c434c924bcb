"""What WHIP ingest relies on in aiortc, and the frame assembly that replaces its buffering."""

from __future__ import annotations

import asyncio

from aiortc import (
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
)
from aiortc import rtcrtpreceiver as aiortc_receiver
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import RtpPacket
from harness.aio import run_asyncio

from ghostream.webrtc import internals


def rtp(sequence: int, timestamp: int, data: bytes, *, marker: bool = False) -> RtpPacket:
    packet = RtpPacket(payload_type=96, sequence_number=sequence, timestamp=timestamp)
    packet.marker = int(marker)
    packet._data = data
    return packet


def test_a_video_frame_is_handed_over_when_its_last_packet_comes() -> None:
    frames = internals.VideoFrames()
    assert frames.add(rtp(65534, 3000, b"a")) == (False, None)
    pli, frame = frames.add(rtp(65535, 3000, b"b", marker=True))
    assert frame is not None and (frame.data, frame.timestamp) == (b"ab", 3000)
    # The next frame arrives out of order: complete only once its first packet is in.
    assert frames.add(rtp(1, 6000, b"d", marker=True))[1] is None
    frame = frames.add(rtp(0, 6000, b"c"))[1]
    assert frame is not None and frame.data == b"cd"


def test_a_frame_with_a_missing_packet_waits() -> None:
    frames = internals.VideoFrames()
    frames.add(rtp(10, 3000, b"a", marker=True))
    assert frames.add(rtp(12, 6000, b"c", marker=True))[1] is None


def test_audio_packets_are_frames_and_late_ones_are_dropped() -> None:
    frames = internals.AudioFrames()
    assert frames.add(rtp(65535, 960, b"x"))[1].data == b"x"
    assert frames.add(rtp(1, 2880, b"z"))[1].timestamp == 2880
    assert frames.add(rtp(0, 1920, b"y"))[1] is None


def test_a_marked_receiver_hands_over_each_frame_undecoded_at_its_last_packet() -> None:
    """Packets through aiortc's own receiver: out comes the encoded frame, as soon as complete.

    The NAL units are not a picture any decoder could make: only a pass-through
    hands them over, and only frame assembly that does not wait for the next
    frame hands over the first one (no second frame is ever sent).
    """
    units = [b"\x65" + bytes(range(40)), b"\x65" + bytes(range(40, 90))]
    codec = RTCRtpCodecParameters("video/H264", clockRate=90000, payloadType=96)

    async def main() -> None:
        # aiortc needs a running loop; the server gives it trio-asyncio's.
        pc = RTCPeerConnection()
        transceiver = pc.addTransceiver("video", direction="recvonly")
        transceiver._codecs = [codec]
        internals.receive_encoded(transceiver)
        receiver = transceiver.receiver
        receiver._track = RemoteStreamTrack("video")
        await receiver.receive(RTCRtpReceiveParameters(codecs=[codec]))
        try:
            for sequence, unit in enumerate(units):
                packet = RtpPacket(payload_type=96, sequence_number=sequence, timestamp=3000)
                packet.marker = int(sequence == len(units) - 1)
                packet.payload = unit
                await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
            frame = await asyncio.wait_for(receiver.track.recv(), 10)
            assert frame.data == b"".join(b"\x00\x00\x00\x01" + unit for unit in units)
        finally:
            await receiver.stop()
            await pc.close()
        # Any other receiver (a test's own browser stand-in) still decodes.
        other = RTCRtpCodecParameters("video/H264", clockRate=90000, payloadType=96)
        assert type(aiortc_receiver.get_decoder(other)).__name__ == "H264Decoder"
        assert callable(RTCRtpReceiver._send_rtcp_pli)

    run_asyncio(main)
