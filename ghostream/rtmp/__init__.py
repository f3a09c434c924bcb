"""RTMP and RTMPS ingest: what OBS, hardware encoders and other servers send by default.

A sans-IO core (`greeting` for the handshake, `chunks` for the chunk stream,
`amf` for command values, `session` for the commands from `connect` to
`publish`, `flv` for the media tags) driven by one thin Trio task per
connection (`ingest`), which publishes into the broker like SRT does.
"""

from __future__ import annotations


class RtmpError(Exception):
    """What a peer sent cannot be RTMP: the connection ends with this one log line."""
