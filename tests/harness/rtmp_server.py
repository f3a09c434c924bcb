"""A real RTMP server for forwarding tests: Debian's nginx with libnginx-mod-rtmp.

It runs in the foreground from a temporary prefix, on a free loopback port,
as a stand-in for Twitch or YouTube ingest; `stop` and `start` again on the
same port simulate an ingest server that goes away and comes back.  With
`push`, it relays what it receives to another RTMP server (Ghostream's
ingest), as a studio's nginx-rtmp would.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
CONFIG = """
load_module {module};
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        application live {{
            live on;
            {push}
        }}
    }}
}}
"""


class RtmpServer:
    def __init__(self, nginx: str, prefix: Path, port: int, *, push: str = "") -> None:
        self.nginx = nginx
        self.prefix = prefix
        self.port = port
        self.process: subprocess.Popen | None = None
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        (prefix / "nginx.conf").write_text(
            CONFIG.format(
                module=MODULE, prefix=prefix, port=port, push=f"push {push};" if push else ""
            )
        )

    def url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{key}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.nginx, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.process.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx-rtmp did not start listening")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
