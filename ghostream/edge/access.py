"""Which peers are edges: those presenting one of the origin's `srt.pullKeys`."""

from __future__ import annotations

import hmac
from collections.abc import Sequence


def is_edge_key(pull_keys: Sequence[str], presented: str) -> bool:
    """Whether `presented` is one of the keys, compared in constant time."""
    if not presented:
        return False
    given = presented.encode()
    return any(hmac.compare_digest(given, key.encode()) for key in pull_keys)


def pull_stream_id(stream_id: str, key: str) -> str:
    """The SRT stream id an edge sends: the plain id, or the access-control form with its key."""
    return f"#!::r={stream_id},m=request,s={key}" if key else stream_id
