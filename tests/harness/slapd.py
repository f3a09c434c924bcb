"""A real OpenLDAP server (Debian's slapd) in a temporary directory, on a free port."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.server_process import free_port

SUFFIX = "dc=example,dc=com"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret"
USERS_DN = f"cn=users,{SUFFIX}"
START_TIMEOUT = 15.0

CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {directory}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{admin}"
rootpw {password}
directory {directory}/db
"""


@dataclass(frozen=True)
class Slapd:
    uri: str
    users_dn: str = USERS_DN

    def add_user(self, rdn_value: str, password: str) -> None:
        """Add `cn=<rdn_value>` (already escaped for a DN) under the users entry."""
        self.add(
            f"dn: cn={rdn_value},{self.users_dn}\nobjectClass: person\n"
            f"cn: {rdn_value.replace(chr(92), '')}\nsn: publisher\nuserPassword: {password}\n"
        )

    def add(self, ldif: str) -> None:
        subprocess.run(
            ["ldapadd", "-x", "-H", self.uri, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD],
            input=ldif.encode(),
            check=True,
            capture_output=True,
            timeout=10,
        )


@contextmanager
def running_slapd(slapd: str, directory: Path) -> Iterator[Slapd]:
    (directory / "db").mkdir(parents=True)
    config = directory / "slapd.conf"
    config.write_text(
        CONFIG.format(directory=directory, suffix=SUFFIX, admin=ADMIN_DN, password=ADMIN_PASSWORD)
    )
    port = free_port()
    uri = f"ldap://127.0.0.1:{port}"
    # -d 0 keeps it in the foreground, so it ends with the test.
    process = subprocess.Popen(
        [slapd, "-f", str(config), "-h", f"{uri}/", "-d", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(process, port)
        server = Slapd(uri)
        server.add(
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
            f"dc: example\no: Example\n\n"
            f"dn: {USERS_DN}\nobjectClass: organizationalRole\ncn: users\n"
        )
        yield server
    finally:
        process.terminate()
        process.wait(10)


def _wait_for_port(process: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"slapd exited: {process.stderr.read().decode()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"slapd did not listen on {port} within {START_TIMEOUT}s")
