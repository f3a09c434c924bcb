"""WebRTC: playback (WHEP) and publishing (WHIP) sessions, codecs, shared ICE ports and payloads."""

from ghostream.webrtc.refusals import WebRtcError
from ghostream.webrtc.sessions import WebRtcOutput

__all__ = ["WebRtcError", "WebRtcOutput"]
