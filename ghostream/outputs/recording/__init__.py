"""Recordings of shows: written as they are streamed, kept within limits, replayed as VOD."""

from ghostream.outputs.recording.library import (
    Recording,
    find_recording,
    recordings,
    with_recordings,
)
from ghostream.outputs.recording.recorder import Recorder

__all__ = ["Recorder", "Recording", "find_recording", "recordings", "with_recordings"]
