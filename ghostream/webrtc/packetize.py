"""H.264 access units as RTP payloads (FU-A, STAP-A), made once however many viewers send them."""

from __future__ import annotations

from collections import OrderedDict

from ghostream.media.demux import MediaPacket
from ghostream.webrtc import internals

# Access units remembered, across streams: enough for every viewer of a stream to find the
# ones it sends, the live edge and a newcomer's cached GOP alike.
RECENT = 512


class SharedPayloads:
    """The payloads of recently sent access units, by packet identity (the broker demuxes once,
    so every viewer of a stream reads the same packet objects)."""

    def __init__(self, capacity: int = RECENT) -> None:
        self._capacity = capacity
        self._recent: OrderedDict[int, tuple[MediaPacket, list[bytes]]] = OrderedDict()
        self.made = 0

    def of(self, packet: MediaPacket) -> list[bytes]:
        found = self._recent.get(id(packet))
        if found is not None and found[0] is packet:
            return found[1]
        payloads = internals.h264_payloads(packet.data)
        self.made += 1
        self._recent[id(packet)] = (packet, payloads)
        if len(self._recent) > self._capacity:
            self._recent.popitem(last=False)
        return payloads
