"""WebRTC playback over WHEP: sessions, their codecs, ICE on shared ports, shared RTP payloads."""

from ghostream.outputs.webrtc.errors import WebRtcError
from ghostream.outputs.webrtc.service import WebRtcOutput

__all__ = ["WebRtcError", "WebRtcOutput"]
