"""WebRTC: playback (WHEP) and publishing (WHIP) sessions, codecs, shared ICE ports and payloads."""

from ghostream.outputs.webrtc.errors import WebRtcError
from ghostream.outputs.webrtc.service import WebRtcOutput

__all__ = ["WebRtcError", "WebRtcOutput"]
