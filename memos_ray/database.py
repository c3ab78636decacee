"""The one way memos-ray opens a relational store: a SQLite file (the embedded default) or a PostgreSQL
database by URI (a server every node reaches, so the actor that owns a store may run anywhere).

The stores (the catalog, identities and keys, the audit log, the adapter registry, training jobs, the
scheduler's usage, decisions and lifecycle marks) write their SQL once, with ``?`` placeholders,
``INSERT ... ON CONFLICT`` upserts and the types ``TEXT``, ``INTEGER``, ``REAL`` and ``BLOB`` in their tables;
PostgreSQL gets ``BIGINT``, ``DOUBLE PRECISION`` and ``BYTEA`` for the last three (its ``REAL`` is 4 bytes: a
timestamp would lose its seconds). What only one dialect can say (the audit log's triggers) comes as that
dialect's extra DDL. Importing this pulls in no Milvus client and no PostgreSQL driver (the SDK imports the
models of the stores that use it).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from memos_ray.errors import Unavailable

Row = tuple[Any, ...]
_PG_TYPES = [
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
]


@dataclass(frozen=True)
class Schema:
    tables: str  # portable DDL (see the module's docstring)
    sqlite: str = ""  # what only SQLite says
    postgres: str = ""  # what only PostgreSQL says


def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """``INSERT ... ON CONFLICT (key) DO UPDATE``: the one upsert both dialects speak."""
    values = ", ".join("?" * len(columns))
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"
    return f"{insert} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"


class Database(Protocol):
    """What a store uses, whichever the server: autocommit unless a :meth:`transaction` is open; usable from
    the owner's threads (one statement at a time). :class:`_Sqlite` and :class:`_Postgres` are the two."""

    dialect: Literal["sqlite", "postgres"]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One write transaction: committed, or rolled back when the block raises."""
        ...

    def close(self) -> None: ...


def open_database(path: Path, schema: Schema, uri: str | None = None, durable: bool = True) -> Database:
    """PostgreSQL at ``uri`` when it is one (every store's tables in that one database), else the SQLite
    file ``path``. ``durable``: every commit reaches the disk before it returns (False: statistics, where a
    power cut may lose the last commit but never corrupts)."""
    if uri is not None and uri.startswith(("postgresql://", "postgres://")):
        return _Postgres(uri, schema, durable)
    return _Sqlite(path, schema, durable)


class _Sqlite:
    dialect: Literal["sqlite", "postgres"] = "sqlite"

    def __init__(self, path: Path, schema: Schema, durable: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute("PRAGMA secure_delete=ON")  # a deleted row's bytes are overwritten, not left in a free page
        self._db.executescript(schema.tables + schema.sqlite)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            self._db.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:  # taken at once, so a writer never waits half-way
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class _Postgres:
    """psycopg 3, one connection. A statement outside a transaction that finds the connection broken (the
    server restarted) reconnects and runs once more, and a transaction first checks its connection the same
    way (one round trip); anything else that cannot reach the server (a transaction cut half-way included)
    is :class:`Unavailable` (a 503 the caller may retry): nothing was acknowledged."""

    dialect: Literal["sqlite", "postgres"] = "postgres"

    def __init__(self, uri: str, schema: Schema, durable: bool) -> None:
        self._uri, self._durable = uri, durable
        parts = urlsplit(uri)
        self._where = f"{parts.hostname}:{parts.port or 5432}{parts.path}"
        self._lock = threading.RLock()
        self._in_transaction = False
        self._conn = self._connect()
        ddl = schema.tables
        for pattern, replacement in _PG_TYPES:
            ddl = pattern.sub(replacement, ddl)
        with self._unavailable():
            self._conn.execute(ddl + schema.postgres)

    def _connect(self) -> Any:
        import psycopg  # only where a server is used

        with self._unavailable():
            conn = psycopg.connect(self._uri, autocommit=True, connect_timeout=10)
            if not self._durable:
                conn.execute("SET synchronous_commit TO off")
            return conn

    @contextlib.contextmanager
    def _unavailable(self) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.OperationalError as exc:
            raise Unavailable(f"the database at {self._where} does not answer: {exc}", {"retry": True}) from exc

    def _run(self, fn: Any) -> Any:
        import psycopg

        with self._lock:
            if self._in_transaction:  # a broken transaction is the caller's to retry whole
                with self._unavailable():
                    return fn(self._conn)
            try:
                return fn(self._conn)
            except psycopg.OperationalError:
                if not (self._conn.broken or self._conn.closed):
                    with self._unavailable():
                        raise
                self._conn = self._connect()  # the server went away and may be back: once more
                with self._unavailable():
                    return fn(self._conn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        def run(conn: Any) -> list[Row]:
            cur = conn.execute(sql.replace("?", "%s"), tuple(params))
            return [tuple(row) for row in cur.fetchall()] if cur.description is not None else []

        result: list[Row] = self._run(run)
        return result

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(row) for row in rows]

        def run(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), batch)

        self._run(run)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock, self._unavailable():
            self._run(lambda conn: conn.execute("SELECT 1"))  # a connection cut since the last statement: renewed
            self._in_transaction = True
            try:
                with self._conn.transaction():
                    yield
            finally:
                self._in_transaction = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
