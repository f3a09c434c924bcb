"""Cutting a stream's packets into LL-HLS parts and segments, without I/O.

A part closes when the next video frame would push it past the part target;
a segment closes on a keyframe once it holds the segment target (so a GOP
longer than the target makes one segment per GOP).  Parts are video-driven:
audio frames join the part that is open when they arrive.  A new `Track`
object (a new publisher, new parameter sets) closes everything, starts a new
init segment and marks the next segment as a discontinuity.

Every name carries the timeline's `run` token, so a URL never names two
different contents even when a stream restarts: caches may keep them forever.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field

from ghostream.broker.demux import MediaPacket, Track
from ghostream.outputs.llhls import fmp4
from ghostream.outputs.llhls.bitstream import VideoConfig, sample_units, video_config

CLOCK = 90000
# A part may end this close past its target: timestamps are rounded to 90 kHz.
PART_SLACK = 90
_runs = itertools.count()


@dataclass(frozen=True, slots=True)
class Init:
    number: int
    data: bytes
    codecs: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Part:
    msn: int
    index: int
    data: bytes
    duration: float
    independent: bool


@dataclass
class Segment:
    msn: int
    init: Init
    discontinuity: bool
    program_date_time: float
    parts: list[Part] = field(default_factory=list)
    complete: bool = False

    @property
    def duration(self) -> float:
        return sum(part.duration for part in self.parts)

    @property
    def data(self) -> bytes:
        return b"".join(part.data for part in self.parts)


class Timeline:
    def __init__(
        self, *, part_target: float = 0.2, segment_target: float = 2.0, window: int = 10
    ) -> None:
        self.part_target = part_target
        self.segment_target = segment_target
        self.window = window
        self.run = f"{time.time_ns() // 1_000_000:x}{next(_runs):x}"
        self.segments: deque[Segment] = deque()
        self.discontinuity_sequence = 0
        self.longest_segment = 0.0
        self.bytes_per_second = 0.0
        self._init: Init | None = None
        self._video: Track | None = None
        self._audio: Track | None = None
        self._config: VideoConfig | None = None
        self._pending_video: list[MediaPacket] = []
        self._pending_audio: list[MediaPacket] = []
        self._fragments = itertools.count(1)
        self._frame_ticks = 3600
        self._clock_offset: float | None = None

    @property
    def ready(self) -> bool:
        """At least one complete segment: enough for a player to start."""
        return any(segment.complete for segment in self.segments)

    @property
    def target_duration(self) -> int:
        return max(math.ceil(self.segment_target), round(self.longest_segment))

    @property
    def init(self) -> Init | None:
        return self._init

    def inits(self) -> dict[int, Init]:
        return {segment.init.number: segment.init for segment in self.segments}

    def last_part(self) -> tuple[int, int] | None:
        """(media sequence number, part index) of the newest part."""
        for segment in reversed(self.segments):
            if segment.parts:
                return segment.msn, segment.parts[-1].index
        return None

    def last_complete_msn(self) -> int:
        """The newest complete segment's number; -1 before the first."""
        return next((s.msn for s in reversed(self.segments) if s.complete), -1)

    def has(self, msn: int, part: int | None) -> bool:
        """Whether a playlist now answers a blocking request for (msn, part)."""
        if part is None:
            return self.last_complete_msn() >= msn
        last = self.last_part()
        return last is not None and (last >= (msn, part) or self.last_complete_msn() >= msn)

    def add(self, packet: MediaPacket, now: float) -> bool:
        """Take one packet; True when it completed a part.  ValueError for unreadable video."""
        if packet.track.kind == "audio":
            if packet.track is not self._audio:
                return self._change_audio(packet.track)
            if self._init is not None:
                self._pending_audio.append(packet)
            return False
        closed = False
        if packet.track is not self._video:
            closed = self._close(segment=True)
            self._video = packet.track
            self._config = video_config(packet.track)
            self._new_init()
        elif self._pending_video:
            first = self._pending_video[0].dts
            previous = self._pending_video[-1].dts
            if packet.dts > previous:
                self._frame_ticks = packet.dts - previous
            segment = self.segments[-1]
            elapsed = (sum(p.duration for p in segment.parts) * CLOCK) + packet.dts - first
            if packet.keyframe and elapsed >= self.segment_target * CLOCK - PART_SLACK:
                closed = self._close(segment=True, next_dts=packet.dts)
            elif packet.dts - first + self._frame_ticks > self.part_target * CLOCK + PART_SLACK:
                closed = self._close(segment=False, next_dts=packet.dts)
        if not self.segments or self.segments[-1].complete:
            if not packet.keyframe or self._init is None:
                return closed
            self._start_segment(packet, now)
        self._note_clock(packet, now)
        self._pending_video.append(packet)
        return closed

    def begin(self, tracks: list[Track]) -> None:
        """Describe the tracks up front, so that the first init holds video and audio."""
        for track in tracks:
            if track.kind == "video":
                self._video, self._config = track, video_config(track)
            else:
                self._audio = track
        self._new_init()

    def flush(self) -> bool:
        """Close the open part and segment (the stream ended)."""
        return self._close(segment=True)

    def _change_audio(self, track: Track) -> bool:
        """New audio parameters: a new init, at once if the open segment has no part yet."""
        current = self.segments[-1] if self.segments else None
        self._audio = track
        self._pending_audio = []
        if current is not None and not current.complete and not current.parts:
            self._new_init()
            current.init = self._init
            return False
        closed = self._close(segment=True)
        self._new_init()
        return closed

    def _new_init(self) -> None:
        if self._video is None or self._config is None:
            return
        number = 0 if self._init is None else self._init.number + 1
        audio = self._audio
        codecs = self._config.codec_string + (",mp4a.40.2" if audio is not None else "")
        data = fmp4.init_segment(self._video, self._config, audio)
        self._init = Init(number, data, codecs, self._config.width, self._config.height)
        self._clock_offset = None

    def _note_clock(self, packet: MediaPacket, now: float) -> None:
        """Wall clock minus media time; its minimum is the packets that arrived fastest."""
        offset = now - packet.dts / CLOCK
        if self._clock_offset is None or offset < self._clock_offset:
            self._clock_offset = offset

    def _start_segment(self, packet: MediaPacket, now: float) -> None:
        assert self._init is not None
        msn = self.segments[-1].msn + 1 if self.segments else 0
        discontinuity = bool(self.segments) and self.segments[-1].init is not self._init
        self._note_clock(packet, now)
        assert self._clock_offset is not None
        wall = self._clock_offset + packet.dts / CLOCK
        self.segments.append(Segment(msn, self._init, discontinuity, wall))

    def _close(self, *, segment: bool, next_dts: int | None = None) -> bool:
        closed = False
        if self._pending_video and self._video is not None:
            self._close_part(next_dts)
            closed = True
        if segment and self.segments and not self.segments[-1].complete:
            done = self.segments[-1]
            done.complete = True
            self.longest_segment = max(self.longest_segment, done.duration)
            if done.duration:
                self.bytes_per_second = sum(len(p.data) for p in done.parts) / done.duration
            while sum(1 for s in self.segments if s.complete) > self.window:
                if self.segments.popleft().discontinuity:
                    self.discontinuity_sequence += 1
        return closed

    def _close_part(self, next_dts: int | None) -> None:
        assert self._video is not None
        video, audio = self._pending_video, self._pending_audio
        self._pending_video, self._pending_audio = [], []
        ends = [p.dts for p in video[1:]] + [next_dts or video[-1].dts + self._frame_ticks]
        codec = self._video.codec
        samples = [
            fmp4.Sample(
                sample_units(codec, p.data),
                max(end - p.dts, 1),
                max(p.pts - p.dts, 0),
                p.keyframe,
            )
            for p, end in zip(video, ends, strict=True)
        ]
        runs = [fmp4.TrackRun(fmp4.VIDEO_TRACK_ID, video[0].dts, samples)]
        if audio and self._audio is not None:
            rate = self._audio.sample_rate
            audio_samples = [fmp4.Sample(p.data, fmp4.AAC_FRAME_SAMPLES) for p in audio]
            start = round(audio[0].pts * rate / CLOCK)
            runs.append(fmp4.TrackRun(fmp4.AUDIO_TRACK_ID, start, audio_samples))
        segment = self.segments[-1]
        duration = sum(s.duration for s in samples) / CLOCK
        data = fmp4.fragment(next(self._fragments), runs)
        part = Part(segment.msn, len(segment.parts), data, duration, video[0].keyframe)
        segment.parts.append(part)
