"""What browsers can take over WebRTC: H.264 profiles in SDP, and what rules passthrough out.

Video is passed through when browsers can decode it as it is; a stream with
B-frames (browsers' WebRTC decoders do not reorder frames), HEVC, 10-bit or
4:2:2 video, or a profile the offer does not list gets a re-encoded copy
instead (`webrtc.transcode`): H.264 constrained baseline, or VP8 for a
browser that offers no H.264 at all.  `Obstacle` says why, with what the streamer
can change in OBS to be passed through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc import RTCRtpCodecParameters
from aiortc import codecs as aiortc_codecs
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from ghostream.media.demux import Track
from ghostream.media.properties import VideoProperties
from ghostream.webrtc.refusals import WebRtcError

# H.264 profiles (profile_idc + constraint byte) a browser may offer, most capable first.
H264_PROFILES = ("64001f", "4d001f", "f4001f", "42e01f", "42001f")
# What a publisher is asked to send, first choice first: no B-frames, decodable by every viewer.
PUBLISH_PROFILES = ("constrained-baseline", "baseline", "main", "high")


def _offer_h264_profiles() -> None:
    """Let aiortc answer every H.264 profile a browser offers, not only baseline.

    The video is passed through, so the answer must name the profile the
    stream really has; aiortc's own table only lists constrained baseline.
    """
    table = aiortc_codecs.CODECS["video"]
    known = {c.parameters.get("profile-level-id") for c in table if c.mimeType == "video/H264"}
    next_type = max(c.payloadType for c in table) + 1
    for profile in H264_PROFILES:
        if profile in known:
            continue
        parameters = {
            "level-asymmetry-allowed": "1",
            "packetization-mode": "1",
            "profile-level-id": profile,
        }
        for mime, payload_type, params in (
            ("video/H264", next_type, parameters),
            ("video/rtx", next_type + 1, {"apt": next_type}),
        ):
            table.append(
                RTCRtpCodecParameters(
                    mimeType=mime, clockRate=90000, payloadType=payload_type, parameters=params
                )
            )
        next_type += 2


_offer_h264_profiles()


def h264_profile(profile_level_id: str) -> str:
    """The profile a profile-level-id names (RFC 6184), ignoring its level."""
    idc, flags = int(profile_level_id[:2], 16), int(profile_level_id[2:4], 16)
    if idc == 66:
        return "constrained-baseline" if flags & 0x40 else "baseline"
    if idc == 77:
        return "constrained-baseline" if flags & 0x80 and flags & 0x40 else "main"
    return {100: "high", 244: "high-444"}.get(idc, f"idc-{idc}")


# For a stream of a profile, the profiles whose decoders also decode it, best first.
DECODABLE_AS = {
    "constrained-baseline": ("constrained-baseline", "baseline", "main", "high", "high-444"),
    "baseline": ("baseline", "constrained-baseline", "main", "high", "high-444"),
    "main": ("main", "high", "high-444"),
    "high": ("high", "high-444", "main"),
}


@dataclass(frozen=True, slots=True)
class Obstacle:
    """Why browsers cannot take a stream's video as it is, and what would let them."""

    reason: str
    fix: str


def passthrough_obstacle(codec: str, video: VideoProperties | None) -> Obstacle | None:
    """What keeps every browser from decoding this video as it is, whatever it offers."""
    if codec != "h264":
        return Obstacle(
            {"hevc": "HEVC"}.get(codec, codec),
            "set OBS → Output → Video Encoder to x264 or an H.264 hardware encoder",
        )
    if video is None:
        return None
    if video.chroma != "4:2:0" or video.bit_depth != 8:
        return Obstacle(
            f"{video.chroma} {video.bit_depth}-bit video",
            "set OBS → Settings → Advanced → Color Format: NV12 (8-bit 4:2:0)",
        )
    if video.b_frames:
        return Obstacle("B-frames", "set OBS → Output → Tune: zerolatency, or B-frames 0")
    return None


def offered_h264_profiles(offer_sdp: str) -> dict[str, str]:
    """Profile name → profile-level-id of the usable H.264 codecs an offer lists."""
    offered: dict[str, str] = {}
    for payload_type, line in re.findall(r"a=fmtp:(\d+) (.*)", offer_sdp):
        found = re.search(r"profile-level-id=([0-9a-fA-F]{6})", line)
        if found and 96 <= int(payload_type) <= 127 and "packetization-mode=1" in line:
            offered.setdefault(h264_profile(found.group(1)), found.group(1))
    return offered


def _answer_profile(track: Track, offered: dict[str, str]) -> str | None:
    actual = h264_profile(track.h264_profile_level_id or "42e01f")
    # Main is what most decoders of anything richer will take, so it is the last resort.
    return next((p for p in (*DECODABLE_AS.get(actual, ()), "main") if p in offered), None)


def offer_carries(track: Track, offer_sdp: str) -> bool:
    """Whether the offer lists an H.264 profile this stream's video can be sent as."""
    return _answer_profile(track, offered_h264_profiles(offer_sdp)) is not None


def h264_preferences(track: Track, offer_sdp: str) -> list:
    """One H.264 codec to answer with: the stream's own profile if offered, else the closest.

    Only one codec is answered, and only one whose payload type the offer
    gives in the dynamic range aiortc keeps, so no two codecs share a type.
    """
    chosen = _answer_profile(track, offered_h264_profiles(offer_sdp))
    if chosen is None:
        actual = h264_profile(track.h264_profile_level_id or "42e01f")
        raise WebRtcError(406, f"the offer has no H.264 profile that can carry {actual} video")
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    h264 = next(
        c
        for c in capabilities
        if c.mimeType == "video/H264" and h264_profile(c.parameters["profile-level-id"]) == chosen
    )
    return [h264, *(c for c in capabilities if c.mimeType == "video/rtx")]


def offers_vp8(offer_sdp: str) -> bool:
    """Whether the offer lists VP8, which the copy for browsers without H.264 is made in."""
    return re.search(r"a=rtpmap:\d+ VP8/90000", offer_sdp, re.IGNORECASE) is not None


def vp8_preferences() -> list:
    """VP8 (and its retransmissions) as the one video codec to answer with."""
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in capabilities if c.mimeType in ("video/VP8", "video/rtx")]


def publish_preferences(kind: str, vp8: bool = False) -> list:
    """The codecs a WHIP publisher may send: H.264 (simplest profile first), VP8 from a
    publisher that offers no H.264 (re-encoded to H.264 as it arrives), Opus.

    H.264 and Opus are passed through to viewers.
    """
    capabilities = RTCRtpReceiver.getCapabilities(kind).codecs
    if kind == "audio":
        return [c for c in capabilities if c.mimeType == "audio/opus"]
    rtx = [c for c in capabilities if c.mimeType == "video/rtx"]
    if vp8:
        return [*(c for c in capabilities if c.mimeType == "video/VP8"), *rtx]
    h264 = [
        c
        for c in capabilities
        if c.mimeType == "video/H264" and c.parameters.get("packetization-mode") == "1"
    ]
    rank = {name: index for index, name in enumerate(PUBLISH_PROFILES)}
    h264.sort(key=lambda c: rank.get(h264_profile(c.parameters["profile-level-id"]), len(rank)))
    return [*h264, *rtx]
