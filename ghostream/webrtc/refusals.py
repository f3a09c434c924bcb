"""What a WHEP request can fail with, as the HTTP layer answers it."""

from __future__ import annotations


class WebRtcError(Exception):
    """A request that cannot be served; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
