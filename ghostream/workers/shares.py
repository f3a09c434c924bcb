"""What each worker takes of the configuration: the public ports are shared, the rest split.

SRT and the web server listen on the same ports in every worker
(SO_REUSEPORT).  WebRTC media cannot be shared that way, since a browser's
packets must reach the worker that answered its WHEP: each worker gets a
slice of the UDP range and the TCP port after the previous worker's, and
announces only those.  What is not yet shared between workers runs in
worker 0 only: telnet, the metrics endpoint and the history (one writer),
which therefore see worker 0's streams and sessions.
"""

from __future__ import annotations

import dataclasses

from ghostream.config import ListenAddress, Settings, WorkerRole


def worker_settings(settings: Settings, role: WorkerRole) -> Settings:
    """The settings worker `role.index` of `role.count` runs with."""
    webrtc = settings.webrtc
    share = (webrtc.max_port_udp - webrtc.min_port_udp + 1) // role.count
    first = webrtc.min_port_udp + role.index * share
    tcp = webrtc.tcp_listen_address
    webrtc = dataclasses.replace(
        webrtc,
        min_port_udp=first,
        max_port_udp=first + share - 1,
        tcp_listen_address=ListenAddress(tcp.host, tcp.port + role.index if tcp.port else 0),
    )
    changes: dict[str, object] = {"webrtc": webrtc, "worker": role}
    if role.index:
        changes["telnet"] = dataclasses.replace(settings.telnet, enabled=False)
        changes["monitoring"] = dataclasses.replace(settings.monitoring, enabled=False)
        changes["history"] = dataclasses.replace(settings.history, enabled=False)
    return dataclasses.replace(settings, **changes)
