"""A publisher's VP8 video as H.264, for every output that carries MPEG-TS.

A browser without H.264 (Firefox without OpenH264) publishes VP8 over WHIP.
SRT viewers, LL-HLS, forwarding and variants all take H.264, so the publish
is re-encoded once, as it arrives: libx264 with low-latency settings, no
B-frames (constrained baseline, so WebRTC viewers get it as it is), a
keyframe wherever the publisher sent one, so a keyframe asked of the
publisher (PLI) is a keyframe for the viewers too.  Bytes in, Annex B
access units out; used from one worker thread.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import av

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
# Bits per pixel per frame of the re-encode (as for the WebRTC copy), and the most.
BITS_PER_PIXEL = 0.1
MAX_KBPS = 6000
RATE = 30


def vp8_keyframe(frame: bytes) -> bool:
    """Whether a VP8 frame is a keyframe: bit 0 of its frame tag is 0 (RFC 6386 §9.1)."""
    return bool(frame) and not frame[0] & 1


class H264Reencoder:
    """Decodes a publisher's frames (`codec`, e.g. "vp8") and encodes them as H.264."""

    def __init__(self, codec: str) -> None:
        self._decoder = av.CodecContext.create(codec, "r")
        self._encoder: av.VideoCodecContext | None = None

    def encode(self, data: bytes, pts: int, keyframe: bool) -> list[tuple[bytes, int, bool]]:
        """The access units (Annex B, with parameter sets on keyframes), pts, keyframe flags."""
        try:
            frames = self._decoder.decode(av.Packet(data))
        except av.error.FFmpegError as exc:
            log.debug("undecodable published frame skipped: %s", exc)
            return []
        out = []
        for frame in frames:
            encoder = self._encoder_for(frame)
            picture = frame.reformat(width=encoder.width, height=encoder.height, format="yuv420p")
            picture.pts, picture.time_base = pts, TIME_BASE
            picture.pict_type = av.video.frame.PictureType.I if keyframe else 0
            out += [(bytes(p), p.pts, p.is_keyframe) for p in encoder.encode(picture)]
        return out

    def _encoder_for(self, frame: av.VideoFrame) -> av.VideoCodecContext:
        """The encoder, made anew when the publisher changes its picture size."""
        width, height = frame.width // 2 * 2, frame.height // 2 * 2
        encoder = self._encoder
        if encoder is not None and (encoder.width, encoder.height) == (width, height):
            return encoder
        kbps = min(MAX_KBPS, round(width * height * RATE * BITS_PER_PIXEL / 1000))
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.time_base = TIME_BASE
        encoder.framerate = Fraction(RATE)
        encoder.bit_rate = kbps * 1000
        encoder.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "profile": "baseline",
            "forced-idr": "1",
            "x264-params": f"keyint=600:scenecut=0:vbv-maxrate={kbps}:vbv-bufsize={kbps}",
        }
        self._encoder = encoder
        return encoder
