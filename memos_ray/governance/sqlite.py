"""The one way memos-ray opens a SQLite file: for the small single-owner stores (identities and keys,
the audit log), kept out of ``storage.py`` so that importing their models (the SDK does) pulls in no
Milvus client."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path


def open_sqlite(path: Path, schema: str) -> sqlite3.Connection:
    """WAL, fsync on every commit, deleted rows overwritten, autocommit unless a transaction is begun
    explicitly; usable from the owner's threads under the owner's lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA secure_delete=ON")  # a deleted row's bytes are overwritten, not left in a free page
    db.executescript(schema)
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (taken at once, so a writer never waits half-way): committed, or rolled back
    when the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
