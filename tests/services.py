"""Start real services for tests and benchmarks: redis-server, a PostgreSQL cluster, the sandbox.

Each ``start_*`` function launches a real process on a free loopback port inside a temporary
directory and returns a handle whose ``stop()`` ends it and removes what it wrote. Nothing here
is a fake: tests talk to the real programs over real sockets.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``check`` until it returns True, or fail saying ``what`` did not come up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - the service is still starting
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


@dataclass
class Service:
    """A running process plus the URL to reach it."""

    url: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    extra_stop: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for fn in self.extra_stop:
            fn()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis() -> Service:
    """A private redis-server without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install redis-server")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="npay-redis-"))
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    def ping() -> bool:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5).ping())

    wait_until(ping, timeout=15, what="redis-server")
    return Service(url=f"redis://127.0.0.1:{port}/0", proc=proc, workdir=workdir)


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: apt-get install postgresql")
    return candidates[-1]


def _as_pg_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: drop to the ``postgres`` system user."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def start_postgres() -> Service:
    """A throwaway PostgreSQL cluster (trust auth, loopback only) with a database ``npay``."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="npay-pg-"))
    data = workdir / "data"
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
    subprocess.run(
        _as_pg_user([_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                     "-E", "UTF8", "--no-locale"]),
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    proc = subprocess.Popen(
        _as_pg_user([_pg_bin("postgres"), "-D", str(data), "-p", str(port),
                     "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={workdir}",
                     "-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off", "-c", "max_connections=200"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import psycopg

    admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def ready() -> bool:
        with psycopg.connect(admin, connect_timeout=1) as conn:
            conn.execute("SELECT 1")
        return True

    wait_until(ready, timeout=30, what="PostgreSQL")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE npay")
    return Service(
        url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/npay", proc=proc, workdir=workdir
    )


@contextlib.contextmanager
def _admin(service: Service) -> Iterator[Any]:
    """An autocommit connection to the cluster's ``postgres`` database."""
    import psycopg

    base = service.url.rsplit("/", 1)[0]
    with psycopg.connect(base.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        yield conn


def create_pg_database(service: Service, name: str) -> str:
    """A fresh database in the running cluster; returns its SQLAlchemy URL."""
    with _admin(service) as conn:
        conn.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
    return f"{service.url.rsplit('/', 1)[0]}/{name}"


def drop_pg_database(service: Service, name: str) -> None:
    """Drop the database ``name``, ending any session still connected to it."""
    with _admin(service) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def recreate_pg_database(service: Service, name: str, template: str) -> None:
    """Replace the database ``name`` by a copy of ``template`` (file copy: PostgreSQL 15's
    default strategy writes the whole template through the WAL, twice as slow here)."""
    with _admin(service) as conn:
        # A template must have no sessions; the migration's own are gone, this is belt and braces.
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                     (template,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')


def migrated_sqlite_file(path: Path) -> Path:
    """A self-contained SQLite file at ``path`` migrated to the newest revision (checkpointed,
    no -wal file): a template each test copies instead of running the migrations."""
    from models.migrate import upgrade

    upgrade(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    return path


def start_sandbox(*args: str) -> Service:
    """The NAVER Pay sandbox (``python -m sandbox``) on a free loopback port."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="npay-sandbox-"))
    log = open(workdir / "sandbox.log", "wb")  # noqa: SIM115 - closed by the process end
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(port), *args],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"sandbox exited: {(workdir / 'sandbox.log').read_text()}")
        return httpx.get(f"{url}/_sandbox/health", timeout=0.5).status_code == 200

    wait_until(up, timeout=20, what="sandbox")
    return Service(url=url, proc=proc, workdir=workdir, extra_stop=[log.close])
