"""The telnet and text-art keys: the original defaults, their bounds, both needed to listen."""

from __future__ import annotations

import logging

import pytest

from ghostream.config import ConfigError, ListenAddress, load_settings
from ghostream.context import ServerContext


def test_the_original_defaults() -> None:
    settings = load_settings(None, environ={})
    assert not settings.telnet.enabled and not settings.transcoder.text.enabled
    assert settings.telnet.listen_address == ListenAddress("", 8023)
    text = settings.transcoder.text
    assert (text.width, text.height, text.framerate) == (80, 45, 20)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("WIDTH", "0"), ("HEIGHT", "1"), ("FRAMERATE", "0"), ("FRAMERATE", "1000")],
)
def test_text_art_sizes_and_rates_out_of_bounds_are_refused(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"transcoder.text.{variable.lower()}"):
        load_settings(None, environ={f"GHOSTREAM_TRANSCODER_TEXT_{variable}": value})


@pytest.mark.parametrize(("text_enabled", "listens"), [(False, False), (True, True)])
def test_telnet_listens_only_with_text_art(
    caplog: pytest.LogCaptureFixture, text_enabled: bool, listens: bool
) -> None:
    environ = {
        "GHOSTREAM_HISTORY_ENABLED": "false",
        "GHOSTREAM_TELNET_ENABLED": "true",
        "GHOSTREAM_TRANSCODER_TEXT_ENABLED": str(text_enabled).lower(),
    }
    with caplog.at_level(logging.WARNING):
        context = ServerContext.create(load_settings(None, environ=environ))
    assert (context.telnet is not None) == listens
    warned = "telnet output off: it needs transcoder.text.enabled too" in caplog.text
    assert warned != listens
