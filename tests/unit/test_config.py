"""Configuration: the reference's keys and defaults, file and environment precedence, errors.

Existing deployments keep their `ghostream.yml` and environment, so every key and default
of the original server's documented table is pinned here, and every rejected configuration
must say which key and which file or variable to fix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from ghostream import config as config_module
from ghostream.config import ConfigError, ListenAddress, Settings, load_settings

# Every row of the configuration table users rely on (except auth.basic.credentials, whose
# default is a demo user checked by its password below), with the documented default.
REFERENCE_TABLE = {
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
}

# Keys the later Go server added, with the defaults the reference gives for them.
REFERENCE_LATER_KEYS = {
    "telnet.enabled": False,
    "telnet.listenAddress": ":8023",
    "transcoder.text.enabled": False,
    "transcoder.text.width": 80,
    "transcoder.text.height": 45,
    "transcoder.text.framerate": 20,
}

DEMO_HASH = "$2b$10$ie94Nv5Qx6B2.KXfJMbFtOwOdWGNIR96ACPMADPEhWMzqe.3kcgsS"


@pytest.fixture(autouse=True)
def no_system_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With no path given the loader reads /etc/ghostream/ghostream.yml if it exists.

    Tests must not depend on the machine they run on, so that file is pointed elsewhere.
    """
    monkeypatch.setattr(config_module, "DEFAULT_PATH", tmp_path / "absent.yml")


def lookup(tree: dict[str, Any], dotted: str) -> Any:
    """The value of `section.key` in a dumped configuration."""
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ghostream.yml"
    path.write_text(text)
    return path


def load_error(path: Path | None, environ: dict[str, str]) -> str:
    """The message of the ConfigError the loader must raise."""
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ=environ)
    return str(error.value)


# Defaults.


@pytest.mark.parametrize("key", sorted({**REFERENCE_TABLE, **REFERENCE_LATER_KEYS}))
def test_defaults_match_the_reference(key: str) -> None:
    expected = {**REFERENCE_TABLE, **REFERENCE_LATER_KEYS}[key]
    value = lookup(load_settings(None, environ={}).to_yaml_dict(mask_secrets=False), key)
    if key.endswith(".listenAddress"):
        # The dump is text; what must match is the address it means, not its spelling.
        assert ListenAddress.parse(value) == ListenAddress.parse(expected)
    else:
        assert value == expected
        assert type(value) is type(expected)


def test_defaults_come_from_nowhere_else() -> None:
    assert load_settings(None, environ={}).source == "built-in defaults"


def test_default_credentials_are_the_demo_user() -> None:
    """A fresh install accepts a test publish with the stream key demo:demo."""
    settings = load_settings(None, environ={})
    credentials = settings.auth.basic.credentials
    assert list(credentials) == ["demo"]
    assert bcrypt.checkpw(b"demo", credentials["demo"].encode())
    assert not bcrypt.checkpw(b"wrong", credentials["demo"].encode())
    assert settings.auth.uses_demo_credentials


def test_configured_credentials_replace_the_demo_user(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
    path = write(tmp_path, f"auth:\n  basic:\n    credentials:\n      alice: '{hashed}'\n")
    settings = load_settings(path, environ={})
    assert settings.auth.basic.credentials == {"alice": hashed}
    assert not settings.auth.uses_demo_credentials


def test_system_file_is_read_when_no_path_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    system_file = write(tmp_path, "web:\n  name: Campus TV\n")
    monkeypatch.setattr(config_module, "DEFAULT_PATH", system_file)
    settings = load_settings(None, environ={})
    assert settings.web.name == "Campus TV"
    assert settings.source == str(system_file)


# Precedence: defaults < file < environment.


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "web:\n  name: From file\n  listenAddress: 127.0.0.1:8081\n"
        "srt:\n  maxClients: 3\nwebrtc:\n  STUNServers: [stun:stun.example.org:3478]\n",
    )
    settings = load_settings(path, environ={})
    assert settings.web.name == "From file"
    assert settings.web.listen_address == ListenAddress("127.0.0.1", 8081)
    assert settings.srt.max_clients == 3
    assert settings.webrtc.stun_servers == ["stun:stun.example.org:3478"]
    # Keys the file leaves out, in its sections and in others, keep their defaults.
    assert settings.web.hostname == "localhost"
    assert settings.srt.listen_address == ListenAddress("", 9710)
    assert settings.monitoring.listen_address == ListenAddress("", 2112)
    assert settings.source == str(path)


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "web:\n  name: From file\n  listenAddress: 127.0.0.1:8081\n"
        "auth:\n  ldap:\n    uri: ldap://file.example.org\n    userdn: ou=file\n"
        "srt:\n  maxClients: 3\n",
    )
    settings = load_settings(
        path,
        environ={
            "GHOSTREAM_WEB_LISTENADDRESS": "[::1]:8082",
            "GHOSTREAM_AUTH_LDAP_URI": "ldaps://env.example.org",
            "GHOSTREAM_SRT_MAXCLIENTS": "7",
        },
    )
    assert settings.web.listen_address == ListenAddress("::1", 8082)
    assert settings.auth.ldap.uri == "ldaps://env.example.org"
    assert settings.srt.max_clients == 7
    # The file's other keys in the same sections stay.
    assert settings.web.name == "From file"
    assert settings.auth.ldap.userdn == "ou=file"
    assert settings.source == f"{path} + environment"


def test_environment_fills_a_section_the_file_leaves_empty(tmp_path: Path) -> None:
    """`web:` with every key commented out is a null section, not an error."""
    path = write(tmp_path, "web:\n#  name: Old name\nauth:\n  ldap:\n")
    settings = load_settings(
        path, environ={"GHOSTREAM_WEB_NAME": "From env", "GHOSTREAM_AUTH_LDAP_URI": "ldap://x"}
    )
    assert settings.web.name == "From env"
    assert settings.auth.ldap.uri == "ldap://x"


@pytest.mark.parametrize(
    "name", ["GHOSTREAM_SRT_MAXCLIENTS", "ghostream_srt_maxclients", "Ghostream_Srt_MaxClients"]
)
def test_environment_names_are_case_insensitive(name: str) -> None:
    assert load_settings(None, environ={name: "7"}).srt.max_clients == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True)]
    + [("false", False), ("0", False), ("no", False), ("Off", False)],
)
def test_environment_booleans(text: str, expected: bool) -> None:
    settings = load_settings(None, environ={"GHOSTREAM_WEB_ONESTREAMPERDOMAIN": text})
    assert settings.web.one_stream_per_domain is expected


def test_environment_values_take_the_key_type() -> None:
    settings = load_settings(
        None,
        environ={
            "GHOSTREAM_SRT_MAXCLIENTS": " 7 ",
            "GHOSTREAM_WEB_ONESTREAMPERDOMAIN": "true",
            "GHOSTREAM_MONITORING_LISTENADDRESS": "127.0.0.1:2113",
            "GHOSTREAM_WEB_NAME": "42",
        },
    )
    assert settings.srt.max_clients == 7
    assert settings.web.one_stream_per_domain is True
    assert settings.monitoring.listen_address == ListenAddress("127.0.0.1", 2113)
    assert settings.web.name == "42"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stun:a.example:3478", ["stun:a.example:3478"]),
        ("stun:a.example:1, stun:b.example:2", ["stun:a.example:1", "stun:b.example:2"]),
        ("stun:a.example:3478,,", ["stun:a.example:3478"]),
        ("", []),
    ],
)
def test_environment_lists_are_comma_separated(text: str, expected: list[str]) -> None:
    settings = load_settings(None, environ={"GHOSTREAM_WEBRTC_STUNSERVERS": text})
    assert settings.webrtc.stun_servers == expected


def test_environment_maps_are_yaml() -> None:
    settings = load_settings(
        None,
        environ={
            "GHOSTREAM_FORWARDING": '{"demo": ["rtmp://live.example.com/app/key"]}',
            "GHOSTREAM_WEB_MAPDOMAINTOSTREAM": "{tv-example-org: tv}",
        },
    )
    assert settings.forwarding == {"demo": ["rtmp://live.example.com/app/key"]}
    assert settings.web.map_domain_to_stream == {"tv-example-org": "tv"}


def test_variables_without_the_prefix_are_not_configuration() -> None:
    settings = load_settings(None, environ={"WEB_NAME": "x", "GHOSTREAMX_WEB_NAME": "y"})
    assert settings.web.name == "Ghostream"


# Errors name the key and where it came from.


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("srt:\n  maxClients: lots\n", "srt.maxClients"),
        ("srt:\n  maxClients: true\n", "srt.maxClients"),
        ("web:\n  enabled: maybe\n", "web.enabled"),
        ("webrtc:\n  STUNServers: 5\n", "webrtc.STUNServers"),
        ("forwarding: [rtmp://a/b]\n", "forwarding"),
        ("web: 5\n", "web"),
        ("auth:\n  basic:\n    credentials:\n      alice: [x]\n", "auth.basic.credentials.alice"),
    ],
)
def test_wrong_type_in_file_names_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path, {})
    assert str(path) in message
    assert key in message


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "web:\n  name: ok\n  hostname: a: b\n")
    message = load_error(path, {})
    assert str(path) in message
    assert "line 3" in message


def test_file_that_is_not_a_mapping_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "- web\n- srt\n")
    assert str(path) in load_error(path, {})


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: tmp / "missing.yml",
        lambda tmp: tmp,
        # Unreadable for every user, root included (a mode of 0 is not, for root).
        lambda tmp: write(tmp, "web:\n  name: x\n") / "ghostream.yml",
    ],
    ids=["missing", "directory", "under-a-file"],
)
def test_unreadable_file_names_the_file(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)
    assert str(path) in load_error(path, {})


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("GHOSTREAM_SRT_ENABLED", "maybe", "srt.enabled"),
        ("GHOSTREAM_SRT_MAXCLIENTS", "lots", "srt.maxClients"),
        ("GHOSTREAM_SRT_MAXCLIENTS", "0", "srt.maxClients"),
        ("GHOSTREAM_WEB_LISTENADDRESS", "nope", "web.listenAddress"),
        ("GHOSTREAM_FORWARDING", "[rtmp://a/b]", "forwarding"),
        ("GHOSTREAM_AUTH_BACKEND", "kerberos", "auth.backend"),
        # Python's int() takes these; nobody writing a port or a count means them.
        ("GHOSTREAM_SRT_MAXCLIENTS", "1_0", "srt.maxClients"),
        ("GHOSTREAM_SRT_MAXCLIENTS", "\u0661\u0660", "srt.maxClients"),
        ("GHOSTREAM_WEBRTC_MAXPORTUDP", "70000", "webrtc.maxPortUDP"),
    ],
)
def test_bad_environment_value_names_variable_and_key(name: str, value: str, key: str) -> None:
    message = load_error(None, {name: value})
    assert name in message
    assert key in message


def test_environment_into_a_non_mapping_section_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "web: 5\n")
    assert "GHOSTREAM_WEB_NAME" in load_error(path, {"GHOSTREAM_WEB_NAME": "x"})


def test_unknown_keys_are_warnings_naming_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Go server ignored keys it did not know; an old file must still start the server."""
    path = write(tmp_path, "web:\n  colour: blue\n  name: Known\nextra: 1\n")
    with caplog.at_level(logging.WARNING, logger=config_module.__name__):
        settings = load_settings(path, environ={"GHOSTREAM_WEB_NOPE": "x"})
    assert settings.web.name == "Known"
    assert settings.web.hostname == Settings().web.hostname
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("web.colour" in w and str(path) in w for w in warnings)
    assert any("'extra'" in w for w in warnings)
    assert any("GHOSTREAM_WEB_NOPE" in w for w in warnings)


def test_known_keys_give_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "web:\n  name: x\nforwarding:\n  anything: [rtmp://a/b]\n")
    with caplog.at_level(logging.WARNING, logger=config_module.__name__):
        load_settings(path, environ={"GHOSTREAM_SRT_LATENCY": "200", "HOME": "/root"})
    assert caplog.records == []


def test_bad_listen_address_in_file_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "web:\n  listenAddress: nope\n")
    message = load_error(path, {})
    assert "web.listenAddress" in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("auth:\n  backend: kerberos\n", "auth.backend"),
        ("srt:\n  passphrase: short\n", "srt.passphrase"),
        ("srt:\n  latency: 5\n", "srt.latency"),
        ("webrtc:\n  minPortUDP: 10010\n", "webrtc.minPortUDP"),
        ("webrtc:\n  publicIPs: [stream.example.com]\n", "webrtc.publicIPs"),
        ("webrtc:\n  transcode: sometimes\n", "webrtc.transcode"),
        ("webrtc:\n  minPortUDP: 0\n", "webrtc.minPortUDP"),
        ("webrtc:\n  minPortUDP: 10000\n  maxPortUDP: 70000\n", "webrtc.maxPortUDP"),
        ("auth:\n  basic:\n    credentials:\n      alice: 5\n", "auth.basic.credentials.alice"),
        ("auth:\n  basic:\n    credentials:\n      alice: hunter2\n", "auth.basic.credentials"),
        ("streams:\n  reconnectGrace: -1\n", "streams.reconnectGrace"),
        ("transcoding:\n  profiles: [big:1200:96]\n", "transcoding.profiles"),
        ("transcoding:\n  profiles: [480p:fast:96]\n", "transcoding.profiles"),
    ],
)
def test_out_of_range_values_name_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path, {})
    assert key in message
    assert str(path) in message
    assert "hunter2" not in message


# Listen addresses.


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        (":8080", "", 8080),
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("[::1]:8080", "::1", 8080),
        ("stream.example.org:9710", "stream.example.org", 9710),
        ("0.0.0.0:0", "0.0.0.0", 0),
    ],
)
def test_listen_address_forms(text: str, host: str, port: int) -> None:
    address = ListenAddress.parse(text)
    assert (address.host, address.port) == (host, port)
    assert ListenAddress.parse(str(address)) == address


@pytest.mark.parametrize(
    "text",
    ["8080x", "host:", "8080", ":8080x", ":99999", ":-1", "::1:80", "[::1]", "[::1]:", "[]:80"]
    + ["", "host:port", "a b:80", " :8080", ":8080 ", ":\u0668\u0660"],
)
def test_listen_address_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        ListenAddress.parse(text)


# Secrets in `ghostream config` output.

FORWARD_URLS = [
    "rtmp://live.example.com/app/streamkey123",
    "rtmp://live.example.com/app?key=querykey456",
    "rtmp://publisher:userpass789@ingest.example.com/live/pathkey000",
    "srt://relay.example.com:9710?streamid=demo:srtkey111",
]


def test_secrets_are_masked_only_when_asked(tmp_path: Path) -> None:
    urls = "".join(f"    - {url}\n" for url in FORWARD_URLS)
    path = write(tmp_path, f"srt:\n  passphrase: longenoughphrase\nforwarding:\n  demo:\n{urls}")
    settings = load_settings(path, environ={})
    masked = yaml.safe_dump(settings.to_yaml_dict(mask_secrets=True))
    clear = yaml.safe_dump(settings.to_yaml_dict(mask_secrets=False))
    secrets = ["longenoughphrase", DEMO_HASH, "streamkey123", "querykey456", "userpass789"]
    for secret in [*secrets, "pathkey000", "srtkey111"]:
        assert secret not in masked
        assert secret in clear
    # Where a stream goes stays visible; only its key is hidden.
    assert "live.example.com" in masked


def test_masking_keeps_who_has_credentials(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
    path = write(tmp_path, f"auth:\n  basic:\n    credentials:\n      alice: '{hashed}'\n")
    masked = load_settings(path, environ={}).to_yaml_dict(mask_secrets=True)
    credentials = lookup(masked, "auth.basic.credentials")
    assert list(credentials) == ["alice"]
    assert hashed not in yaml.safe_dump(masked)


# The example file shipped with the server.


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


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GHOSTREAM_ORIGIN_URL", "http://origin:9710", "origin.url is wrong"),
        ("GHOSTREAM_ORIGIN_URL", "srt://origin", "origin.url is wrong"),
        ("GHOSTREAM_ORIGIN_KEY", "short", "origin.key must be 8 to 128"),
        ("GHOSTREAM_SRT_PULLKEYS", "good-edge-key,bad key, with spaces", "srt.pullKeys must"),
        ("GHOSTREAM_ORIGIN_IDLETIMEOUT", "0", "origin.idleTimeout must be at least 1"),
        ("GHOSTREAM_ORIGIN_WEBURL", "origin:8080", "origin.webUrl must be an address"),
    ],
)
def test_edge_settings_are_checked_without_echoing_keys(
    variable: str, value: str, message: str
) -> None:
    error = load_error(None, {variable: value})
    assert error.startswith(variable) and message in error
    if "KEY" in variable:
        assert value.split(",")[-1] not in error


def test_an_edge_setting_parses_its_origin() -> None:
    settings = load_settings(None, environ={"GHOSTREAM_ORIGIN_URL": "srt://[::1]:9710"})
    assert config_module.srt_address(settings.origin.url) == ("::1", 9710)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("webhooks: 3", "webhooks must be a list of mappings, not 3"),
        ("webhooks: [5]", "webhooks.0 must be a mapping of keys"),
        ("webhooks:\n  - urll: http://x/", "webhooks.0.urll is not a key of this entry"),
        ("webhooks:\n  - url: ftp://x/", "webhooks.0.url must be an http:// or https:// URL"),
        (
            "webhooks:\n  - url: http://a/\n  - url: http://a/b",
            "webhooks.1.name repeats 'a'; give each a name",
        ),
        (
            "history:\n  enabled: false\nwebhooks:\n  - url: http://a/",
            "webhooks are delivered from the history",
        ),
        ("auth:\n  backend: http", "auth.http.url must be an http:// or https:// URL"),
        ("auth:\n  backend: cookie", "auth.backend must be basic, ldap or http, not 'cookie'"),
        ("auth:\n  http:\n    timeout: 0", "auth.http.timeout must be a positive number"),
    ],
)
def test_hook_settings_errors_name_the_key_and_file(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_webhooks_from_file_and_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "webhooks:\n  - url: https://bot.example.com/x\n    secret: s3\n    events: [fault]\n",
    )
    hook = load_settings(path, environ={}).webhooks[0]
    assert (hook.url, hook.secret, hook.events, hook.label) == (
        "https://bot.example.com/x",
        "s3",
        ["fault"],
        "bot.example.com",
    )
    assert load_settings(path, environ={}).to_yaml_dict()["webhooks"][0]["secret"] == "********"
    variable = {"GHOSTREAM_WEBHOOKS": '[{"url": "http://a:8/h", "name": "n"}]'}
    assert load_settings(None, environ=variable).webhooks[0].label == "n"
