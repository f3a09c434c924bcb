"""A stream's audio in another codec: decoded, resampled, re-framed and encoded with PyAV.

FLV (RTMP) carries AAC and not Opus; WebRTC carries Opus and not AAC.  An
output that needs the other codec gets the stream's audio through one
`AudioReencoder`, parameterised by the `AudioCodec` to make: packets in,
packets of that codec out (48 kHz stereo), or a typed error for a packet
the decoder refuses.  It does no I/O but blocks in PyAV, so callers run it
in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import av

from ghostream.media import opus
from ghostream.media.bitstream import AAC_SAMPLE_RATES
from ghostream.media.demux import MediaPacket, Track
from ghostream.media.errors import MalformedStream

RATE = 48000
CHANNELS = 2
CLOCK = 90000
# Decoders of the audio codecs the demuxer makes packets of.
DECODERS = {"aac": "aac", "opus": "libopus"}
# An input timestamp this far (samples) from where the output stands restarts the output's
# timeline at the input's: the first packet, lost packets, a new publisher.
MAX_GAP = 2 * 960


@dataclass(frozen=True)
class AudioCodec:
    """What an encoder makes, and the track (48 kHz stereo) its packets belong to."""

    encoder: str
    frame_samples: int
    sample_format: str
    bit_rate: int
    track: Track
    options: dict[str, str] = field(default_factory=dict)


AAC = AudioCodec(
    "aac",
    1024,
    "fltp",
    128000,
    # AAC-LC, 48 kHz, stereo: its AudioSpecificConfig.
    Track(
        "audio",
        "aac",
        ((2 << 11) | (AAC_SAMPLE_RATES.index(RATE) << 7) | (CHANNELS << 3)).to_bytes(2, "big"),
        sample_rate=RATE,
        channels=CHANNELS,
    ),
)
OPUS = AudioCodec(
    "libopus",
    960,
    "s16",
    96000,
    Track("audio", "opus", opus.opus_head(CHANNELS), sample_rate=RATE, channels=CHANNELS),
    {"application": "lowdelay", "frame_duration": "20"},
)


class UndecodableAudio(MalformedStream):
    """An audio packet its decoder refused: it is skipped, the next one decodes."""


class AudioReencoder:
    """One audio track after another, re-encoded to `codec` on the input's timeline.

    A new input track (a new publisher, new settings) gets a fresh decoder
    and encoder.  Output timestamps count the encoder's frames, so they are
    exact; they follow the input's own, and start again from them after a gap.
    """

    def __init__(self, codec: AudioCodec) -> None:
        self.codec = codec
        self._track: Track | None = None
        self._decoder: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._encoder: av.AudioCodecContext | None = None
        self._fifo = av.AudioFifo()
        self._next_pts: int | None = None

    def reencode(self, packet: MediaPacket) -> list[MediaPacket]:
        """The packets of `codec` completed by this one; UndecodableAudio if it is refused."""
        if packet.track is not self._track:
            self._start(packet.track)
        assert self._decoder and self._resampler and self._encoder
        at = packet.pts * RATE // CLOCK
        if self._next_pts is None or abs(at - self._next_pts - self._fifo.samples) > MAX_GAP:
            self._fifo = av.AudioFifo()
            self._next_pts = at
        try:
            frames = self._decoder.decode(av.Packet(packet.data))
        except av.error.FFmpegError as exc:
            raise UndecodableAudio(f"undecodable {packet.track.codec} packet: {exc}") from exc
        for frame in frames:
            frame.pts = None
            for resampled in self._resampler.resample(frame):
                self._fifo.write(resampled)
        out = []
        size = self.codec.frame_samples
        while self._fifo.samples >= size:
            frame = self._fifo.read(size)
            frame.pts, frame.time_base = self._next_pts, Fraction(1, RATE)
            self._next_pts += size
            for encoded in self._encoder.encode(frame):
                pts = int(encoded.pts) * CLOCK // RATE
                out.append(MediaPacket(self.codec.track, bytes(encoded), pts, pts, True))
        return out

    def _start(self, track: Track) -> None:
        if track.codec not in DECODERS:
            raise UndecodableAudio(f"no decoder for {track.codec} audio")
        self._track = track
        self._next_pts = None
        decoder = av.CodecContext.create(DECODERS[track.codec], "r")
        decoder.extradata = track.extradata
        self._decoder = decoder
        codec = self.codec
        self._resampler = av.AudioResampler(format=codec.sample_format, layout="stereo", rate=RATE)
        encoder = av.CodecContext.create(codec.encoder, "w")
        encoder.sample_rate = RATE
        encoder.layout = "stereo"
        encoder.format = codec.sample_format
        encoder.bit_rate = codec.bit_rate
        encoder.time_base = Fraction(1, RATE)
        encoder.options = dict(codec.options)
        self._encoder = encoder
