"""The two database backends behind the catalogue: SQLite (default) and PostgreSQL (psycopg 3).

Both expose the same small surface: ``transaction(write=...)`` yields a cursor-like object
whose ``execute(sql, params)`` takes ``?`` placeholders and returns rows as dicts, and
``migrate(upto)`` brings the schema to a version. Connections are opened per transaction,
so one backend object is safe to share between threads and users.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from . import migrations
from .errors import DatabaseUnavailable, SchemaTooNew

_ADVISORY_LOCK_KEY = 0x61C0_C0DE  # arbitrary constant shared by every process migrating this schema


class _Cursor:
    def __init__(self, raw, paramstyle: str):
        self._raw = raw
        self._paramstyle = paramstyle

    def execute(self, sql: str, params: tuple | list = ()) -> list[dict]:
        if self._paramstyle == "format":
            sql = sql.replace("%", "%%").replace("?", "%s")
        self._raw.execute(sql, tuple(params))
        if self._raw.description is None:
            return []
        names = [column[0] for column in self._raw.description]
        return [dict(zip(names, row)) for row in self._raw.fetchall()]

    @property
    def rowcount(self) -> int:
        return self._raw.rowcount


class SQLiteBackend:
    name = "sqlite"
    steps = migrations.SQLITE

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path)
        self.timeout = timeout

    def describe(self) -> str:
        return f"SQLite database {self.path}"

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._enable_wal(conn)
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseUnavailable(f"cannot open {self.describe()}: {exc}") from exc
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # WAL lets readers and one writer work at once. Switching needs an exclusive lock and
        # SQLite does not wait for it, so several first-time openers retry here.
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[_Cursor]:
        conn = self._connect()
        try:
            try:
                # IMMEDIATE takes the write lock up front, so read-then-write sequences never
                # fail half way with "database is locked" when users act at once.
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield _Cursor(conn.cursor(), "qmark")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "unable to open" in str(exc) or "disk" in str(exc):
                raise DatabaseUnavailable(f"{self.describe()} is not usable: {exc}") from exc
            raise
        finally:
            conn.close()

    def now(self) -> str:
        return datetime.now(timezone.utc).isoformat(timespec="microseconds")

    @staticmethod
    def parse_time(value) -> datetime:
        return datetime.fromisoformat(value)

    def lock_for_migration(self, cur: _Cursor) -> None:
        pass  # BEGIN IMMEDIATE already excludes other writers

    def version_table_sql(self) -> str:
        return "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"

    def like_sql(self) -> str:
        return "caption LIKE ? ESCAPE '\\'"  # SQLite's LIKE is case-insensitive for ASCII

    def caption_order_sql(self) -> str:
        return "caption COLLATE NOCASE"

    def params_to_db(self, text: str):
        return text

    def params_from_db(self, value) -> str:
        return value

    def blob(self, data: bytes):
        return sqlite3.Binary(data)

    def migrate(self, upto: int | None = None) -> int:
        return _migrate(self, upto)


class PostgresBackend:
    name = "postgres"
    steps = migrations.POSTGRES

    def __init__(self, dsn: str, connect_timeout: int = 5):
        try:
            import psycopg  # noqa: F401 - lazy: optional (studio extra), only PostgreSQL needs it
        except ImportError as exc:
            raise DatabaseUnavailable(
                "a PostgreSQL DSN was given but psycopg 3 is not installed (pip install 'psycopg[binary]')"
            ) from exc
        self.dsn = dsn
        self.connect_timeout = connect_timeout

    def describe(self) -> str:
        return f"PostgreSQL database {redact_dsn(self.dsn)}"

    def _connect(self):
        import psycopg  # lazy: optional (studio extra), only PostgreSQL needs it

        try:
            return psycopg.connect(self.dsn, connect_timeout=self.connect_timeout, autocommit=False)
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(f"cannot reach {self.describe()}: {reason}") from exc

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[_Cursor]:
        import psycopg  # lazy: optional (studio extra), only PostgreSQL needs it

        conn = self._connect()
        try:
            with conn.transaction():
                with conn.cursor() as raw:
                    yield _Cursor(raw, "format")
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"lost connection to {self.describe()}: {exc}") from exc
        finally:
            conn.close()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    @staticmethod
    def parse_time(value) -> datetime:
        return value

    def lock_for_migration(self, cur: _Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(?)", (_ADVISORY_LOCK_KEY,))

    def version_table_sql(self) -> str:
        return (
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )

    def like_sql(self) -> str:
        return "caption ILIKE ? ESCAPE '\\'"

    def caption_order_sql(self) -> str:
        return "lower(caption)"

    def params_to_db(self, text: str):
        from psycopg.types.json import Jsonb  # lazy: optional (studio extra), only PostgreSQL needs it

        return Jsonb(json.loads(text))

    def params_from_db(self, value) -> str:
        return json.dumps(value, sort_keys=True)

    def blob(self, data: bytes):
        return data

    def migrate(self, upto: int | None = None) -> int:
        return _migrate(self, upto)


def _migrate(backend, upto: int | None) -> int:
    target = migrations.LATEST if upto is None else upto
    with backend.transaction(write=True) as cur:
        backend.lock_for_migration(cur)
        cur.execute(backend.version_table_sql())
        current = cur.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")[0]["v"]
        if current > migrations.LATEST:
            raise SchemaTooNew(
                f"{backend.describe()} has schema version {current}, newer than this code knows "
                f"({migrations.LATEST}); upgrade autocomics"
            )
        for version in range(current + 1, target + 1):
            for statement in backend.steps[version]:
                cur.execute(statement)
            cur.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, backend.now()))
        return max(current, target)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced, fit for error messages."""
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", dsn, flags=re.IGNORECASE)


def open_backend(database: str | Path) -> SQLiteBackend | PostgresBackend:
    """A PostgreSQL backend for ``postgresql://``/``postgres://`` URLs or ``key=value`` DSNs, else SQLite at that
    path."""
    text = str(database)
    if re.match(r"^postgres(ql)?://", text) or re.search(r"\b(host|dbname|user)\s*=", text):
        return PostgresBackend(text)
    return SQLiteBackend(text)
