"""WebRTC playback over WHEP: sessions, the codecs they answer with, and their ICE ports."""

from ghostream.outputs.webrtc.errors import WebRtcError
from ghostream.outputs.webrtc.service import WebRtcOutput

__all__ = ["WebRtcError", "WebRtcOutput"]
