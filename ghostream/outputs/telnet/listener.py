"""The telnet service: `telnet HOST 8023`, a stream name, and the stream as colour text art.

Each connection is one task with a reader beside it: the reader turns what
the client sends into typed lines, window sizes and a wish to leave (`q`,
Ctrl-C); the connection's task prompts, shows the stream until it ends or
the viewer leaves, and prompts again.  A telnet viewer is a viewer like any
other (`broker.attend`: counted, logged, kept in the history).  Sending to
a terminal waits at most `SEND_TIMEOUT`, and the socket's send buffer is
kept small so that a slow link skips frames rather than lagging behind.
"""

from __future__ import annotations

import logging
import socket
from functools import partial

import trio

from ghostream import monitoring
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import Broker, StreamNotFound, Viewer
from ghostream.broker.stream import StreamEnded
from ghostream.config import TelnetSettings, TextTranscoderSettings
from ghostream.exceptiongroups import sole_error
from ghostream.media.textart import (
    ALTERNATE_SCREEN,
    CLEAR,
    HIDE_CURSOR,
    NORMAL_SCREEN,
    RESET,
    SHOW_CURSOR,
)
from ghostream.outputs.telnet.frames import DEFAULT_TERMINAL, TextArt, TextFrame, TextViewer
from ghostream.outputs.telnet.protocol import (
    CTRL_C,
    CTRL_D,
    ECHO,
    WILL,
    Interrupt,
    LineEditor,
    TelnetProtocol,
    Text,
    WindowSize,
)
from ghostream.peers import source_host
from ghostream.per_host import HostSlots, OncePerHost, unsaid
from ghostream.streamid import STREAM_ID

log = logging.getLogger(__name__)

PROTOCOL = "telnet"
BANNER = b"[GHOSTREAM]\r\n"
PROMPT = b"Enter stream name: "
# Connections at once, prompting or watching; more are told to come back later.
MAX_CLIENTS = 256
MAX_NAME = 128
MAX_TERMINAL = 1000
PROMPT_TIMEOUT = 300.0
SEND_TIMEOUT = 30.0
# Small enough that a slow link holds a few pictures, not seconds of them.
SEND_BUFFER = 64 * 1024
LEAVE_KEYS = frozenset(b"qQ") | {CTRL_C, CTRL_D}
# How a client's session ends without a fault: the stream ends, the client is slow or gone.
CLIENT_ENDS = (StreamEnded, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError)


class TelnetClient:
    def __init__(
        self, stream: trio.SocketStream, peer: str, broker: Broker, pictures: TextArt
    ) -> None:
        self.stream = stream
        self.peer = peer
        self.broker = broker
        self.pictures = pictures
        self.protocol = TelnetProtocol()
        self.editor = LineEditor(MAX_NAME)
        self.terminal = DEFAULT_TERMINAL
        self.viewer: TextViewer | None = None
        self.leaving = False
        self._lines_in, self._lines = trio.open_memory_channel[str](4)
        self._watch_scope = trio.CancelScope()
        self._send_lock = trio.Lock()

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read)
                await self._converse()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise sole_error(group) from None

    async def _converse(self) -> None:
        self.protocol.start()
        await self._send(BANNER)
        while not self.leaving:
            await self._send(PROMPT)
            with trio.move_on_after(PROMPT_TIMEOUT) as waited:
                try:
                    name = (await self._lines.receive()).strip().lower()
                except trio.EndOfChannel:
                    break
            if waited.cancelled_caught:
                await self._send(b"\r\nNo stream name given, bye.\r\n")
                return
            if not name:
                continue
            if not STREAM_ID.fullmatch(name) or self.broker.get(name) is None:
                await self._send(b"Stream %s is offline.\r\n" % name.encode())
                continue
            ended = await self._watch(name)
            if ended is not None:
                await self._send(b"Stream %s: %s.\r\n" % (name.encode(), ended.encode()))
        await self._send(b"Bye.\r\n")

    async def _watch(self, stream_id: str) -> str | None:
        """Show a stream until it ends (why, returned) or the viewer leaves (None)."""
        ended = None
        why = "server stopping"
        try:
            with self.broker.attend(stream_id, self.peer, PROTOCOL) as attendee:
                log.info("%s watching %s over telnet", self.peer, stream_id)
                async with self.pictures.watch(stream_id, self.terminal) as viewer:
                    self.viewer = viewer
                    with trio.CancelScope() as self._watch_scope:
                        try:
                            await self._send(ALTERNATE_SCREEN + HIDE_CURSOR + _waiting(stream_id))
                            show = partial(self._show, stream_id, viewer, attendee)
                            await self.broker.supervisor.run(
                                stream_id, PROTOCOL, show, passes=CLIENT_ENDS
                            )
                            # Showing ends only by an exception: this one was a fault, reported.
                            ended = why = attendee.left_because = "internal error"
                        except StreamEnded as exc:
                            ended = why = attendee.left_because = exc.reason
                        except trio.TooSlowError:
                            why = attendee.left_because = "too slow"
                            raise
                        except trio.BrokenResourceError:
                            why = attendee.left_because = "viewer left"
                            raise
                    if self._watch_scope.cancelled_caught:
                        why = "viewer left"
        except StreamNotFound:
            ended = why = "offline"
        finally:
            self.viewer = None
            log.info("%s stopped watching %s over telnet: %s", self.peer, stream_id, why)
        await self._send(RESET + SHOW_CURSOR + NORMAL_SCREEN)
        return ended

    async def _show(self, stream_id: str, viewer: TextViewer, attendee: Viewer) -> None:
        bytes_out = monitoring.BYTES_OUT.labels(stream_id, PROTOCOL)
        shown: TextFrame | None = None
        shown_size: tuple[int, int] | None = None
        while True:
            frame, size = await viewer.next_frame(shown)
            data = frame.drawing(size, shown if size == shown_size else None)
            if size != shown_size:
                data += self._status_line(stream_id, size)
            await self._send(data)
            attendee.bytes_sent += len(data)
            bytes_out.inc(len(data))
            shown, shown_size = frame, size

    def _status_line(self, stream_id: str, size: tuple[int, int]) -> bytes:
        text = f" {stream_id} - press q to quit"[: self.terminal[0]]
        return b"\x1b[%d;1H%s%s" % (size[1] // 2 + 1, RESET, text.encode())

    async def _read(self) -> None:
        """What the client sends, until it hangs up (which ends the connection as `q` does)."""
        try:
            while data := await self.stream.receive_some(4096):
                for event in self.protocol.receive(data):
                    self._handle(event)
                await self._flush()
        except trio.BrokenResourceError:
            pass
        self._leave()

    def _handle(self, event: Text | WindowSize | Interrupt) -> None:
        match event:
            case WindowSize(columns, rows):
                self.terminal = (
                    min(max(1, columns), MAX_TERMINAL),
                    min(max(2, rows), MAX_TERMINAL),
                )
                if self.viewer is not None:
                    self.viewer.resize(*self.terminal)
            case Interrupt():
                self._leave()
            case Text(data) if self.viewer is not None:
                if LEAVE_KEYS.intersection(data):
                    self._leave()
            case Text(data):
                echo, lines, leave = self.editor.feed(data)
                if self.protocol.enabled(WILL, ECHO):
                    self.protocol.send(echo)
                for line in lines:
                    try:
                        self._lines_in.send_nowait(line)
                    except (trio.WouldBlock, trio.ClosedResourceError):
                        pass  # typed ahead of the prompt, or after leaving
                if leave:
                    self._leave()

    def _leave(self) -> None:
        self.leaving = True
        self._watch_scope.cancel()
        self._lines_in.close()

    async def _send(self, data: bytes) -> None:
        self.protocol.send(data)
        await self._flush()

    async def _flush(self) -> None:
        async with self._send_lock:
            data = self.protocol.data_to_send()
            if data:
                with trio.fail_after(SEND_TIMEOUT):
                    await self.stream.send_all(data)


def _waiting(stream_id: str) -> bytes:
    """What the screen says until the first picture comes (a stream without video: always)."""
    return CLEAR + b"\x1b[H %s - waiting for pictures - press q to quit" % stream_id.encode()


def _peer(stream: trio.SocketStream) -> str:
    host, port = stream.socket.getpeername()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TelnetOutput:
    """The service: the TCP listener, its connections, and the text art they share."""

    def __init__(
        self,
        settings: TelnetSettings,
        text: TextTranscoderSettings,
        broker: Broker,
        hub: PacketHub,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.pictures = TextArt(text, hub)
        self.clients = 0
        self._hosts = HostSlots(settings.max_clients_per_host)
        self._refusal_reports = OncePerHost()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        address = self.settings.listen_address
        listeners = await trio.open_tcp_listeners(address.port, host=address.host or None)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.pictures.run)
            task_status.started()
            await trio.serve_listeners(self._serve, listeners)
            nursery.cancel_scope.cancel()

    async def _serve(self, stream: trio.SocketStream) -> None:
        """One connection; whatever happens in it ends here, never in the listener."""
        try:
            peer = _peer(stream)
        except OSError:
            await stream.aclose()
            return
        self.clients += 1
        host = source_host(peer)
        try:
            refusal = self._refusal(host)
            if refusal:
                self._report_refusal(peer, host, refusal)
                with trio.move_on_after(5):
                    await stream.send_all(b"Too many viewers, try again later.\r\n")
                return
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            client = TelnetClient(stream, peer, self.broker, self.pictures)
            with self._hosts.held(host):
                # Outside a stream (the prompt, the telnet protocol) a fault names no stream.
                await self.broker.supervisor.run("", PROTOCOL, client.run, passes=CLIENT_ENDS)
        except trio.TooSlowError:
            log.info(
                "telnet client %s dropped: its terminal read nothing for %ds", peer, SEND_TIMEOUT
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.clients -= 1
            await stream.aclose()

    def _refusal(self, host: str) -> str:
        """Why one more connection from `host` is one too many, or ""."""
        if self.clients > MAX_CLIENTS:
            return f"too many telnet clients ({MAX_CLIENTS})"
        if self._hosts.full(host):
            limit = self._hosts.limit
            return f"telnet.maxClientsPerHost ({limit}) connections from this host already"
        return ""

    def _report_refusal(self, peer: str, host: str, reason: str) -> None:
        """One log line and one history event per host a minute, however often it is refused."""
        unreported = self._refusal_reports.due(host)
        if unreported is not None:
            log.warning("telnet client %s refused: %s%s", peer, reason, unsaid(unreported))
            self.broker.reject("", peer, PROTOCOL, reason)
