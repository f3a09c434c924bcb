"""The server side of a telnet connection, sans IO: bytes in, events and bytes to send out.

`TelnetProtocol` separates what the client types from the commands its
telnet program sends (RFC 854), answers option negotiation without ever
looping (an option's state changes only once per request, RFC 1143's
rule), and reports the window size the client sends (NAWS, RFC 1073).  The
server asks to echo and to suppress go-ahead, which puts clients in
character mode: each key arrives when pressed, so `q` works without Enter,
and `LineEditor` gives the prompt back its echo and backspace.  Whatever
the bytes, nothing here raises: a malformed or endless subnegotiation is
cut at `MAX_SUBNEGOTIATION` bytes and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
IP, BRK, AO = 244, 243, 245
ECHO, SGA, NAWS = 1, 3, 31
MAX_SUBNEGOTIATION = 64
CTRL_C, CTRL_D = 0x03, 0x04

# Options the server performs (WILL) and asks the client to perform (DO).
LOCAL_OPTIONS = frozenset({ECHO, SGA})
REMOTE_OPTIONS = frozenset({SGA, NAWS})


@dataclass(frozen=True, slots=True)
class Text:
    """Bytes the user typed (NVT data, IAC doubling undone)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class WindowSize:
    columns: int
    rows: int


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The telnet program's own Ctrl-C or break (IAC IP, IAC BRK, IAC AO)."""


Event = Text | WindowSize | Interrupt


class TelnetProtocol:
    def __init__(self) -> None:
        self._state = "data"
        self._verb = 0
        self._subnegotiation = bytearray()
        self._overflow = False
        self._outgoing = bytearray()
        self._enabled: set[tuple[int, int]] = set()  # (WILL, option) ours, (DO, option) theirs
        self._requested: set[tuple[int, int]] = set()

    def start(self) -> None:
        """Ask for character mode with server echo, and for the window size."""
        for option in sorted(LOCAL_OPTIONS):
            self._request(WILL, option)
        for option in sorted(REMOTE_OPTIONS):
            self._request(DO, option)

    def send(self, data: bytes) -> None:
        """Queue text for the client (a 0xFF byte is doubled as telnet requires)."""
        self._outgoing += data.replace(b"\xff", b"\xff\xff")

    def data_to_send(self) -> bytes:
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def receive(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        text = bytearray()
        for byte in data:
            state = self._state
            if state == "data":
                if byte == IAC:
                    self._state = "command"
                else:
                    text.append(byte)
            elif state == "command":
                self._state = "data"
                if byte == IAC:
                    text.append(IAC)
                elif byte in (WILL, WONT, DO, DONT):
                    self._verb = byte
                    self._state = "option"
                elif byte == SB:
                    self._subnegotiation.clear()
                    self._overflow = False
                    self._state = "subnegotiation"
                elif byte in (IP, BRK, AO):
                    self._flush_text(text, events)
                    events.append(Interrupt())
            elif state == "option":
                self._state = "data"
                self._negotiate(self._verb, byte)
            elif state == "subnegotiation":
                if byte == IAC:
                    self._state = "subnegotiation-iac"
                else:
                    self._collect(byte)
            else:  # "subnegotiation-iac"
                if byte == SE:
                    self._state = "data"
                    self._flush_text(text, events)
                    events.extend(self._subnegotiated())
                else:
                    # IAC IAC is a 255 in the payload; anything else is a protocol slip.
                    self._state = "subnegotiation"
                    self._collect(byte)
        self._flush_text(text, events)
        return events

    def _flush_text(self, text: bytearray, events: list[Event]) -> None:
        if text:
            events.append(Text(bytes(text)))
            text.clear()

    def _collect(self, byte: int) -> None:
        if len(self._subnegotiation) < MAX_SUBNEGOTIATION:
            self._subnegotiation.append(byte)
        else:
            self._overflow = True

    def _subnegotiated(self) -> list[Event]:
        payload = self._subnegotiation
        if self._overflow or len(payload) != 5 or payload[0] != NAWS:
            return []
        columns = payload[1] << 8 | payload[2]
        rows = payload[3] << 8 | payload[4]
        return [WindowSize(columns, rows)]

    def _request(self, verb: int, option: int) -> None:
        self._requested.add((verb, option))
        self._outgoing += bytes((IAC, verb, option))

    def _negotiate(self, verb: int, option: int) -> None:
        """Answer WILL/WONT/DO/DONT; a reply only when the option's state changes."""
        ours = verb in (DO, DONT)
        key = (WILL if ours else DO, option)
        supported = option in (LOCAL_OPTIONS if ours else REMOTE_OPTIONS)
        positive = verb in (DO, WILL)
        requested = key in self._requested
        self._requested.discard(key)
        if positive and supported:
            if key not in self._enabled:
                self._enabled.add(key)
                if not requested:
                    self._outgoing += bytes((IAC, key[0], option))
        elif positive:
            self._outgoing += bytes((IAC, WONT if ours else DONT, option))
        elif key in self._enabled:
            self._enabled.discard(key)
            self._outgoing += bytes((IAC, WONT if ours else DONT, option))

    def enabled(self, verb: int, option: int) -> bool:
        """Whether an option is on: (WILL, ECHO) ours, (DO, NAWS) the client's."""
        return (verb, option) in self._enabled


class LineEditor:
    """A prompt's line: echo, backspace, Enter; typed bytes in, echo and whole lines out."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self._line = bytearray()
        self._after_cr = False

    def feed(self, data: bytes) -> tuple[bytes, list[str], bool]:
        """Echo to send, lines completed, and whether the user asked to leave (Ctrl-C, Ctrl-D)."""
        echo = bytearray()
        lines: list[str] = []
        for byte in data:
            after_cr, self._after_cr = self._after_cr, False
            if byte in (CTRL_C, CTRL_D):
                return bytes(echo), lines, True
            if byte in (0x0D, 0x0A):
                if byte == 0x0A and after_cr:
                    continue
                self._after_cr = byte == 0x0D
                lines.append(self._line.decode("ascii", "replace"))
                self._line.clear()
                echo += b"\r\n"
            elif byte in (0x08, 0x7F):
                if self._line:
                    self._line.pop()
                    echo += b"\b \b"
            elif 0x20 <= byte < 0x7F and len(self._line) < self.max_length:
                self._line.append(byte)
                echo.append(byte)
        return bytes(echo), lines, False
