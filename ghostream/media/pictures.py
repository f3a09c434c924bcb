"""Small PyAV helpers shared by the outputs that build containers from demuxed packets."""

from __future__ import annotations

import av

from ghostream.media.demux import MediaPacket


def picture_size(keyframe: MediaPacket) -> tuple[int, int]:
    """Decode one keyframe: muxers and scalers need the picture size before the first frame."""
    decoder = av.CodecContext.create(keyframe.track.codec, "r")
    decoder.extradata = keyframe.track.extradata
    try:
        frames = decoder.decode(av.Packet(keyframe.data)) + decoder.decode(None)
    except av.error.FFmpegError:
        frames = []
    return (frames[0].width, frames[0].height) if frames else (0, 0)
