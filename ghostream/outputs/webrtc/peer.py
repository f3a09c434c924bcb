"""What every WebRTC session (a WHEP viewer, a WHIP publisher) does with its peer connection."""

from __future__ import annotations

import trio
import trio_asyncio
from aiortc import RTCPeerConnection
from aiortc import sdp as aiortc_sdp

from ghostream.outputs.webrtc.errors import WebRtcError


def offered_kinds(offer_sdp: str) -> set[str]:
    """The media kinds an offer holds; WebRtcError 400 when it is not usable SDP."""
    try:
        parsed = aiortc_sdp.SessionDescription.parse(offer_sdp)
    except Exception as exc:  # aiortc's parser also asserts on malformed input
        raise WebRtcError(400, f"malformed SDP offer: {exc or type(exc).__name__}") from exc
    if not parsed.media or any(not media.rtp.codecs for media in parsed.media):
        raise WebRtcError(400, "malformed SDP offer: a media section lists no codec")
    return {media.kind for media in parsed.media}


async def close_peer(pc: RTCPeerConnection) -> None:
    """Close a peer connection even while the session is being cancelled, but never hang."""
    with trio.CancelScope(shield=True), trio.move_on_after(2):
        await trio_asyncio.aio_as_trio(pc.close)()
