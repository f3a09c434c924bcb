"""What every WebRTC session (a WHEP viewer, a WHIP publisher) reads from its offer."""

from __future__ import annotations

from aiortc import sdp as aiortc_sdp

from ghostream.webrtc.refusals import WebRtcError


def offered_kinds(offer_sdp: str) -> set[str]:
    """The media kinds an offer holds; WebRtcError 400 when it is not usable SDP."""
    try:
        parsed = aiortc_sdp.SessionDescription.parse(offer_sdp)
    except Exception as exc:  # aiortc's parser also asserts on malformed input
        raise WebRtcError(400, f"malformed SDP offer: {exc or type(exc).__name__}") from exc
    if not parsed.media or any(not media.rtp.codecs for media in parsed.media):
        raise WebRtcError(400, "malformed SDP offer: a media section lists no codec")
    return {media.kind for media in parsed.media}
