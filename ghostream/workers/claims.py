"""Which worker publishes which stream: one lock file per live stream id, shared by the workers.

A stream has one publisher across all workers, as in a single process: the
worker that takes a publish holds an exclusive `flock` on the stream's file
in the runtime directory for as long as the publisher is connected, and a
publish of the same id on another worker finds it held and is refused as
busy.  The kernel drops the lock of a worker that dies, so a killed worker's
streams can be published again at once; files exist only while held.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ghostream.broker.registry import StreamBusy


class StreamClaims:
    def __init__(self, runtime: Path) -> None:
        self._directory = runtime / "streams"
        self._directory.mkdir(exist_ok=True)

    @contextmanager
    def claim(self, stream_id: str) -> Iterator[None]:
        """Hold the stream's publisher slot among the workers; StreamBusy if another has it."""
        # Stream ids may be long or hold any character: the file is named by a hash.
        path = self._directory / hashlib.sha256(stream_id.encode()).hexdigest()
        while True:
            fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise StreamBusy(stream_id) from None
            try:
                # The holder before us may have removed the file after we opened it.
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)
