"""The telnet protocol core: negotiation, window sizes, commands and the prompt's line editor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghostream.outputs.telnet.protocol import (
    DO,
    DONT,
    ECHO,
    IAC,
    IP,
    NAWS,
    SB,
    SE,
    SGA,
    WILL,
    WONT,
    Interrupt,
    LineEditor,
    TelnetProtocol,
    Text,
    WindowSize,
)

TTYPE = 24


def naws(columns: int, rows: int) -> bytes:
    payload = bytes((columns >> 8, columns & 0xFF, rows >> 8, rows & 0xFF))
    return bytes((IAC, SB, NAWS)) + payload.replace(b"\xff", b"\xff\xff") + bytes((IAC, SE))


def started() -> TelnetProtocol:
    protocol = TelnetProtocol()
    protocol.start()
    protocol.data_to_send()
    return protocol


def merged(events: list) -> list:
    """Adjacent Text events joined: how the text is cut into events does not matter."""
    out: list = []
    for event in events:
        if isinstance(event, Text) and out and isinstance(out[-1], Text):
            out[-1] = Text(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def test_the_server_asks_for_character_mode_and_the_window_size() -> None:
    protocol = TelnetProtocol()
    protocol.start()
    assert protocol.data_to_send() == bytes(
        (IAC, WILL, ECHO, IAC, WILL, SGA, IAC, DO, SGA, IAC, DO, NAWS)
    )


def test_a_client_agreeing_gets_no_reply_and_its_window_size_is_read() -> None:
    protocol = started()
    agree = bytes((IAC, DO, ECHO, IAC, DO, SGA, IAC, WILL, SGA, IAC, WILL, NAWS))
    assert protocol.receive(agree + naws(132, 43)) == [WindowSize(132, 43)]
    assert protocol.data_to_send() == b""
    assert protocol.enabled(WILL, ECHO) and protocol.enabled(DO, NAWS)
    # The same agreement again (some clients repeat themselves) is not answered: no loop.
    assert protocol.receive(agree) == []
    assert protocol.data_to_send() == b""


def test_a_window_size_with_a_255_byte_is_unescaped() -> None:
    assert started().receive(naws(255, 0xFF01)) == [WindowSize(255, 0xFF01)]


def test_unknown_options_are_refused_once_per_request() -> None:
    protocol = started()
    protocol.receive(bytes((IAC, DO, TTYPE, IAC, WILL, TTYPE)))
    assert protocol.data_to_send() == bytes((IAC, WONT, TTYPE, IAC, DONT, TTYPE))
    # Refusals of refusals are not answered.
    protocol.receive(bytes((IAC, WONT, TTYPE, IAC, DONT, TTYPE)))
    assert protocol.data_to_send() == b""


def test_a_client_refusing_echo_is_not_echoed_and_not_argued_with() -> None:
    protocol = started()
    protocol.receive(bytes((IAC, DONT, ECHO, IAC, WONT, NAWS)))
    assert protocol.data_to_send() == b""
    assert not protocol.enabled(WILL, ECHO) and not protocol.enabled(DO, NAWS)


def test_an_option_turned_off_later_is_acknowledged() -> None:
    protocol = started()
    protocol.receive(bytes((IAC, DO, ECHO)))
    protocol.receive(bytes((IAC, DONT, ECHO)))
    assert protocol.data_to_send() == bytes((IAC, WONT, ECHO))


def test_text_commands_and_doubled_255_bytes() -> None:
    protocol = started()
    events = protocol.receive(b"ab" + bytes((IAC, IAC)) + b"c" + bytes((IAC, IP)) + b"q")
    assert events == [Text(b"ab\xffc"), Interrupt(), Text(b"q")]
    protocol.send(b"x\xffy")
    assert protocol.data_to_send() == b"x\xff\xffy"


def test_an_endless_subnegotiation_is_cut_and_ignored() -> None:
    protocol = started()
    endless = bytes((IAC, SB, NAWS)) + bytes(10_000) + bytes((IAC, SE))
    assert protocol.receive(endless + b"demo") == [Text(b"demo")]


EXCHANGE = (
    bytes((IAC, DO, ECHO, IAC, WILL, NAWS))
    + naws(80, 24)
    + b"de"
    + bytes((IAC, IAC))
    + b"mo\r\n"
    + bytes((IAC, IP))
    + naws(40, 300)
)


@pytest.mark.parametrize("cut", range(len(EXCHANGE) + 1))
def test_bytes_cut_anywhere_give_the_same_events(cut: int) -> None:
    whole = merged(started().receive(EXCHANGE))
    protocol = started()
    assert merged(protocol.receive(EXCHANGE[:cut]) + protocol.receive(EXCHANGE[cut:])) == whole


@given(st.lists(st.binary(max_size=64), max_size=16))
def test_any_bytes_are_taken_without_error(chunks: list[bytes]) -> None:
    protocol = started()
    for chunk in chunks:
        for event in protocol.receive(chunk):
            assert isinstance(event, Text | WindowSize | Interrupt)
            if isinstance(event, WindowSize):
                assert 0 <= event.columns <= 0xFFFF and 0 <= event.rows <= 0xFFFF
    assert isinstance(protocol.data_to_send(), bytes)


@given(st.binary(max_size=256), st.integers(0, 256))
def test_any_cut_of_any_bytes_gives_the_same_events(data: bytes, cut: int) -> None:
    protocol = started()
    assert merged(protocol.receive(data[:cut]) + protocol.receive(data[cut:])) == merged(
        started().receive(data)
    )


@pytest.mark.parametrize("enter", [b"\r\n", b"\r\x00", b"\n", b"\r"])
def test_a_line_ends_with_any_enter_key(enter: bytes) -> None:
    editor = LineEditor(16)
    echo, lines, leave = editor.feed(b"demo" + enter + b"x")
    assert (echo, lines, leave) == (b"demo\r\nx", ["demo"], False)


def test_backspace_erases_and_lines_are_bounded() -> None:
    editor = LineEditor(4)
    echo, lines, _ = editor.feed(b"dx\x7fem\x08mo-too-long\r")
    assert lines == ["demo"]
    assert echo == b"dx\b \bem\b \bmo\r\n"
    # A backspace on an empty line echoes nothing; control bytes are not echoed.
    assert editor.feed(b"\x7f\x1b[A") == (b"[A", [], False)


@pytest.mark.parametrize("key", [b"\x03", b"\x04"])
def test_ctrl_c_or_ctrl_d_at_the_prompt_leaves(key: bytes) -> None:
    assert LineEditor(16).feed(b"de" + key + b"mo\r") == (b"de", [], True)
