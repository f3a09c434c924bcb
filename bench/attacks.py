"""The attacks of issue 15 tried against the server as shipped, each with its figure.

Run: .venv/bin/python bench/attacks.py [--guesses 30] [--body-mb 200] [--junk 4000]

Prints, for a Ghostream server subprocess with its default settings:
- stream key and SRT passphrase guessing from one host over fresh source
  ports: how many guesses the server checked in the time, and what the
  guesser saw;
- a chunked WHEP body of N MB: the answer and the server's memory growth;
- N junk paths and refused SRT ids: how many metric series exist after;
- what the public API holds of peers' addresses.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness.server_process import ServerProcess, start_server  # noqa: E402
from process_usage import rss_mib  # noqa: E402

from ghostream.srt.endpoint import SrtClosed, SrtRejected, connect  # noqa: E402

CHUNK = 64 * 1024


# A stream with its own SRT passphrase, for the passphrase guesser.
SECRET_STREAM = "secret"


async def guessing(server: ServerProcess, guesses: int, what: str) -> None:
    """Guesses of the demo stream's password, or of the secret stream's passphrase."""
    outcomes: dict[str, int] = {}
    start = trio.current_time()
    for n in range(guesses):
        if what == "password":
            attempt = {"streamid": f"demo:guess{n}"}
        else:
            attempt = {"streamid": SECRET_STREAM, "passphrase": f"guess number {n:04}"}
        try:
            async with connect("127.0.0.1", server.srt_port, **attempt):
                outcome = "accepted"
        except SrtRejected as exc:
            outcome = f"rejected {exc.code}"
        except SrtClosed:
            outcome = "no answer within the caller's 3 s"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    elapsed = trio.current_time() - start
    # Refused for overload (1402), a guess was never weighed: its answer tells nothing.
    weighed = guesses - outcomes.get("rejected 1402", 0)
    print(f"guessing the {what}: {guesses} tries from one host in {elapsed:.1f} s; "
          f"{weighed} weighed by the server; the guesser saw {outcomes}")  # fmt: skip


def big_body(server: ServerProcess, megabytes: int) -> None:
    host, port = server.web_url.removeprefix("http://").rsplit(":", 1)
    before = rss_mib(server.process.pid)
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST /demo/whep HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/sdp\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = f"{CHUNK:x}\r\n".encode() + b"v" * CHUNK + b"\r\n"
        sock.settimeout(5)
        try:
            while sent < megabytes * 1024 * 1024:
                sock.sendall(chunk)
                sent += CHUNK
        except OSError:
            pass
        try:
            answer = sock.recv(200).split(b"\r\n", 1)[0].decode()
        except OSError as exc:
            answer = f"no answer ({exc})"
    time.sleep(1)
    after = rss_mib(server.process.pid)
    print(f"WHEP body of {megabytes} MB: {answer!r} after {sent / 1e6:.1f} MB sent; "
          f"server memory {before:.0f} -> {after:.0f} MiB")  # fmt: skip


async def junk(server: ServerProcess, count: int) -> None:
    host, port = server.web_url.removeprefix("http://").rsplit(":", 1)
    for n in range(count):
        path = ("/wp-login-{n}.php", "/_stats/junk{n}/", "/junk{n}/index.m3u8")[n % 3]
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path.format(n=n)}") as response:
                response.read()
        except urllib.error.HTTPError:
            pass
    for n in range(count // 40):
        try:
            async with connect("127.0.0.1", server.srt_port, streamid=f"nobody{n}"):
                pass
        except (SrtRejected, SrtClosed):
            pass
    with urllib.request.urlopen(server.metrics_url) as response:
        text = response.read().decode()
    lines = [line for line in text.splitlines() if line.startswith("ghostream_")]
    streams = sorted(set(re.findall(r'stream="([^"]*)"', text)))
    print(f"junk: {count} paths and {count // 40} refused SRT ids -> {len(lines)} ghostream "
          f"series, stream labels {streams}")  # fmt: skip


def public_api(server: ServerProcess) -> None:
    with urllib.request.urlopen(server.web_url + "/api/streams/demo") as response:
        body = response.read().decode()
    print(f"public /api/streams/demo holds 127.0.0.1: {'127.0.0.1' in body}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guesses", type=int, default=30)
    parser.add_argument("--body-mb", type=int, default=200)
    parser.add_argument("--junk", type=int, default=4000)
    args = parser.parse_args()
    passphrases = {SECRET_STREAM: "the secret stream's passphrase"}
    with tempfile.TemporaryDirectory() as directory:
        # Its own server: the password guesser's pending refusals would hold this host's slots.
        server = start_server(Path(directory), {"srt": {"passphrases": passphrases}})
        try:
            trio.run(guessing, server, args.guesses, "passphrase")
        finally:
            server.stop()
        server = start_server(Path(directory), {})
        try:
            trio.run(guessing, server, args.guesses, "password")
            public_api(server)
            big_body(server, args.body_mb)
            trio.run(junk, server, args.junk)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
