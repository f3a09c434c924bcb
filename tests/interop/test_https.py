"""HTTPS and HTTP/2 from the server itself, with a self-signed certificate made at test time.

curl says which HTTP version it spoke; Chromium (told to trust the
certificate) publishes from `/ID/publish`, which needs a secure context,
and plays the player page over LL-HLS, hls.js fetching over HTTP/2.
"""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from harness.browser import open_chromium, wait_for
from harness.certificates import make_certificate
from harness.server_process import ServerProcess, free_port
from test_player import BLOCK_UDP, playing_over
from test_whip import FAKE_MEDIA

TRUST_IT = ("--ignore-certificate-errors",)


@pytest.fixture
def server(ghostream_server, require_program, tmp_path) -> ServerProcess:
    require_program("curl")
    certificate, key = make_certificate(tmp_path, "first")
    redirect = free_port()
    server = ghostream_server(
        {
            "web": {
                "tls": {
                    "certificate": str(certificate),
                    "key": str(key),
                    "redirectAddress": f"127.0.0.1:{redirect}",
                }
            }
        }
    )
    server.web_url = server.web_url.replace("http://", "https://")
    server.redirect_url = f"http://127.0.0.1:{redirect}"
    return server


def curl(*arguments: str) -> str:
    result = subprocess.run(
        ["curl", "-sS", "-k", "-o", "/dev/null", *arguments],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def served_name(server: ServerProcess) -> str:
    """The common name of the certificate a new connection gets."""
    host, port = server.web_url.removeprefix("https://").rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port)), timeout=5)
    certificate = x509.load_pem_x509_certificate(pem.encode())
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_https_speaks_http2_redirects_plain_http_and_reloads_a_renewed_certificate(
    server: ServerProcess, tmp_path: Path
) -> None:
    assert curl("--http2", "-w", "%{http_version}", f"{server.web_url}/healthz") == "2"
    assert curl("--http1.1", "-w", "%{http_version}", f"{server.web_url}/healthz") == "1.1"
    redirected = curl("-w", "%{http_code} %{redirect_url}", f"{server.redirect_url}/demo?x=1")
    assert redirected == f"308 {server.web_url}/demo?x=1"
    assert served_name(server) == "first"
    # A renewal writes new files in place; new connections get the new certificate.
    make_certificate(tmp_path, "renewed")
    deadline = time.monotonic() + 20
    while served_name(server) != "renewed":
        assert time.monotonic() < deadline, "the renewed certificate was not served"
        time.sleep(0.2)
    assert curl("--http2", "-w", "%{http_version}", f"{server.web_url}/healthz") == "2"


# The transfer protocol of every LL-HLS part the page fetched.
PART_PROTOCOLS = """
return performance.getEntriesByType("resource")
  .filter((e) => e.name.includes(".m4s"))
  .map((e) => e.nextHopProtocol);
"""


def test_chromium_publishes_and_plays_over_https(server: ServerProcess, require_program) -> None:
    browsers = require_program("chromium"), require_program("chromedriver")
    with open_chromium(*browsers, extra=FAKE_MEDIA + TRUST_IT) as publisher:
        start = server.line_count()
        publisher.get(f"{server.web_url}/demo/publish?size=320x240")
        assert publisher.execute_script("return window.isSecureContext") is True
        publisher.find_element("id", "key").send_keys("demo")
        publisher.find_element("id", "start").click()
        server.wait_for_log(r"publishing demo over WHIP", 30, start=start)
        with open_chromium(*browsers, extra=TRUST_IT) as viewer:
            viewer.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": BLOCK_UDP})
            viewer.get(f"{server.web_url}/demo")
            playing_over(viewer, "LL-HLS", timeout=40)
            protocols = wait_for(viewer, PART_PROTOCOLS, bool, 10, "parts fetched")
            assert set(protocols) == {"h2"}, protocols
