"""Worker threads by role: each blocking role has its own limiter, so none can starve another.

Trio's default limiter is shared by every `trio.to_thread.run_sync` call
without one: a role that holds threads for long (a forward target's
writer, a stalled encoder) would leave the history writer and the Opus
feeds waiting.  Each role below is bounded on its own; authentication
(bcrypt, LDAP) has its own limiter in `ghostream.auth`.
"""

from __future__ import annotations

import trio

# SQLite writes and history queries: one writer, a few readers.
HISTORY = trio.CapacityLimiter(4)
# One writer thread per forward target while it sends, plus picture probes.
FORWARDING = trio.CapacityLimiter(64)
# A source's decode and encode of its variants, per packet.
TRANSCODING = trio.CapacityLimiter(8)
# AAC to Opus, per packet, for each stream watched over WebRTC.
AUDIO = trio.CapacityLimiter(8)
# Writing recorded segments, and remuxing or decoding them (MP4 downloads, thumbnails).
RECORDING = trio.CapacityLimiter(4)
# Decoding and scaling to text art, per frame, for each stream watched over telnet.
TEXT_ART = trio.CapacityLimiter(4)
