"""Configuration: the reference's keys and defaults, file and environment precedence, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import bcrypt
import pytest
import yaml

from ghostream import config as config_module
from ghostream.config import ConfigError, ListenAddress, Settings, load_settings

# Every key of the original server's configuration table, with its default.
REFERENCE_DEFAULTS = {
    "auth.enabled": True,
    "auth.backend": "basic",
    "auth.ldap.uri": "ldap://127.0.0.1:389",
    "auth.ldap.userdn": "cn=users,dc=example,dc=com",
    "forwarding": {},
    "monitoring.enabled": True,
    "monitoring.listenAddress": ":2112",
    "srt.enabled": True,
    "srt.listenAddress": ":9710",
    "srt.maxClients": 64,
    "web.enabled": True,
    "web.customCss": "",
    "web.favicon": "/static/img/favicon.svg",
    "web.hostname": "localhost",
    "web.listenAddress": ":8080",
    "web.name": "Ghostream",
    "web.oneStreamPerDomain": False,
    "web.playerPoster": "/static/img/no_stream.svg",
    "web.viewersCounterRefreshPeriod": 20000,
    "web.widgetURL": "",
    "webrtc.enabled": True,
    "webrtc.minPortUDP": 10000,
    "webrtc.maxPortUDP": 10005,
    "webrtc.STUNServers": ["stun:stun.l.google.com:19302"],
    "telnet.enabled": False,
    "telnet.listenAddress": ":8023",
    "transcoder.text.enabled": False,
    "transcoder.text.width": 80,
    "transcoder.text.height": 45,
    "transcoder.text.framerate": 20,
}


@pytest.fixture(autouse=True)
def no_system_file(monkeypatch, tmp_path: Path) -> None:
    """Tests never read the machine's /etc/ghostream/ghostream.yml."""
    monkeypatch.setattr(config_module, "DEFAULT_PATH", tmp_path / "absent.yml")


def lookup(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ghostream.yml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("key", sorted(REFERENCE_DEFAULTS))
def test_defaults_match_the_reference(key: str) -> None:
    dumped = load_settings(None, environ={}).to_yaml_dict(mask_secrets=False)
    assert lookup(dumped, key) == REFERENCE_DEFAULTS[key]


def test_default_credentials_are_the_demo_user() -> None:
    settings = load_settings(None, environ={})
    credentials = settings.auth.basic.credentials
    assert list(credentials) == ["demo"]
    assert bcrypt.checkpw(b"demo", credentials["demo"].encode())
    assert settings.auth.uses_demo_credentials


def test_file_overrides_defaults_and_environment_overrides_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "web:\n  name: From file\n  listenAddress: 127.0.0.1:8081\nsrt:\n  maxClients: 3\n",
    )
    settings = load_settings(path, environ={"GHOSTREAM_WEB_NAME": "From env"})
    assert settings.web.name == "From env"
    assert settings.web.listen_address == ListenAddress("127.0.0.1", 8081)
    assert settings.srt.max_clients == 3
    assert settings.monitoring.listen_address == ListenAddress("", 2112)
    assert str(path) in settings.source and "environment" in settings.source


def test_environment_names_are_case_insensitive_and_values_typed() -> None:
    settings = load_settings(
        None,
        environ={
            "GHOSTREAM_WEB_LISTENADDRESS": "[::1]:8082",
            "GHOSTREAM_AUTH_LDAP_URI": "ldaps://ldap.example.org",
            "ghostream_srt_maxclients": "7",
            "GHOSTREAM_WEB_ONESTREAMPERDOMAIN": "true",
            "GHOSTREAM_WEBRTC_STUNSERVERS": "stun:a.example:3478, stun:b.example:3478",
            "GHOSTREAM_AUTH_ENABLED": "no",
        },
    )
    assert settings.web.listen_address == ListenAddress("::1", 8082)
    assert settings.auth.ldap.uri == "ldaps://ldap.example.org"
    assert settings.srt.max_clients == 7
    assert settings.web.one_stream_per_domain is True
    assert settings.webrtc.stun_servers == ["stun:a.example:3478", "stun:b.example:3478"]
    assert settings.auth.enabled is False


def test_wrong_type_in_file_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "srt:\n  maxClients: lots\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert str(path) in str(error.value) and "srt.maxClients" in str(error.value)


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "web:\n  name: ok\n  hostname: [unclosed\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert str(path) in str(error.value) and "line" in str(error.value)


@pytest.mark.parametrize("make", [lambda p: p / "missing.yml", lambda p: p])
def test_unreadable_file_is_named(tmp_path: Path, make) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert str(path) in str(error.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(None, environ={"GHOSTREAM_SRT_ENABLED": "maybe"})
    assert "GHOSTREAM_SRT_ENABLED" in str(error.value) and "srt.enabled" in str(error.value)


def test_unknown_keys_are_warnings_naming_them(tmp_path: Path, caplog) -> None:
    path = write(tmp_path, "web:\n  colour: blue\nextra: 1\n")
    with caplog.at_level(logging.WARNING):
        settings = load_settings(path, environ={"GHOSTREAM_WEB_NOPE": "x"})
    assert settings.web == Settings().web
    assert "web.colour" in caplog.text and "'extra'" in caplog.text
    assert "GHOSTREAM_WEB_NOPE" in caplog.text


def test_bad_listen_address_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "web:\n  listenAddress: nope\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert "web.listenAddress" in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [(":8080", "", 8080), ("127.0.0.1:8080", "127.0.0.1", 8080), ("[::1]:9710", "::1", 9710)],
)
def test_listen_address_forms(text: str, host: str, port: int) -> None:
    address = ListenAddress.parse(text)
    assert (address.host, address.port) == (host, port)
    assert ListenAddress.parse(str(address)) == address


@pytest.mark.parametrize("text", ["8080x", "host:", ":99999", "::1:80", "[::1]", ""])
def test_listen_address_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        ListenAddress.parse(text)


def test_secrets_are_masked_only_when_asked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "srt:\n  passphrase: longenoughphrase\n"
        "forwarding:\n  demo: [rtmp://live.example.com/app/streamkey123]\n",
    )
    settings = load_settings(path, environ={})
    masked = str(settings.to_yaml_dict(mask_secrets=True))
    clear = str(settings.to_yaml_dict(mask_secrets=False))
    for secret in ("longenoughphrase", "streamkey123", "$2b$"):
        assert secret not in masked
        assert secret in clear


def test_example_file_documents_every_key_with_its_default() -> None:
    """ghostream.yml.example, uncommented, is exactly the defaults (plus its forwarding sample)."""
    example = Path(__file__).resolve().parents[2] / "ghostream.yml.example"
    lines = example.read_text().splitlines()
    uncommented = [
        line[1:] if line.startswith("#") and (line[1:2].isalpha() or line[1:3] == "  ") else line
        for line in lines
    ]
    data = yaml.safe_load("\n".join(uncommented))
    defaults = Settings().to_yaml_dict(mask_secrets=False)
    data.pop("forwarding")
    defaults.pop("forwarding")
    assert data == defaults
