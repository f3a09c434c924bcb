"""`server.workers`: how many processes, and what each worker takes of the configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ghostream.broker.registry import StreamBusy
from ghostream.config import ConfigError, ListenAddress, WorkerRole, load_settings
from ghostream.srt.handshake import ListenerHandshake
from ghostream.srt.steering import decode_peer, encode_peer, new_socket_id, owner_of
from ghostream.workers.claims import StreamClaims
from ghostream.workers.shares import worker_settings


def test_one_worker_by_default() -> None:
    assert load_settings(environ={}).server.worker_count == 1


def test_auto_is_the_cpus_this_process_may_use() -> None:
    settings = load_settings(environ={"GHOSTREAM_SERVER_WORKERS": "auto"})
    assert settings.server.workers == str(len(os.sched_getaffinity(0)))


def test_the_number_in_effect_is_what_config_shows(tmp_path: Path) -> None:
    path = tmp_path / "ghostream.yml"
    path.write_text("server:\n  workers: 3\nwebrtc:\n  maxPortUDP: 10010\n")
    settings = load_settings(path, environ={})
    assert settings.to_yaml_dict()["server"] == {"workers": "3"}
    assert settings.server.worker_count == 3


@pytest.mark.parametrize("value", ["0", "many", "1.5", "999"])
def test_a_wrong_count_names_the_key_and_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="GHOSTREAM_SERVER_WORKERS: server.workers must be auto"):
        load_settings(environ={"GHOSTREAM_SERVER_WORKERS": value})


def test_too_few_webrtc_ports_for_the_workers_names_the_keys() -> None:
    environ = {"GHOSTREAM_SERVER_WORKERS": "8", "GHOSTREAM_WEBRTC_MAXPORTUDP": "10005"}
    with pytest.raises(ConfigError, match=r"webrtc.minPortUDP to webrtc.maxPortUDP gives 6 UDP"):
        load_settings(environ=environ)
    # Without WebRTC no port is needed.
    load_settings(environ=environ | {"GHOSTREAM_WEBRTC_ENABLED": "false"})


def test_each_worker_takes_its_own_webrtc_ports() -> None:
    settings = load_settings(environ={"GHOSTREAM_SERVER_WORKERS": "2"})
    first, second = (
        worker_settings(settings, WorkerRole(index, 2, Path("/run"))).webrtc for index in (0, 1)
    )
    assert (first.min_port_udp, first.max_port_udp) == (10000, 10002)
    assert (second.min_port_udp, second.max_port_udp) == (10003, 10005)
    assert first.tcp_listen_address == ListenAddress("", 10000)
    assert second.tcp_listen_address == ListenAddress("", 10001)


def test_only_worker_0_keeps_the_listeners_that_are_not_shared() -> None:
    settings = load_settings(environ={"GHOSTREAM_SERVER_WORKERS": "2"})
    zero, one = (worker_settings(settings, WorkerRole(i, 2, Path("/run"))) for i in (0, 1))
    assert zero.monitoring.enabled and zero.history.enabled
    assert not one.monitoring.enabled and not one.history.enabled and not one.telnet.enabled
    assert zero.srt == one.srt == settings.srt and zero.web == one.web == settings.web


def test_socket_ids_name_their_worker() -> None:
    ids = {new_socket_id(5, lambda _: False) for _ in range(200)}
    assert all(owner_of(i) == 5 and 0 < i < 1 << 30 for i in ids)
    taken = new_socket_id(5, lambda _: False)
    assert new_socket_id(5, lambda i: i == taken) != taken


@pytest.mark.parametrize("peer", [("127.0.0.1", 9710), ("::ffff:10.0.0.1", 5000, 0, 0)])
def test_a_passed_datagram_keeps_its_peer(peer: tuple) -> None:
    assert decode_peer(encode_peer(peer) + b"\x80\x02data\n") == (peer, b"\x80\x02data\n")


def test_a_stream_has_one_publisher_among_the_workers(tmp_path: Path) -> None:
    first, second = StreamClaims(tmp_path), StreamClaims(tmp_path)
    with first.claim("a" * 600):
        with pytest.raises(StreamBusy):
            with second.claim("a" * 600):
                pass
        with second.claim("other"):
            pass
    with second.claim("a" * 600):
        pass
    assert list((tmp_path / "streams").iterdir()) == []


def test_workers_share_their_handshake_cookies() -> None:
    peer = ("127.0.0.1", 5000)
    first, second = (ListenerHandshake(secret=b"k" * 16) for _ in range(2))
    assert first.cookie(peer, 100.0) == second.cookie(peer, 100.0)
    assert ListenerHandshake().cookie(peer, 100.0) != first.cookie(peer, 100.0)
