"""No client can create metric series: junk paths and refused ids all count as "other"."""

from __future__ import annotations

import http.client
import re
import urllib.request

import pytest
import trio
from harness.server_process import ServerProcess

from ghostream.srt.endpoint import SrtRejected, connect

JUNK_PATHS = 2000
REFUSED_IDS = 100


def series(server: ServerProcess) -> list[str]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return [line for line in text.splitlines() if line.startswith("ghostream_")]


def refusals_counted(lines: list[str]) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("ghostream_rejections_total")
    )


async def test_junk_requests_and_refused_ids_leave_series_bounded(ghostream_server) -> None:
    server = ghostream_server({"auth": {"failureDelay": 0, "maxFailureDelay": 0}})
    host, port = server.web_url.removeprefix("http://").rsplit(":", 1)
    web = http.client.HTTPConnection(host, int(port), timeout=10)
    for n in range(JUNK_PATHS):
        path = ("/wp-login-{n}.php", "/_stats/junk{n}/", "/junk{n}/index.m3u8")[n % 3]
        web.request("GET", path.format(n=n))
        web.getresponse().read()
    web.close()
    codes = []
    for n in range(REFUSED_IDS):
        streamid = ("nobody{n}", "#!::r=bad{n},m=publish,s=pass,hunter{n}", "x{n}:pw")[n % 3]
        with pytest.raises(SrtRejected) as refused:
            async with connect("127.0.0.1", server.srt_port, streamid=streamid.format(n=n)):
                pass
        codes.append(refused.value.code)
    # No such stream to watch; publishing with credentials that are not the stream's.
    assert set(codes[0::3]) == {1404} and set(codes[1::3]) == set(codes[2::3]) == {1403}, codes
    with trio.fail_after(10):
        while refusals_counted(series(server)) < REFUSED_IDS:
            await trio.sleep(0.05)
    lines = series(server)
    text = "\n".join(lines)
    assert not re.search(r"junk|wp-login|nobody|bad\d|hunter", text), text
    streams = set(re.findall(r'stream="([^"]*)"', text))
    assert streams <= {"other", "demo"}, streams
    reasons = set(re.findall(r'reason="([^"]*)"', text))
    assert reasons and reasons <= {"not_found", "unauthorized", "invalid_request"}, reasons
    assert len(lines) < 100
    assert "hunter" not in server.log
