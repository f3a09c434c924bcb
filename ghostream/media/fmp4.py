"""CMAF / fragmented MP4 written by hand: one init segment per track set, one moof+mdat per part.

Why not PyAV's mp4 muxer: LL-HLS needs a fragment cut exactly where the
packager decides, at the moment it decides, and from already-encoded frames.
libavformat's `frag_custom` needs an explicit flush per fragment, buffers
internally and rewrites timestamps; the boxes a part needs (moof, mfhd,
traf, tfhd, tfdt, trun, mdat) are a few fixed layouts, so writing them here
is shorter, exact and cheap: a part is a handful of byte concatenations,
done in the event loop with no thread hop.

Timescales: video keeps the demuxer's 90 kHz clock, audio uses its sample
rate so that each AAC frame lasts exactly 1024 ticks (an Opus packet, the
48 kHz samples its TOC says).  Opus is described as ISOBMFF's Opus mapping
says (an `Opus` sample entry with `dOps`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ghostream.media import opus
from ghostream.media.bitstream import VideoConfig
from ghostream.media.demux import MediaPacket, Track

VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2
VIDEO_TIMESCALE = 90000
AAC_FRAME_SAMPLES = 1024
MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
# sample_flags: a sync sample depends on nothing; others depend on earlier ones and are not sync.
SYNC_SAMPLE = 0x02000000
NON_SYNC_SAMPLE = 0x01010000
# trun flags: data-offset, then per sample duration, size, flags, composition offset.
TRUN_VIDEO = 0x000F01
TRUN_AUDIO = 0x000301
TFHD_DEFAULT_BASE_IS_MOOF = 0x020000


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


@dataclass(frozen=True, slots=True)
class Sample:
    data: bytes
    duration: int
    composition_offset: int = 0
    sync: bool = True


@dataclass(frozen=True, slots=True)
class TrackRun:
    track_id: int
    base_decode_time: int
    samples: list[Sample]


def init_segment(video: Track, config: VideoConfig, audio: Track | None) -> bytes:
    """ftyp + moov describing the tracks; every part of this init refers to it."""
    traks = [_video_trak(config)]
    trexs = [_trex(VIDEO_TRACK_ID)]
    if audio is not None:
        traks.append(_audio_trak(audio))
        trexs.append(_trex(AUDIO_TRACK_ID))
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, 0), struct.pack(">IH", 0x10000, 0x100), bytes(10),
        MATRIX, bytes(24), struct.pack(">I", AUDIO_TRACK_ID + 1),
    )  # fmt: skip
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41")
    return ftyp + box(b"moov", mvhd, *traks, box(b"mvex", *trexs))


def fragment(sequence: int, runs: list[TrackRun]) -> bytes:
    """One moof+mdat holding each run's samples; a CMAF chunk, playable on its own."""
    runs = [run for run in runs if run.samples]
    moof_size = len(_moof(sequence, runs, [0] * len(runs)))
    offsets = []
    position = moof_size + 8
    for run in runs:
        offsets.append(position)
        position += sum(len(sample.data) for sample in run.samples)
    mdat = box(b"mdat", *(sample.data for run in runs for sample in run.samples))
    return _moof(sequence, runs, offsets) + mdat


def _moof(sequence: int, runs: list[TrackRun], offsets: list[int]) -> bytes:
    trafs = [_traf(run, offset) for run, offset in zip(runs, offsets, strict=True)]
    return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), *trafs)


def _traf(run: TrackRun, data_offset: int) -> bytes:
    tfhd = full_box(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", run.track_id))
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", run.base_decode_time))
    if run.track_id == VIDEO_TRACK_ID:
        entries = b"".join(
            struct.pack(
                ">IIII",
                s.duration,
                len(s.data),
                SYNC_SAMPLE if s.sync else NON_SYNC_SAMPLE,
                s.composition_offset,
            )
            for s in run.samples
        )
        flags = TRUN_VIDEO
    else:
        entries = b"".join(struct.pack(">II", s.duration, len(s.data)) for s in run.samples)
        flags = TRUN_AUDIO
    trun = full_box(b"trun", 0, flags, struct.pack(">Ii", len(run.samples), data_offset), entries)
    return box(b"traf", tfhd, tfdt, trun)


def _trex(track_id: int) -> bytes:
    return full_box(b"trex", 0, 0, struct.pack(">IIIII", track_id, 1, 0, 0, 0))


def _trak(
    track_id: int, timescale: int, handler: bytes, size: tuple[int, int], media_header: bytes,
    sample_entry: bytes,
) -> bytes:  # fmt: skip
    volume = 0x100 if handler == b"soun" else 0
    tkhd = full_box(
        b"tkhd", 0, 0x3,
        struct.pack(">IIIII", 0, 0, track_id, 0, 0), bytes(8),
        struct.pack(">HHHH", 0, 0, volume, 0),
        MATRIX, struct.pack(">II", size[0] << 16, size[1] << 16),
    )  # fmt: skip
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))
    name = b"VideoHandler\0" if handler == b"vide" else b"SoundHandler\0"
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s", 0, handler), bytes(12), name)
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        full_box(b"stts", 0, 0, bytes(4)),
        full_box(b"stsc", 0, 0, bytes(4)),
        full_box(b"stsz", 0, 0, bytes(8)),
        full_box(b"stco", 0, 0, bytes(4)),
    )
    minf = box(b"minf", media_header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))


def _video_trak(config: VideoConfig) -> bytes:
    entry = box(
        config.sample_entry,
        bytes(6), struct.pack(">H", 1), bytes(16),
        struct.pack(">HHIIIH", config.width, config.height, 0x480000, 0x480000, 0, 1),
        bytes(32), struct.pack(">Hh", 0x18, -1),
        box(config.config_box, config.config),
    )  # fmt: skip
    vmhd = full_box(b"vmhd", 0, 1, bytes(8))
    size = (config.width, config.height)
    return _trak(VIDEO_TRACK_ID, VIDEO_TIMESCALE, b"vide", size, vmhd, entry)


def _descriptor(tag: int, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return bytes([tag, len(body)]) + body


def audio_codec_string(audio: Track) -> str:
    """The track's RFC 6381 codec string, for the playlist's CODECS attribute."""
    return "opus" if audio.codec == "opus" else "mp4a.40.2"


def audio_samples(packet: MediaPacket) -> int:
    """How long an audio packet lasts, in ticks of its track's timescale (its sample rate)."""
    return opus.packet_samples(packet.data) if packet.track.codec == "opus" else AAC_FRAME_SAMPLES


def _audio_trak(audio: Track) -> bytes:
    smhd = full_box(b"smhd", 0, 0, bytes(4))
    if audio.codec == "opus":
        entry = box(
            b"Opus",
            bytes(6), struct.pack(">H", 1), bytes(8),
            struct.pack(">HHHH", audio.channels, 16, 0, 0),
            struct.pack(">I", opus.RATE << 16),
            box(b"dOps", opus.dops(audio.channels)),
        )  # fmt: skip
        return _trak(AUDIO_TRACK_ID, opus.RATE, b"soun", (0, 0), smhd, entry)
    decoder_config = _descriptor(
        0x04, bytes([0x40, 0x15]), bytes(3), struct.pack(">II", 0, 0),
        _descriptor(0x05, audio.extradata),
    )  # fmt: skip
    es = _descriptor(0x03, struct.pack(">HB", 0, 0), decoder_config, _descriptor(0x06, b"\x02"))
    entry = box(
        b"mp4a",
        bytes(6), struct.pack(">H", 1), bytes(8),
        struct.pack(">HHHH", max(audio.channels, 1), 16, 0, 0),
        struct.pack(">I", min(audio.sample_rate, 0xFFFF) << 16),
        full_box(b"esds", 0, 0, es),
    )  # fmt: skip
    return _trak(AUDIO_TRACK_ID, audio.sample_rate, b"soun", (0, 0), smhd, entry)
