"""Typed settings from defaults, `ghostream.yml` and `GHOSTREAM_<SECTION>_<KEY>` variables.

Existing deployments keep their `ghostream.yml` and their environment, so the
YAML keys are the original server's (camelCase) and every key keeps its
default.  The schema is the dataclasses below: each field names its YAML key,
so loading, environment overrides, type checks, `ghostream config` and the
defaults test all walk the same tree instead of repeating the key list.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("/etc/ghostream/ghostream.yml")
ENV_PREFIX = "GHOSTREAM_"
# bcrypt hash of "demo": the original server's demo user, so that a fresh
# install accepts a test publish with the stream key "demo:demo".
DEMO_USER = "demo"
DEMO_HASH = "$2b$10$ie94Nv5Qx6B2.KXfJMbFtOwOdWGNIR96ACPMADPEhWMzqe.3kcgsS"
MASK = "********"
WEBRTC_TRANSCODE_MODES = ("auto", "always", "never")


PULL_KEY = re.compile(r"[A-Za-z0-9_.~+/-]{8,128}")
BCRYPT_HASH = re.compile(r"\$2[aby]?\$[0-9]{2}\$[./A-Za-z0-9]{53}")


def srt_address(url: str) -> tuple[str, int]:
    """Host and port of `srt://HOST:PORT`; ValueError naming the URL otherwise."""
    match = re.fullmatch(
        r"srt://(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:/\[\]\s]+)):(?P<port>[0-9]{1,5})/?", url
    )
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"{url!r} is not an address like srt://origin:9710")
    return match["v6"] or match["host"], int(match["port"])


class ConfigError(Exception):
    """A configuration the server cannot run with; the message names the key and source."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """`:port`, `host:port` or `[v6]:port`; an empty host means every interface."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        match = re.fullmatch(
            r"(?:\[(?P<v6>[0-9a-fA-F:.%\w]+)\]|(?P<host>[^:\[\]\s]*)):(?P<port>[0-9]+)", text
        )
        if match is None:
            raise ValueError(f"{text!r} is not an address like :9710, host:9710 or [::1]:9710")
        port = int(match["port"])
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is out of range")
        return cls(match["v6"] or match["host"] or "", port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _key(name: str, *, doc: str = "", secret: bool = False, **kwargs: Any) -> Any:
    return field(metadata={"key": name, "secret": secret, "doc": doc}, **kwargs)


@dataclass(frozen=True)
class BasicAuthSettings:
    credentials: dict[str, str] = _key(
        "credentials",
        doc=(
            "Stream id → bcrypt hash of its password (`ghostream hash-password`). While unset, "
            "the user `demo` with password `demo` exists and the server warns at start."
        ),
        secret=True,
        default_factory=lambda: {DEMO_USER: DEMO_HASH},
    )


@dataclass(frozen=True)
class LdapSettings:
    uri: str = _key(
        "uri",
        doc="LDAP server to bind to (`ldap://` or `ldaps://`).",
        default="ldap://127.0.0.1:389",
    )
    userdn: str = _key(
        "userdn",
        doc="Publishers bind as `cn=<id>,<userdn>` with their password.",
        default="cn=users,dc=example,dc=com",
    )
    aliases: dict[str, str] = _key(
        "aliases",
        doc="Stream id → LDAP user, to let a user publish under other ids.",
        default_factory=dict,
    )


@dataclass(frozen=True)
class HttpAuthSettings:
    url: str = _key(
        "url",
        doc=(
            "With `auth.backend: http`, each attempt is POSTed as JSON (action, protocol, "
            "stream, user, password, client) to this URL: a 2xx answer allows it."
        ),
        default="",
    )
    timeout: int = _key(
        "timeout",
        doc="Milliseconds to wait for the hook's answer; no answer in time refuses.",
        default=3000,
    )
    cache_seconds: int = _key(
        "cacheSeconds",
        doc="Seconds an allowance is remembered for the same attempt (0: ask every time).",
        default=0,
    )
    reads: bool = _key(
        "reads",
        doc=(
            "Ask the hook about viewers too (action `read`): SRT viewers send the password as "
            "`#!::r=ID,m=request,s=TOKEN`, WHEP viewers as Bearer or `?token=` (the player "
            "page passes its own `?token=` on)."
        ),
        default=False,
    )


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool = _key(
        "enabled",
        doc="Check publishers' passwords; when false anyone may publish any stream id.",
        default=True,
    )
    backend: str = _key(
        "backend",
        doc=(
            "`basic` (bcrypt hashes in `auth.basic.credentials`), `ldap`, or `http` (a hook "
            "of yours at `auth.http.url` decides)."
        ),
        default="basic",
    )
    basic: BasicAuthSettings = _key("basic", default_factory=BasicAuthSettings)
    http: HttpAuthSettings = _key("http", default_factory=HttpAuthSettings)
    ldap: LdapSettings = _key("ldap", default_factory=LdapSettings)
    failure_delay: int = _key(
        "failureDelay",
        doc=(
            "Milliseconds a refusal waits after the second failed attempt of a host or stream id;"
            " each further failure doubles it (admin credential too)."
        ),
        default=1000,
    )
    max_failure_delay: int = _key(
        "maxFailureDelay",
        doc="Longest wait, in milliseconds, before a failed attempt is refused.",
        default=60000,
    )

    @property
    def uses_demo_credentials(self) -> bool:
        return (
            self.enabled
            and self.backend == "basic"
            and self.basic.credentials.get(DEMO_USER) == DEMO_HASH
        )


@dataclass(frozen=True)
class AdminSettings:
    credentials: dict[str, str] = _key(
        "credentials",
        doc=(
            "User → bcrypt hash of a password (`ghostream hash-password`), for HTTP Basic auth on "
            "`/api/admin/`. With neither this nor `admin.token`, the admin API answers 401."
        ),
        secret=True,
        default_factory=dict,
    )
    token: str = _key(
        "token",
        doc="bcrypt hash of a token sent as `Authorization: Bearer TOKEN` to `/api/admin/`.",
        secret=True,
        default="",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.credentials or self.token)


@dataclass(frozen=True)
class Webhook:
    """One entry of `webhooks`: where the history's events are delivered, and which."""

    url: str = _key("url", default="")
    secret: str = _key("secret", secret=True, default="")
    events: list[str] = _key("events", default_factory=list)
    name: str = _key("name", default="")

    @property
    def label(self) -> str:
        """Its name in logs, metrics and the delivery cursor: `name`, else the URL's host."""
        return self.name or self.url.partition("://")[2].partition("/")[0].rpartition("@")[2]


@dataclass(frozen=True)
class MonitoringSettings:
    enabled: bool = _key("enabled", doc="Serve Prometheus metrics at `/metrics`.", default=True)
    listen_address: ListenAddress = _key(
        "listenAddress", doc="Address of the metrics endpoint.", default=ListenAddress("", 2112)
    )


@dataclass(frozen=True)
class SrtSettings:
    enabled: bool = _key("enabled", doc="Accept SRT publishers and viewers.", default=True)
    listen_address: ListenAddress = _key(
        "listenAddress",
        doc="UDP address of the SRT listener (OBS: `srt://HOST:9710`).",
        default=ListenAddress("", 9710),
    )
    max_clients: int = _key(
        "maxClients",
        doc="Most SRT connections at once; more are refused (reject code 1402).",
        default=64,
    )
    max_clients_per_host: int = _key(
        "maxClientsPerHost",
        doc=(
            "Most SRT connections at once from one address (an IPv6 /64), so that one host"
            " cannot take every slot of `srt.maxClients`; more are refused (1402)."
        ),
        default=8,
    )
    latency: int = _key(
        "latency",
        doc=(
            "SRT receive latency in milliseconds (TSBPD); the larger of both peers' values is used."
        ),
        default=120,
    )
    passphrase: str = _key(
        "passphrase",
        doc="SRT encryption passphrase (10 to 79 characters); empty means no encryption.",
        secret=True,
        default="",
    )
    passphrases: dict[str, str] = _key(
        "passphrases",
        doc=(
            "Stream id or user (`u=` of a `#!::` stream id) → its own SRT passphrase, used instead "
            "of `srt.passphrase` by that stream's publisher and viewers."
        ),
        secret=True,
        default_factory=dict,
    )
    default_stream: str = _key(
        "defaultStream",
        doc=(
            "Stream served to SRT viewers that send no stream id (VLC); empty means the only live"
            " stream."
        ),
        default="",
    )
    pull_keys: list[str] = _key(
        "pullKeys",
        doc=(
            "Keys of the edge servers that pull streams from this one (their `origin.key`): an"
            " SRT viewer presenting one is an edge, and only edges may report their viewers."
        ),
        secret=True,
        default_factory=list,
    )
    pull_only: bool = _key(
        "pullOnly",
        doc=(
            "true: SRT viewers must be edges presenting one of `srt.pullKeys` (WebRTC and LL-HLS"
            " viewers are not affected)."
        ),
        default=False,
    )


@dataclass(frozen=True)
class RtmpTlsSettings:
    certificate: str = _key(
        "certificate",
        doc="PEM certificate chain file for RTMPS; with `rtmp.tls.key`, RTMPS is on.",
        default="",
    )
    key: str = _key("key", doc="PEM private key file of `rtmp.tls.certificate`.", default="")
    listen_address: ListenAddress = _key(
        "listenAddress",
        doc="TCP address of the RTMPS listener (OBS: `rtmps://HOST:1936/live`).",
        default=ListenAddress("", 1936),
    )

    @property
    def enabled(self) -> bool:
        return bool(self.certificate and self.key)


@dataclass(frozen=True)
class RtmpSettings:
    enabled: bool = _key(
        "enabled",
        doc="Accept RTMP publishers (stream key `ID:PASSWORD`, checked like SRT's).",
        default=True,
    )
    listen_address: ListenAddress = _key(
        "listenAddress",
        doc="TCP address of the RTMP listener (OBS: server `rtmp://HOST/live`).",
        default=ListenAddress("", 1935),
    )
    max_clients: int = _key(
        "maxClients",
        doc="Most RTMP and RTMPS connections at once; more are closed at once.",
        default=64,
    )
    tls: RtmpTlsSettings = _key("tls", default_factory=RtmpTlsSettings)


@dataclass(frozen=True)
class OriginSettings:
    """Where an edge server pulls the streams its viewers ask for."""

    url: str = _key(
        "url",
        doc=(
            "SRT address of the origin (`srt://origin:9710`); when set, this server is an edge"
            " that pulls a stream from there when a viewer asks for one it does not have."
        ),
        default="",
    )
    passphrase: str = _key(
        "passphrase",
        doc="SRT encryption passphrase of the origin (its `srt.passphrase`); empty: none.",
        secret=True,
        default="",
    )
    key: str = _key(
        "key",
        doc=(
            "This edge's key, one of the origin's `srt.pullKeys`: sent in the stream id of each"
            " pull (`#!::r=ID,m=request,s=KEY`) and with each viewer report."
        ),
        secret=True,
        default="",
    )
    idle_timeout: int = _key(
        "idleTimeout",
        doc="Seconds a pulled stream is kept after its last viewer left.",
        default=10,
    )
    web_url: str = _key(
        "webUrl",
        doc=(
            "Web address of the origin (`http://origin:8080`): this edge reports its viewers"
            " there every few seconds so that the origin counts them; empty: no reports."
        ),
        default="",
    )


MAX_WORKERS = 256


@dataclass(frozen=True)
class ServerSettings:
    workers: str = _key(
        "workers",
        doc=(
            "Worker processes sharing the public ports: a number, or `auto` for one per CPU this"
            " process may use; 1 runs a single process. With more, each worker takes its own"
            " WebRTC ports (see Every core). `ghostream config` shows the number in effect."
        ),
        default="1",
    )

    @property
    def worker_count(self) -> int:
        """The number of workers; "auto" is every CPU this process may run on."""
        workers = self.workers.strip()
        if workers == "auto":
            return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))
        return int(workers)


@dataclass(frozen=True)
class WorkerRole:
    """Which of `count` workers this process is, and where the workers meet (unix sockets)."""

    index: int
    count: int
    runtime: Path


@dataclass(frozen=True)
class StreamsSettings:
    reconnect_grace: int = _key(
        "reconnectGrace",
        doc=(
            "Seconds a stream waits for its publisher to come back before its viewers are told it"
            " ended."
        ),
        default=10,
    )


@dataclass(frozen=True)
class HistorySettings:
    enabled: bool = _key(
        "enabled", doc="Keep the history of publish and view sessions in SQLite.", default=True
    )
    path: str = _key(
        "path",
        doc="History database; empty means `$XDG_DATA_HOME/ghostream/history.sqlite3`.",
        default="",
    )
    retention: int = _key(
        "retention",
        doc="Days sessions and events are kept; older ones are deleted (0 keeps them forever).",
        default=90,
    )
    truncate_peers: bool = _key(
        "truncatePeers",
        doc="Store peers as networks (IPv4 /24, IPv6 /48) without port instead of full addresses.",
        default=False,
    )

    @property
    def database(self) -> Path:
        if self.path:
            return Path(self.path).expanduser()
        data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        return Path(data_home) / "ghostream" / "history.sqlite3"


@dataclass(frozen=True)
class RecordingSettings:
    enabled: bool = _key(
        "enabled",
        doc=(
            "Record shows to disk as they are streamed (fMP4 segments and a VOD playlist: "
            "nothing is re-encoded), to replay at `/ID/shows/N`."
        ),
        default=False,
    )
    streams: list[str] = _key(
        "streams", doc="Stream ids to record; empty records every stream.", default_factory=list
    )
    directory: str = _key(
        "directory",
        doc="Where recordings go; empty means `recordings/` beside the history database.",
        default="",
    )
    max_age: int = _key(
        "maxAgeDays", doc="Days a recording is kept from its start (0: no limit by age).", default=0
    )
    max_size: int = _key(
        "maxSizeMB",
        doc="Megabytes all recordings may take; past it the oldest shows go first (0: no limit).",
        default=0,
    )
    public: bool = _key(
        "public",
        doc="Serve recordings to anyone; when false only with the admin credential.",
        default=False,
    )

    def records(self, stream_id: str) -> bool:
        return self.enabled and (not self.streams or stream_id in self.streams)


@dataclass(frozen=True)
class TelnetSettings:
    enabled: bool = _key(
        "enabled",
        doc=(
            "Show streams as colour text art to `telnet HOST 8023` (needs "
            "`transcoder.text.enabled` too)."
        ),
        default=False,
    )
    listen_address: ListenAddress = _key(
        "listenAddress", doc="TCP address of the telnet output.", default=ListenAddress("", 8023)
    )
    max_clients_per_host: int = _key(
        "maxClientsPerHost",
        doc="Most telnet connections at once from one address (an IPv6 /64).",
        default=8,
    )


@dataclass(frozen=True)
class TextTranscoderSettings:
    enabled: bool = _key(
        "enabled",
        doc="Make text art for telnet viewers; when false the telnet output stays off.",
        default=False,
    )
    width: int = _key(
        "width",
        doc="Text-art width in pixels, one character column each (smaller to fit a terminal).",
        default=80,
    )
    height: int = _key(
        "height",
        doc="Text-art height in pixels, two per character row (the source's shape is kept).",
        default=45,
    )
    framerate: int = _key("framerate", doc="Text-art frames per second, at most.", default=20)


@dataclass(frozen=True)
class TranscoderSettings:
    text: TextTranscoderSettings = _key("text", default_factory=TextTranscoderSettings)


@dataclass(frozen=True)
class Profile:
    """A quality variant: `name:videoKbps:audioKbps`, its height read from the name (480p)."""

    name: str
    height: int
    video_kbps: int
    audio_kbps: int

    @classmethod
    def parse(cls, text: str) -> Profile:
        name, video, audio = text.split(":")
        if not re.fullmatch(r"[0-9]{2,4}p", name):
            raise ValueError(f"profile name {name!r} is not a height such as 480p")
        return cls(name, int(name[:-1]), int(video), int(audio))


@dataclass(frozen=True)
class TranscodingSettings:
    enabled: bool = _key(
        "enabled",
        doc="Offer quality variants `ID@<profile>` scaled from each stream.",
        default=True,
    )
    on_demand: bool = _key(
        "onDemand",
        doc=(
            "true: make a variant only while someone watches it; false: from the start of every "
            "publish."
        ),
        default=True,
    )
    profiles: list[str] = _key(
        "profiles",
        doc=(
            "Variants as `NAME:VIDEO_KBPS:AUDIO_KBPS`, the name being the picture height "
            "(`480p`); only those smaller than the source are made."
        ),
        default_factory=lambda: ["720p:2500:128", "480p:1200:96", "360p:700:64"],
    )

    @property
    def parsed_profiles(self) -> list[Profile]:
        return [Profile.parse(text) for text in self.profiles]


@dataclass(frozen=True)
class TlsSettings:
    certificate: str = _key(
        "certificate",
        doc=(
            "PEM certificate chain (certbot's `fullchain.pem`); with `web.tls.key` the web server"
            " speaks HTTPS and HTTP/2 on `web.listenAddress`, and loads the files again when"
            " they change (renewals)."
        ),
        default="",
    )
    key: str = _key("key", doc="PEM private key of that certificate (`privkey.pem`).", default="")
    redirect_address: ListenAddress = _key(
        "redirectAddress",
        doc=(
            "With HTTPS: a plain-HTTP address (`:80`) that redirects every request to HTTPS;"
            " port 0 turns it off."
        ),
        default=ListenAddress("", 0),
    )

    @property
    def enabled(self) -> bool:
        return bool(self.certificate)


@dataclass(frozen=True)
class WebSettings:
    enabled: bool = _key(
        "enabled", doc="Serve the player pages, WHEP, LL-HLS and the JSON endpoints.", default=True
    )
    custom_css: str = _key(
        "customCss", doc="URL of an extra stylesheet added to every page.", default=""
    )
    favicon: str = _key(
        "favicon",
        doc="URL of the site icon (.ico, .png or .svg).",
        default="/static/img/favicon.svg",
    )
    hostname: str = _key(
        "hostname",
        doc="Server name shown to users (also in the publishing help).",
        default="localhost",
    )
    listen_address: ListenAddress = _key(
        "listenAddress", doc="TCP address of the web server.", default=ListenAddress("", 8080)
    )
    tls: TlsSettings = _key("tls", default_factory=TlsSettings)
    trusted_proxies: list[str] = _key(
        "trustedProxies",
        doc=(
            "Addresses or networks of reverse proxies in front of the web server (Traefik,"
            " nginx): their `X-Forwarded-For` names the client, for every per-address rule"
            " (guessing delays, WebRTC sessions and pages counted per address)."
        ),
        default_factory=list,
    )
    name: str = _key("name", doc="Site name, in titles and the header.", default="Ghostream")
    one_stream_per_domain: bool = _key(
        "oneStreamPerDomain",
        doc="The request's domain is the stream id: `/` plays the stream of that name.",
        default=False,
    )
    player_poster: str = _key(
        "playerPoster",
        doc="Image shown while the player loads or the stream is offline.",
        default="/static/img/no_stream.svg",
    )
    viewers_counter_refresh_period: int = _key(
        "viewersCounterRefreshPeriod",
        doc="Milliseconds between refreshes of the viewer counter.",
        default=20000,
    )
    widget_url: str = _key(
        "widgetURL",
        doc=(
            "Side panel (for example a chat) beside the player; `{{.Path}}` is replaced by the "
            "stream id. Hidden with `?nowidget`."
        ),
        default="",
    )
    map_domain_to_stream: dict[str, str] = _key(
        "mapDomainToStream",
        doc=(
            "Domain (dots written as dashes) → stream id shown on every path of it; `/about` "
            "shows the home page."
        ),
        default_factory=dict,
    )


@dataclass(frozen=True)
class WebrtcSettings:
    enabled: bool = _key("enabled", doc="WebRTC playback (WHEP at `/ID/whep`).", default=True)
    min_port_udp: int = _key(
        "minPortUDP",
        doc=(
            "Lowest UDP port for WebRTC media. Every browser shares these ports (one is "
            "enough); more ports spread the load, they do not limit the number of viewers."
        ),
        default=10000,
    )
    max_port_udp: int = _key("maxPortUDP", doc="Highest UDP port for WebRTC media.", default=10005)
    max_sessions_per_host: int = _key(
        "maxSessionsPerHost",
        doc=(
            "Most WebRTC viewer sessions at once from one address (an IPv6 /64); more offers are"
            " answered 429."
        ),
        default=8,
    )
    connect_timeout: int = _key(
        "connectTimeout",
        doc=(
            "Seconds a WebRTC session has to connect (ICE and DTLS) after its answer; one that"
            " has not by then ends."
        ),
        default=20,
    )
    tcp_listen_address: ListenAddress = _key(
        "tcpListenAddress",
        doc=(
            "TCP address for WebRTC media (ICE-TCP) when a browser's UDP is blocked; port 0 "
            "turns it off."
        ),
        default=ListenAddress("", 10000),
    )
    public_ips: list[str] = _key(
        "publicIPs",
        doc=(
            "IP addresses browsers should reach the WebRTC ports at, announced before the "
            "server's own (behind NAT or in Docker: the public or host address)."
        ),
        default_factory=list,
    )
    stun_servers: list[str] = _key(
        "STUNServers",
        doc=(
            "STUN servers given to browsers; the first `stun:` one also tells the server the "
            "public address of its UDP ports, announced besides `webrtc.publicIPs`."
        ),
        default_factory=lambda: ["stun:stun.l.google.com:19302"],
    )
    transcode: str = _key(
        "transcode",
        doc=(
            "Re-encode a stream for WebRTC viewers (once per stream, H.264 without B-frames): "
            "`auto` when browsers cannot take it as it is (B-frames, HEVC, 10-bit, 4:2:2), "
            "`always`, or `never` (such streams are then refused over WebRTC and players use "
            "LL-HLS)."
        ),
        default="auto",
    )


@dataclass(frozen=True)
class Settings:
    admin: AdminSettings = _key("admin", default_factory=AdminSettings)
    auth: AuthSettings = _key("auth", default_factory=AuthSettings)
    forwarding: dict[str, list[str]] = _key(
        "forwarding",
        doc=(
            "Stream id → output URLs (rtmp://, rtmps://, srt://, a file path) that receive the "
            "stream while it is live; `%name` and strftime fields (start time) are replaced."
        ),
        secret=True,
        default_factory=dict,
    )
    history: HistorySettings = _key("history", default_factory=HistorySettings)
    monitoring: MonitoringSettings = _key("monitoring", default_factory=MonitoringSettings)
    origin: OriginSettings = _key("origin", default_factory=OriginSettings)
    recording: RecordingSettings = _key("recording", default_factory=RecordingSettings)
    rtmp: RtmpSettings = _key("rtmp", default_factory=RtmpSettings)
    server: ServerSettings = _key("server", default_factory=ServerSettings)
    srt: SrtSettings = _key("srt", default_factory=SrtSettings)
    streams: StreamsSettings = _key("streams", default_factory=StreamsSettings)
    telnet: TelnetSettings = _key("telnet", default_factory=TelnetSettings)
    transcoder: TranscoderSettings = _key("transcoder", default_factory=TranscoderSettings)
    transcoding: TranscodingSettings = _key("transcoding", default_factory=TranscodingSettings)
    web: WebSettings = _key("web", default_factory=WebSettings)
    webrtc: WebrtcSettings = _key("webrtc", default_factory=WebrtcSettings)
    webhooks: list[Webhook] = _key(
        "webhooks",
        doc=(
            "Receivers of the history's events: a list of `{url, secret, events, name}`. Each "
            "event is POSTed as JSON, in order and at least once (resumed after a restart), "
            "signed with HMAC-SHA256 of the body under `secret` in `X-Ghostream-Signature: "
            "sha256=HEX`; `events` lists the kinds wanted (all when empty)."
        ),
        default_factory=list,
    )
    source: str = field(default="built-in defaults", compare=False)
    # Set in a worker process: its public ports are shared with the other workers.
    worker: WorkerRole | None = field(default=None, compare=False)

    def to_yaml_dict(self, *, mask_secrets: bool = True) -> dict[str, Any]:
        return _dump(self, mask_secrets)

    @property
    def recording_directory(self) -> Path:
        if self.recording.directory:
            return Path(self.recording.directory).expanduser()
        return self.history.database.parent / "recordings"


# Loading.


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, then the YAML file, then the environment; later sources win."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    file_path: Path | None = None
    if path is not None:
        file_path = Path(path)
        if not file_path.exists():
            raise ConfigError(f"{file_path}: configuration file not found")
    elif DEFAULT_PATH.exists():
        file_path = DEFAULT_PATH
    if file_path is not None:
        raw = _read_yaml(file_path)
        _check_unknown(raw, Settings, (), str(file_path))
        _note_origins(raw, Settings, (), str(file_path), origins)
    _apply_environment(raw, environ, origins)
    sources = [str(file_path)] if file_path else []
    if any(origin.startswith(ENV_PREFIX) for origin in origins.values()):
        sources.append("environment")
    settings = _build(Settings, raw, (), origins)
    _validate(settings, origins)
    # `auto` is resolved once, so that `ghostream config` shows the number in effect.
    server = dataclasses.replace(settings.server, workers=str(settings.server.worker_count))
    return dataclasses.replace(
        settings, server=server, source=" + ".join(sources) or "built-in defaults"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of sections")
    return data


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.metadata["key"]: f for f in dataclasses.fields(cls) if "key" in f.metadata}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp is not ListenAddress


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _check_unknown(raw: Any, cls: type, path: tuple[str, ...], source: str) -> None:
    if not isinstance(raw, dict):
        return
    known = _fields(cls)
    hints = _hints(cls)
    for key, value in raw.items():
        if key not in known:
            log.warning(
                "%s: unknown configuration key %r ignored", source, _dotted((*path, str(key)))
            )
            continue
        tp = hints[known[key].name]
        if _is_section(tp):
            _check_unknown(value, tp, (*path, key), source)


def _note_origins(
    raw: Any, cls: type, path: tuple[str, ...], source: str, origins: dict[tuple[str, ...], str]
) -> None:
    if not isinstance(raw, dict):
        return
    known = _fields(cls)
    hints = _hints(cls)
    for key, value in raw.items():
        if key in known:
            origins[(*path, key)] = source
            tp = hints[known[key].name]
            if _is_section(tp):
                _note_origins(value, tp, (*path, key), source, origins)


def _schema_paths(cls: type, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf key: (section, ..., key) -> its type."""
    paths: dict[tuple[str, ...], Any] = {}
    hints = _hints(cls)
    for key, f in _fields(cls).items():
        tp = hints[f.name]
        if _is_section(tp):
            paths.update(_schema_paths(tp, (*path, key)))
        else:
            paths[(*path, key)] = tp
    return paths


def _apply_environment(
    raw: dict[str, Any], environ: Mapping[str, str], origins: dict[tuple[str, ...], str]
) -> None:
    by_name = {
        ENV_PREFIX + "_".join(part.upper() for part in path): (path, tp)
        for path, tp in _schema_paths(Settings).items()
    }
    for name, text in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        match = by_name.get(name.upper())
        if match is None:
            log.warning("environment: unknown configuration variable %s ignored", name)
            continue
        path, tp = match
        section = raw
        for part in path[:-1]:
            # An empty section in the file (`web:` with its keys commented out) is null.
            if section.get(part) is None:
                section[part] = {}
            section = section[part]
            if not isinstance(section, dict):
                raise ConfigError(f"{name}: section {part} is not a mapping")
        section[path[-1]] = _from_text(text, tp, name, _dotted(path))
        origins[path] = name


def _from_text(text: str, tp: Any, source: str, key: str) -> Any:
    """An environment value in the key's type: bool, int, list or map from text."""
    origin = typing.get_origin(tp)
    if tp is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{source}: {key} must be true or false, not {text!r}")
    if tp is int:
        # int() would also take "1_0" and non-ASCII digits, which no one means as a number.
        if not re.fullmatch(r"[+-]?[0-9]+", text.strip(), flags=re.ASCII):
            raise ConfigError(f"{source}: {key} must be an integer, not {text!r}")
        return int(text.strip())
    if origin is list and _is_section(typing.get_args(tp)[0]):
        try:
            return yaml.safe_load(text) if text.strip() else []
        except yaml.YAMLError:
            raise ConfigError(f"{source}: {key} must be a YAML or JSON list") from None
    if origin is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    if origin is dict:
        try:
            value = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError:
            raise ConfigError(f"{source}: {key} must be a YAML or JSON mapping") from None
        return value
    return text


def _build(cls: type, raw: Any, path: tuple[str, ...], origins: dict[tuple[str, ...], str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        where = origins.get(path, "configuration")
        raise ConfigError(f"{where}: {_dotted(path)} must be a mapping of keys")
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for key, f in _fields(cls).items():
        if key not in raw:
            continue
        tp = hints[f.name]
        key_path = (*path, key)
        if _is_section(tp):
            values[f.name] = _build(tp, raw[key], key_path, origins)
        else:
            where = origins.get(key_path, "configuration")
            values[f.name] = _coerce(raw[key], tp, where, _dotted(key_path))
    return cls(**values)


def _type_name(tp: Any) -> str:
    if tp is ListenAddress:
        return "an address like :8080"
    origin = typing.get_origin(tp)
    if origin is list and _is_section(typing.get_args(tp)[0]):
        return "a list of mappings"
    if origin is list:
        return "a list of strings"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, source: str, key: str) -> Any:
    def wrong() -> ConfigError:
        shown = type(value).__name__ if isinstance(value, dict | list) else repr(value)
        return ConfigError(f"{source}: {key} must be {_type_name(tp)}, not {shown}")

    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise wrong()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong()
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        if value is None:
            return ""
        raise wrong()
    if tp is ListenAddress:
        if isinstance(value, int) and not isinstance(value, bool):
            value = f":{value}"
        if not isinstance(value, str):
            raise wrong()
        try:
            return ListenAddress.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: {key}: {exc}") from None
    if origin is list and _is_section(typing.get_args(tp)[0]):
        entry_type = typing.get_args(tp)[0]
        if value is None:
            return []
        if not isinstance(value, list):
            raise wrong()
        return [_entry(entry_type, item, source, f"{key}.{n}") for n, item in enumerate(value)]
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong()
        return list(value)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise wrong()
        _, value_type = typing.get_args(tp)
        return {str(k): _coerce(v, value_type, source, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"no coercion for {tp}")


def _entry(cls: type, raw: Any, source: str, key: str) -> Any:
    """One mapping of a list of entries (`webhooks`), its keys checked as a section's are."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {key} must be a mapping of keys")
    known = _fields(cls)
    hints = _hints(cls)
    for name in raw:
        if name not in known:
            raise ConfigError(f"{source}: {key}.{name} is not a key of this entry")
    values = {
        known[name].name: _coerce(value, hints[known[name].name], source, f"{key}.{name}")
        for name, value in raw.items()
    }
    return cls(**values)


def _validate(settings: Settings, origins: dict[tuple[str, ...], str]) -> None:
    def fail(path: tuple[str, ...], message: str) -> typing.NoReturn:
        # An entry of a map was set where its map was: name that file or variable.
        source = next(
            (origins[path[:n]] for n in range(len(path), 0, -1) if path[:n] in origins),
            "configuration",
        )
        raise ConfigError(f"{source}: {_dotted(path)} {message}")

    if settings.auth.backend not in ("basic", "ldap", "http"):
        fail(("auth", "backend"), f"must be basic, ldap or http, not {settings.auth.backend!r}")
    if settings.auth.backend == "http" and settings.auth.enabled:
        if not settings.auth.http.url.startswith(("http://", "https://")):
            fail(("auth", "http", "url"), "must be an http:// or https:// URL for the http backend")
    if settings.auth.http.timeout <= 0:
        fail(("auth", "http", "timeout"), "must be a positive number of milliseconds")
    if settings.auth.http.cache_seconds < 0:
        fail(("auth", "http", "cacheSeconds"), "must not be negative")
    if settings.webhooks and not settings.history.enabled:
        fail(("webhooks",), "are delivered from the history: set history.enabled to true")
    labels: set[str] = set()
    for n, hook in enumerate(settings.webhooks):
        if not hook.url.startswith(("http://", "https://")):
            fail(("webhooks", f"{n}", "url"), "must be an http:// or https:// URL")
        if not all(kind.strip() for kind in hook.events):
            fail(("webhooks", f"{n}", "events"), "has an empty event kind")
        if hook.label in labels:
            fail(("webhooks", f"{n}", "name"), f"repeats {hook.label!r}; give each a name")
        labels.add(hook.label)
    for user, hashed in settings.auth.basic.credentials.items():
        if not BCRYPT_HASH.fullmatch(hashed):
            # The hash itself is a secret: say what is wrong, never what was written.
            fail(
                ("auth", "basic", "credentials", user),
                "is not a bcrypt hash; make one with `ghostream hash-password`",
            )
    passphrase = settings.srt.passphrase
    if passphrase and not 10 <= len(passphrase) <= 79:
        fail(("srt", "passphrase"), "must have 10 to 79 characters")
    if not 0 <= settings.auth.failure_delay <= settings.auth.max_failure_delay:
        fail(("auth", "failureDelay"), "must be between 0 and auth.maxFailureDelay")
    for name, phrase in settings.srt.passphrases.items():
        if not 10 <= len(phrase) <= 79:
            fail(("srt", "passphrases"), f"of {name!r} must have 10 to 79 characters")
    if not 1 <= settings.rtmp.max_clients <= 100_000:
        fail(("rtmp", "maxClients"), "must be between 1 and 100000")
    tls = settings.rtmp.tls
    if bool(tls.certificate) != bool(tls.key):
        missing = "key" if tls.certificate else "certificate"
        fail(("rtmp", "tls", missing), "must be set too: RTMPS needs a certificate and its key")
    for name, path in (("certificate", tls.certificate), ("key", tls.key)):
        if path and not Path(path).is_file():
            fail(("rtmp", "tls", name), f"names {path!r}, which is not a readable file")
    workers = settings.server.workers.strip()
    if workers != "auto" and not (
        re.fullmatch(r"[0-9]+", workers, flags=re.ASCII) and 1 <= int(workers) <= MAX_WORKERS
    ):
        fail(("server", "workers"), f"must be auto or a number from 1 to {MAX_WORKERS}")
    if settings.history.retention < 0:
        fail(("history", "retention"), "must not be negative")
    if not 1 <= settings.srt.max_clients <= 100_000:
        fail(("srt", "maxClients"), "must be between 1 and 100000")
    for path, value in (
        (("srt", "maxClientsPerHost"), settings.srt.max_clients_per_host),
        (("telnet", "maxClientsPerHost"), settings.telnet.max_clients_per_host),
        (("webrtc", "maxSessionsPerHost"), settings.webrtc.max_sessions_per_host),
        (("webrtc", "connectTimeout"), settings.webrtc.connect_timeout),
    ):
        if value < 1:
            fail(path, "must be at least 1")
    if not 20 <= settings.srt.latency <= 10_000:
        fail(("srt", "latency"), "must be between 20 and 10000 (milliseconds)")
    for name, port in (
        ("minPortUDP", settings.webrtc.min_port_udp),
        ("maxPortUDP", settings.webrtc.max_port_udp),
    ):
        if not 1 <= port <= 65535:
            fail(("webrtc", name), f"must be a UDP port from 1 to 65535, not {port}")
    if settings.webrtc.min_port_udp > settings.webrtc.max_port_udp:
        fail(("webrtc", "minPortUDP"), "must not be above webrtc.maxPortUDP")
    _validate_worker_ports(settings, fail)
    for address in settings.webrtc.public_ips:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            fail(("webrtc", "publicIPs"), f"has {address!r}, which is not an IP address")
    origin = settings.origin
    if origin.url:
        try:
            srt_address(origin.url)
        except ValueError as exc:
            fail(("origin", "url"), f"is wrong: {exc}")
    if origin.passphrase and not 10 <= len(origin.passphrase) <= 79:
        fail(("origin", "passphrase"), "must have 10 to 79 characters")
    for path, key in [(("origin", "key"), origin.key)] + [
        (("srt", "pullKeys"), key) for key in settings.srt.pull_keys
    ]:
        # The key travels in an SRT stream id and an HTTP header; never echo it.
        if key and not PULL_KEY.fullmatch(key):
            fail(path, "must be 8 to 128 letters, digits or - _ . ~ + /")
    if origin.idle_timeout < 1:
        fail(("origin", "idleTimeout"), "must be at least 1 (second)")
    if origin.web_url and not re.fullmatch(r"https?://[^\s/]+/?", origin.web_url):
        fail(("origin", "webUrl"), "must be an address like http://origin:8080")
    for network in settings.web.trusted_proxies:
        try:
            ipaddress.ip_network(network.strip(), strict=False)
        except ValueError:
            fail(("web", "trustedProxies"), f"has {network!r}, which is no address or network")
    tls = settings.web.tls
    if bool(tls.certificate) != bool(tls.key):
        missing = "key" if tls.certificate else "certificate"
        fail(("web", "tls", missing), "must be set too: HTTPS needs a certificate and its key")
    if tls.redirect_address.port and not tls.enabled:
        fail(("web", "tls", "redirectAddress"), "needs web.tls.certificate and web.tls.key")
    if settings.webrtc.transcode not in WEBRTC_TRANSCODE_MODES:
        fail(
            ("webrtc", "transcode"),
            f"must be auto, always or never, not {settings.webrtc.transcode!r}",
        )
    text = settings.transcoder.text
    for key, value, low, high in (
        ("width", text.width, 1, 1000),
        ("height", text.height, 2, 1000),
        ("framerate", text.framerate, 1, 60),
    ):
        if not low <= value <= high:
            fail(("transcoder", "text", key), f"must be between {low} and {high}")
    for key, value in (
        ("maxAgeDays", settings.recording.max_age),
        ("maxSizeMB", settings.recording.max_size),
    ):
        if value < 0:
            fail(("recording", key), "must not be negative (0 means no limit)")
    if settings.streams.reconnect_grace < 0:
        fail(("streams", "reconnectGrace"), "must not be negative")
    for text in settings.transcoding.profiles:
        try:
            Profile.parse(text)
        except ValueError as exc:
            fail(
                ("transcoding", "profiles"),
                f"has {text!r}; write NAME:VIDEO_KBPS:AUDIO_KBPS such as 480p:1200:96 ({exc})",
            )


def _validate_worker_ports(
    settings: Settings, fail: Callable[[tuple[str, ...], str], typing.NoReturn]
) -> None:
    """Each worker needs WebRTC ports of its own: a share of the UDP range, one TCP port."""
    count = settings.server.worker_count
    webrtc = settings.webrtc
    if count == 1 or not webrtc.enabled:
        return
    udp_ports = webrtc.max_port_udp - webrtc.min_port_udp + 1
    if udp_ports < count:
        fail(
            ("webrtc", "minPortUDP"),
            f"to webrtc.maxPortUDP gives {udp_ports} UDP port(s); server.workers {count} needs"
            f" at least {count}, one per worker",
        )
    tcp_port = webrtc.tcp_listen_address.port
    if tcp_port and tcp_port + count - 1 > 65535:
        fail(
            ("webrtc", "tcpListenAddress"),
            f"port {tcp_port}: server.workers {count} takes ports {tcp_port} to"
            f" {tcp_port + count - 1}, past 65535",
        )


# Documentation.


def reference_markdown() -> str:
    """The table of every key, its default, its environment variable and what it does.

    Generated from the schema above, so the README's copy cannot drift
    (a test compares them) and a key added without a `doc` shows as a gap.
    """
    rows = ["| Key | Default | Environment variable | What it does |", "|---|---|---|---|"]
    defaults = Settings().to_yaml_dict(mask_secrets=False)
    for path, doc in _documented_paths(Settings):
        value: Any = defaults
        for part in path:
            value = value[part]
        default = json.dumps(value) if not isinstance(value, str) else f'"{value}"'
        env = ENV_PREFIX + "_".join(part.upper() for part in path)
        cell, text = default.replace("|", "\\|"), doc.replace("|", "\\|")
        rows.append(f"| `{_dotted(path)}` | `{cell}` | `{env}` | {text} |")
    return "\n".join(rows) + "\n"


def _documented_paths(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if "key" not in f.metadata:
            continue
        path = (*prefix, f.metadata["key"])
        if _is_section(hints[f.name]):
            out += _documented_paths(hints[f.name], path)
        else:
            out.append((path, f.metadata["doc"]))
    return out


# Dumping.


def mask_url(url: str) -> str:
    """Hide a forward URL's stream key (its last path segment or query) and any user:password@."""
    base, _, _ = url.partition("?")
    head, slash, _ = base.rpartition("/")
    if not slash or "://" not in head:
        return MASK
    scheme, _, rest = head.partition("://")
    authority, sep, path = rest.partition("/")
    _, at, host = authority.rpartition("@")
    return f"{scheme}://{MASK + '@' if at else ''}{host}{sep}{path}/{MASK}"


def site_of(url: str) -> str:
    """A hook's URL as logged: scheme, host and port; its path or query may hold a token."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def _dump(obj: Any, mask: bool) -> Any:
    out: dict[str, Any] = {}
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if "key" not in f.metadata:
            continue
        value = getattr(obj, f.name)
        tp = hints[f.name]
        if _is_section(tp):
            out[f.metadata["key"]] = _dump(value, mask)
            continue
        if typing.get_origin(tp) is list and _is_section(typing.get_args(tp)[0]):
            out[f.metadata["key"]] = [_dump(entry, mask) for entry in value]
            continue
        if isinstance(value, ListenAddress):
            value = str(value)
        if mask and f.metadata["secret"] and value:
            if isinstance(value, dict) and typing.get_args(tp)[1] == list[str]:
                value = {k: [mask_url(u) for u in urls] for k, urls in value.items()}
            elif isinstance(value, dict):
                value = {k: MASK for k in value}
            else:
                value = MASK
        out[f.metadata["key"]] = value
    return out
