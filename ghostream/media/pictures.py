"""Small PyAV helpers shared by the outputs that build containers from demuxed packets."""

from __future__ import annotations

from fractions import Fraction

import av

from ghostream.media.demux import MediaPacket
from ghostream.media.errors import MalformedStream


def picture_size(keyframe: MediaPacket) -> tuple[int, int]:
    """Decode one keyframe: muxers and scalers need the picture size before the first frame."""
    decoder = av.CodecContext.create(keyframe.track.codec, "r")
    decoder.extradata = keyframe.track.extradata
    try:
        frames = decoder.decode(av.Packet(keyframe.data)) + decoder.decode(None)
    except av.error.FFmpegError:
        frames = []
    return (frames[0].width, frames[0].height) if frames else (0, 0)


def keyframe_jpeg(keyframe: MediaPacket, width: int = 0) -> bytes:
    """One keyframe as a JPEG, at its own size or scaled to `width` (thumbnails, previews).

    MalformedStream when the keyframe does not decode.
    """
    decoder = av.CodecContext.create(keyframe.track.codec, "r")
    decoder.extradata = keyframe.track.extradata
    try:
        frames = decoder.decode(av.Packet(keyframe.data)) + decoder.decode(None)
    except av.error.FFmpegError as exc:
        raise MalformedStream(f"the keyframe does not decode: {exc}") from None
    if not frames:
        raise MalformedStream("the keyframe does not decode to a picture")
    frame = frames[0]
    out_width, out_height = frame.width, frame.height
    if width and width < frame.width:
        out_width = width - width % 2
        out_height = max(2, round(frame.height * width / frame.width / 2) * 2)
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = out_width, out_height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    picture = frame.reformat(out_width, out_height, "yuvj420p")
    return b"".join(bytes(p) for p in encoder.encode(picture) + encoder.encode(None))
