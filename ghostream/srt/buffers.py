"""The SRT connection's buffers, with per-packet work that does not grow with their size.

At 20 Mbit/s and 2 s of latency a receiver holds about 4000 packets and a
sender about 5000, on the one task that serves every SRT connection: any
walk over a buffer per datagram costs more than the rest of the datagram's
handling.  So both buffers are rings indexed by sequence number, and the
loss list is a sorted list of ranges (a burst of 1000 lost packets is one
entry, and a retransmission that fills a hole is a bisection).

Everything here counts in *extended* sequence numbers: the 31-bit wire
sequence unwrapped onto an unbounded line by the connection (see
`unwrap`).  Ordering is then plain integer comparison, and the ring index of
a packet is its extended number modulo the ring size, which stays
continuous across the wire's wrap at 2^31.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator

from ghostream.srt.packet import SEQ_MASK

_HALF = 0x40000000
_INITIAL_SLOTS = 64


def unwrap(seq: int, near: int) -> int:
    """The extended sequence number closest to `near` whose wire value is `seq`."""
    return near + (((seq - near + _HALF) & SEQ_MASK) - _HALF)


class LossList:
    """Sequence numbers reported lost, kept as sorted disjoint inclusive ranges."""

    __slots__ = ("_firsts", "_lasts", "count")

    def __init__(self) -> None:
        self._firsts: list[int] = []
        self._lasts: list[int] = []
        self.count = 0

    def __bool__(self) -> bool:
        return bool(self._firsts)

    def __len__(self) -> int:
        return self.count

    @property
    def first(self) -> int | None:
        return self._firsts[0] if self._firsts else None

    def ranges(self) -> Iterator[tuple[int, int]]:
        return zip(self._firsts, self._lasts, strict=True)

    def append(self, first: int, last: int) -> None:
        """Add a gap above everything already listed (where new losses always are)."""
        if self._lasts and first <= self._lasts[-1] + 1:
            if first <= self._lasts[-1]:
                raise ValueError("losses are appended in sequence order")
            self._lasts[-1] = last
        else:
            self._firsts.append(first)
            self._lasts.append(last)
        self.count += last - first + 1

    def remove(self, seq: int) -> bool:
        """Forget one sequence number (it arrived); says whether it was listed."""
        firsts, lasts = self._firsts, self._lasts
        i = bisect_right(firsts, seq) - 1
        if i < 0 or lasts[i] < seq:
            return False
        first, last = firsts[i], lasts[i]
        if first == last:
            del firsts[i], lasts[i]
        elif seq == first:
            firsts[i] = seq + 1
        elif seq == last:
            lasts[i] = seq - 1
        else:
            lasts[i] = seq - 1
            firsts.insert(i + 1, seq + 1)
            lasts.insert(i + 1, last)
        self.count -= 1
        return True

    def remove_range(self, first: int, last: int) -> int:
        """Forget [first, last] (the peer gave those up); returns how many were listed."""
        firsts, lasts = self._firsts, self._lasts
        i = max(bisect_right(firsts, first) - 1, 0)
        removed = 0
        while i < len(firsts) and firsts[i] <= last:
            lo, hi = firsts[i], lasts[i]
            if hi < first:
                i += 1
                continue
            removed += min(hi, last) - max(lo, first) + 1
            pieces = [(a, b) for a, b in ((lo, first - 1), (last + 1, hi)) if a <= b]
            firsts[i : i + 1] = [a for a, _ in pieces]
            lasts[i : i + 1] = [b for _, b in pieces]
            i += len(pieces)
        self.count -= removed
        return removed

    def remove_below(self, seq: int) -> None:
        """Forget everything before `seq` (delivery moved past it)."""
        firsts, lasts = self._firsts, self._lasts
        if not firsts or firsts[0] >= seq:
            return
        i = bisect_right(lasts, seq - 1)
        self.count -= sum(b - a + 1 for a, b in zip(firsts[:i], lasts[:i], strict=True))
        del firsts[:i], lasts[:i]
        if firsts and firsts[0] < seq:
            self.count -= seq - firsts[0]
            firsts[0] = seq

    def range_at(self, seq: int) -> tuple[int, int] | None:
        i = bisect_right(self._firsts, seq) - 1
        if i >= 0 and self._lasts[i] >= seq:
            return self._firsts[i], self._lasts[i]
        return None


class ReceiveBuffer:
    """Payloads waiting for their play time, from `head` (the next to deliver) on.

    Slots are parallel lists (payload, play time) rather than one object per
    packet.  The ring doubles when a packet lands further ahead than it
    holds, so a viewer's connection, which receives nothing, stays small.
    """

    __slots__ = ("head", "count", "_payloads", "_plays", "_mask")

    def __init__(self, head: int) -> None:
        self.head = head
        self.count = 0
        self._payloads: list[bytes | None] = [None] * _INITIAL_SLOTS
        self._plays: list[float] = [0.0] * _INITIAL_SLOTS
        self._mask = _INITIAL_SLOTS - 1

    def __contains__(self, seq: int) -> bool:
        return 0 <= seq - self.head <= self._mask and self._payloads[seq & self._mask] is not None

    def put(self, seq: int, payload: bytes, play: float) -> None:
        """Hold a packet at or after `head` (callers check for duplicates first)."""
        if seq - self.head > self._mask:
            self._grow(seq - self.head + 1)
        i = seq & self._mask
        self._payloads[i] = payload
        self._plays[i] = play
        self.count += 1

    def play_time(self, seq: int) -> float:
        return self._plays[seq & self._mask]

    def pop_head(self) -> bytes:
        """Take the packet at `head` (it must be there) and move on."""
        i = self.head & self._mask
        payload = self._payloads[i]
        assert payload is not None
        self._payloads[i] = None
        self.count -= 1
        self.head += 1
        return payload

    def skip_to(self, seq: int) -> None:
        """Move `head` to `seq` over slots that hold nothing."""
        self.head = seq

    def _grow(self, needed: int) -> None:
        size = self._mask + 1
        while size < needed:
            size *= 2
        payloads: list[bytes | None] = [None] * size
        plays = [0.0] * size
        old = self._mask + 1
        for offset in range(old):
            seq = self.head + offset
            payload = self._payloads[seq & self._mask]
            if payload is not None:
                payloads[seq & (size - 1)] = payload
                plays[seq & (size - 1)] = self._plays[seq & self._mask]
        self._payloads, self._plays, self._mask = payloads, plays, size - 1


class SendBuffer:
    """Sent datagrams kept for retransmission, from `base` (oldest unacknowledged) on.

    Per slot: the datagram as it went out, when it first went out, and when
    it was last retransmitted (NAKs repeat, and the connection does not
    answer each of them with a copy).
    """

    __slots__ = ("base", "next", "_datagrams", "_first_sent", "_last_sent", "_mask")

    def __init__(self, base: int) -> None:
        self.base = base
        self.next = base
        self._datagrams: list[bytes | None] = [None] * _INITIAL_SLOTS
        self._first_sent: list[float] = [0.0] * _INITIAL_SLOTS
        self._last_sent: list[float] = [0.0] * _INITIAL_SLOTS
        self._mask = _INITIAL_SLOTS - 1

    def __len__(self) -> int:
        return self.next - self.base

    def append(self, datagram: bytes, now: float) -> None:
        """Keep the datagram of sequence `next`."""
        if self.next - self.base > self._mask:
            self._grow()
        i = self.next & self._mask
        self._datagrams[i] = datagram
        self._first_sent[i] = now
        self._last_sent[i] = now
        self.next += 1

    def get(self, seq: int) -> bytes | None:
        if self.base <= seq < self.next:
            return self._datagrams[seq & self._mask]
        return None

    def first_sent(self, seq: int) -> float:
        return self._first_sent[seq & self._mask]

    def last_sent(self, seq: int) -> float:
        return self._last_sent[seq & self._mask]

    def mark_resent(self, seq: int, now: float) -> None:
        self._last_sent[seq & self._mask] = now

    def oldest_sent(self) -> float | None:
        return self._first_sent[self.base & self._mask] if self.next > self.base else None

    def acknowledge(self, seq: int) -> None:
        """Release everything before `seq`."""
        end = min(seq, self.next)
        while self.base < end:
            self._datagrams[self.base & self._mask] = None
            self.base += 1

    def drop_sent_before(self, limit: float) -> None:
        """Give up on packets first sent at or before `limit`: too late to be useful."""
        while self.base < self.next and self._first_sent[self.base & self._mask] <= limit:
            self._datagrams[self.base & self._mask] = None
            self.base += 1

    def _grow(self) -> None:
        old_mask = self._mask
        size = (old_mask + 1) * 2
        mask = size - 1
        datagrams: list[bytes | None] = [None] * size
        first_sent = [0.0] * size
        last_sent = [0.0] * size
        for seq in range(self.base, self.next):
            datagrams[seq & mask] = self._datagrams[seq & old_mask]
            first_sent[seq & mask] = self._first_sent[seq & old_mask]
            last_sent[seq & mask] = self._last_sent[seq & old_mask]
        self._datagrams, self._first_sent, self._last_sent = datagrams, first_sent, last_sent
        self._mask = mask
