"""LL-HLS output: CMAF parts of the broker's demuxed frames, low-latency playlists, HTTP answers.

- `fmp4`: ISO-BMFF boxes (init segment, one moof+mdat per part), written by hand;
- `bitstream`: what the init segment needs from H.264/HEVC parameter sets;
- `timeline`: cuts packets into parts and segments, keeps a bounded window;
- `playlist`: media and multivariant playlists (RFC 8216bis), pure text;
- `service`: one packager task per watched stream, blocking reloads, the answers.
"""

from ghostream.outputs.llhls.packager import HlsAnswer, LlHls

__all__ = ["HlsAnswer", "LlHls"]
