"""A throwaway PostgreSQL server for tests: its own data directory, 127.0.0.1, a free port.

It runs the server binaries of Debian's `postgresql` package (/usr/lib/postgresql/<version>/bin,
or `initdb` on PATH); `find_bin(install=True)` apt-installs the package where they are missing.
As root, initdb and postgres run as the `postgres` user (PostgreSQL refuses to run as root).
Trust authentication, fsync off (commits survive a killed server, not a crashed machine):
fast, and for tests only.

    with running_postgres(find_bin(install=False)) as server:
        url = new_database(server.url)   # an empty database of its own
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

DEBIAN_BINS = Path("/usr/lib/postgresql")
SERVER_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
fsync = off
full_page_writes = off
"""


def find_bin(install: bool) -> Path | None:
    """The directory holding initdb, pg_ctl and postgres (the newest version), or None."""
    if _installed() is None and install:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env)
    return _installed()


def _installed() -> Path | None:
    versions = [p for p in DEBIAN_BINS.glob("*/bin") if (p / "initdb").exists()]
    if versions:
        return max(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres(*command: str | Path) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    result = subprocess.run([*prefix, *map(str, command)], capture_output=True, text=True,
                            timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stdout}{result.stderr}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class PostgresServer:
    bin: Path
    root: Path  # data/, sockets/, log
    port: int

    @property
    def url(self) -> str:
        """The superuser on the default database (trust auth: no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        _as_postgres(self.bin / "pg_ctl", "-D", self.root / "data", "-l", self.root / "log",
                     "-w", "-t", "60", "start")

    def stop(self) -> None:
        _as_postgres(self.bin / "pg_ctl", "-D", self.root / "data", "-m", "immediate", "stop")


@contextlib.contextmanager
def running_postgres(bin_dir: Path) -> Iterator[PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="mserve-pg-"))
    try:
        (root / "sockets").mkdir()
        if os.geteuid() == 0:
            for path in (root, root / "sockets"):
                shutil.chown(path, "postgres", "postgres")
        _as_postgres(bin_dir / "initdb", "-D", root / "data", "-U", "postgres", "-A", "trust",
                     "-E", "UTF8", "--no-locale", "--no-sync")
        server = PostgresServer(bin_dir, root, free_port())
        with (root / "data" / "postgresql.conf").open("a") as conf:
            conf.write(SERVER_CONF.format(port=server.port, sockets=root / "sockets"))
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(RuntimeError):  # a test may have stopped it already
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def new_database(url: str) -> str:
    """A new, empty database on the server `url` points at; its URL."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{url.rsplit('/', 1)[0]}/{name}"
