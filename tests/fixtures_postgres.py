"""A real, throwaway PostgreSQL server for the store's portability tests (tests/test_store_postgres.py).

The server is Debian's `postgresql` package (installed by `make install-test` when run as root): a new
cluster is created in a temporary folder, started once per test session on a free port on 127.0.0.1
(its unix socket stays in that folder), and stopped and deleted at teardown. PostgreSQL refuses to run
as root, so as root every server command runs as the `postgres` OS user through runuser. Password
authentication (scram-sha-256) over TCP, as a deployed CBTCOMPARE_DB_URL would use. The cluster is
tuned for throwaway speed (fsync off): it must never hold anything worth keeping. Tests skip, with the
reason, when the server binaries are missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 60
SERVER_USER = "postgres"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder holding initdb and pg_ctl (Debian's layout first)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name.split(".")[0]), reverse=True
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if all(os.access(Path(folder) / name, os.X_OK) for name in ("initdb", "pg_ctl")):
            return Path(folder)
    return None


@dataclass
class PostgresServer:
    """A running throwaway cluster: `url` is its first database; `new_database()` makes another, empty one."""

    host: str
    port: int
    user: str
    password: str
    database: str
    version: str

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def new_database(self, prefix: str = "cbt") -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{secrets.token_hex(6)}"
        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)


def _run(command: list[str], as_server_user: bool, **kwargs: object) -> subprocess.CompletedProcess:
    if as_server_user:
        command = ["runuser", "-u", SERVER_USER, "--", *command]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=START_TIMEOUT_S, **kwargs)


def _skip_reason() -> str | None:
    if find_server_binaries() is None:
        return (
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` package "
            "(`make install-test` does it when run as root)"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg driver is not installed (pip install -r requirements.txt)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser: PostgreSQL cannot be started as root"
        try:
            import pwd

            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} OS user to run PostgreSQL as"
    return None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    bin_dir = find_server_binaries()
    assert bin_dir is not None
    as_server_user = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="cbtcompare-pg-"))
    if as_server_user:
        shutil.chown(root, user=SERVER_USER)
    data, log = root / "data", root / "server.log"
    user, password, port = "cbtcompare", secrets.token_hex(16), free_port()
    password_file = root / "password"
    password_file.write_text(password + "\n", encoding="utf-8")
    if as_server_user:
        shutil.chown(password_file, user=SERVER_USER)
    started = False
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                f"--pwfile={password_file}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            as_server_user,
        )
        password_file.unlink()
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        try:
            _run(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
                as_server_user,
            )
        except subprocess.CalledProcessError as exc:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed ({exc.returncode}): {exc.stderr}\n{tail}") from exc
        started = True
        version = _run([str(bin_dir / "postgres"), "--version"], False).stdout.strip()
        server = PostgresServer("127.0.0.1", port, user, password, "cbtcompare", version)
        _wait_until_accepting(server)
        import psycopg

        with psycopg.connect(
            host=server.host, port=port, user=user, password=password, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{server.database}"')
        yield server
    finally:
        if started:
            with contextlib.suppress(subprocess.SubprocessError):
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"], as_server_user)
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_accepting(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with psycopg.connect(
                host=server.host,
                port=server.port,
                user=server.user,
                password=server.password,
                dbname="postgres",
                connect_timeout=2,
            ):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The SQLAlchemy URL (postgresql+psycopg://...) of the session's PostgreSQL database."""
    return postgres_server.url
