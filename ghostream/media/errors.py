"""What the media parsers raise when a stream's data cannot be used: the one typed boundary.

Everything that reads a peer's media (TS, PES, parameter sets, ADTS) returns
values or one of these; nothing else may escape, so that outputs can tell
"this stream is bad" (stop that output for that stream, say why) from a bug
in the server.  SRT viewers are unaffected either way: they get the bytes.
"""

from __future__ import annotations


class UnplayableStream(ValueError):
    """An output cannot carry this stream; the message says why, for a log line and a 415."""


class MalformedStream(UnplayableStream):
    """The stream's data contradicts its format (sizes that cannot be, truncated headers)."""


class UnsupportedStream(UnplayableStream):
    """Well-formed, but not something this output carries (audio only, MPEG-2 video)."""
