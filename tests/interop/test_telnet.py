"""Text art over telnet, watched with Debian's telnet client in a terminal (pexpect + pyte)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest
from harness.publisher import publishing
from harness.server_process import free_port
from harness.terminal import CURSOR_MOVE, TelnetTerminal

# SMPTE colour bars: seven 75% bars over the top two thirds, left to right.
BARS = [
    "-f", "lavfi", "-i", "smptebars=size=320x240:rate=25",
    "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
]  # fmt: skip
SMPTE = {
    "grey": (191, 191, 191),
    "yellow": (191, 191, 0),
    "cyan": (0, 191, 191),
    "green": (0, 191, 0),
    "magenta": (191, 0, 191),
    "red": (191, 0, 0),
    "blue": (0, 0, 191),
}
BAR_ORDER = list(SMPTE)
HALF_BLOCK = "▀"


@pytest.fixture
def telnet(require_program) -> str:
    require_program("ffmpeg")
    return require_program("telnet")


def start(ghostream_server, **extra):
    port = free_port()
    config = {
        "telnet": {"enabled": True, "listenAddress": f"127.0.0.1:{port}"},
        "transcoder": {"text": {"enabled": True}},
        **extra,
    }
    return ghostream_server(config), port


def colour_name(hex_colour: str) -> str | None:
    """The bar a cell's colour is, within what H.264 and scaling change; None between bars."""
    if len(hex_colour) != 6:
        return None
    rgb = bytes.fromhex(hex_colour)
    name, reference = min(
        SMPTE.items(), key=lambda item: sum((a - b) ** 2 for a, b in zip(item[1], rgb, strict=True))
    )
    return name if all(abs(a - b) <= 40 for a, b in zip(reference, rgb, strict=True)) else None


def top_bars(terminal: TelnetTerminal) -> list[str]:
    """The bars on the picture's first row, left to right, each once."""
    names: list[str] = []
    for cell in terminal.screen.buffer[0].values():
        name = colour_name(cell.fg) if cell.data == HALF_BLOCK else None
        if name is not None and (not names or names[-1] != name):
            names.append(name)
    return names


def picture_size(terminal: TelnetTerminal) -> tuple[int, int]:
    """Columns and rows of half blocks on the screen."""
    rows = [
        sum(cell.data == HALF_BLOCK for cell in terminal.screen.buffer[y].values())
        for y in range(terminal.screen.lines)
    ]
    drawn = [count for count in rows if count]
    return (max(drawn, default=0), len(drawn))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def watch(terminal: TelnetTerminal, stream_id: str) -> None:
    terminal.wait_for_text("[GHOSTREAM]")
    terminal.wait_for_text("Enter stream name: ")
    terminal.type(f"{stream_id}\r")
    terminal.wait_for("the colour bars in order", lambda: top_bars(terminal) == BAR_ORDER)


def test_a_telnet_viewer_sees_the_colour_bars_in_order_in_its_window(
    telnet, ghostream_server
) -> None:
    server, port = start(ghostream_server, streams={"reconnectGrace": 1})
    with publishing(server, "demo:demo", source=BARS, seconds=60) as publisher:
        terminal = TelnetTerminal(telnet, port, rows=24, columns=80)
        try:
            watch(terminal, "demo")
            # 320x240 in the default 80x45 pixels: 60 columns, 22 rows of two pixels.
            terminal.wait_for("the whole picture", lambda: picture_size(terminal) == (60, 22))
            assert b"\x1b[?25l" in terminal.output  # cursor hidden
            stats = get_json(f"{server.web_url}/_stats/demo/")
            assert stats == {"ConnectedViewers": 1}

            # A smaller window: the client reports it (NAWS), the picture shrinks to fit.
            mark = len(terminal.output)
            terminal.resize(12, 40)
            terminal.wait_for(
                "a picture for the new size",
                lambda: b"\x1b[2J" in terminal.output[mark:] and picture_size(terminal) == (30, 11),
            )
            terminal.wait_for("the colour bars in order", lambda: top_bars(terminal) == BAR_ORDER)
            after_resize = terminal.output[terminal.output.rindex(b"\x1b[2J") :]
            moves = [(int(r), int(c)) for r, c in CURSOR_MOVE.findall(after_resize)]
            assert moves and max(r for r, _ in moves) <= 12 and max(c for _, c in moves) <= 40

            # The stream ends: the viewer is told, the terminal restored, the prompt shown again.
            mark = len(terminal.output)
            publisher.terminate()
            terminal.wait_for_text("Stream demo: ", timeout=20)
            after_end = bytes(terminal.output[mark:])
            assert b"\x1b[?25h" in after_end
            terminal.wait_for(
                "the prompt again",
                lambda: b"Enter stream name: " in terminal.output[mark:],
            )
            terminal.type("\x03")
            terminal.wait_for_text("Bye.")
            terminal.wait_for("the connection closed", terminal.closed)
        finally:
            terminal.close()
    server.wait_for_log(r"127\.0\.0\.1:\d+ stopped watching demo over telnet")


def test_telnet_viewers_share_one_conversion_and_are_counted(telnet, ghostream_server) -> None:
    server, port = start(ghostream_server)
    with publishing(server, "demo:demo", source=BARS, seconds=60):
        first = TelnetTerminal(telnet, port)
        second = TelnetTerminal(telnet, port, rows=30, columns=100)
        try:
            first.wait_for_text("Enter stream name: ")
            first.type("nosuch\r")
            first.wait_for_text("Stream nosuch is offline.")
            first.wait_for(
                "the prompt again", lambda: first.output.count(b"Enter stream name: ") == 2
            )
            watch(first, "demo")
            watch(second, "demo")
            assert get_json(f"{server.web_url}/_stats/demo/") == {"ConnectedViewers": 2}
            # One decoder for both: one conversion started, one running.
            assert server.log.count("demo: text art started") == 1
            with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
                metrics = response.read().decode()
            assert "\nghostream_text_conversions 1.0" in metrics
            assert 'ghostream_viewers{protocol="telnet",stream="demo"} 2.0' in metrics

            first.type("q")
            second.type("\x03")
            first.wait_for("the first connection closed", first.closed)
            second.wait_for("the second connection closed", second.closed)
            assert b"\x1b[?25h" in first.output and b"\x1b[?25h" in second.output
        finally:
            first.close()
            second.close()
        server.wait_for_log("demo: text art stopped: nobody watches", 20)
        sessions = server.admin_json("/api/admin/streams/demo")["sessions"]
        telnet_sessions = [s for s in sessions if s["protocol"] == "telnet"]
        assert len(telnet_sessions) == 2
        assert {s["end_reason"] for s in telnet_sessions} == {"viewer left"}
        assert all(s["bytes"] > 0 for s in telnet_sessions)


def test_telnet_stays_off_without_text_art(ghostream_server) -> None:
    port = free_port()
    server = ghostream_server({"telnet": {"enabled": True, "listenAddress": f"127.0.0.1:{port}"}})
    assert "telnet output off: it needs transcoder.text.enabled too" in server.log
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_terminal_that_reads_nothing_does_not_slow_the_others(telnet, ghostream_server) -> None:
    server, port = start(ghostream_server)
    with publishing(server, "demo:demo", seconds=60):  # testsrc2: the picture keeps moving
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(b"demo\r\n")
        viewer = TelnetTerminal(telnet, port)
        try:
            viewer.wait_for_text("Enter stream name: ")
            viewer.type("demo\r")
            viewer.wait_for("a picture", lambda: picture_size(viewer) == (80, 22))
            assert get_json(f"{server.web_url}/_stats/demo/") == {"ConnectedViewers": 2}
            # Second after second, the reading viewer gets new pictures; the other reads nothing.
            for _ in range(4):
                mark = len(viewer.output)
                deadline = time.monotonic() + 1
                while time.monotonic() < deadline:
                    viewer.read(0.1)
                assert viewer.output.count(HALF_BLOCK.encode(), mark) > 10
            # The stalled terminal is still connected, and reading again it gets pictures.
            stalled.settimeout(10)
            assert stalled.recv(65536)
            assert get_json(f"{server.web_url}/_stats/demo/") == {"ConnectedViewers": 2}
        finally:
            stalled.close()
            viewer.close()
