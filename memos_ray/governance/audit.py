"""The audit log: append-only, durable, hash-chained, queryable.

Every mutation and every denied access becomes an :class:`AuditRecord`: who (principal and
key id), when, what (action, HTTP method and path), which cube and memory, and the result.
Records live in one SQLite file under ``data_dir``, or in the PostgreSQL database that
``storage.database_uri`` names; triggers refuse UPDATE and DELETE (and, in PostgreSQL, TRUNCATE), and
each record carries an HMAC-SHA256 of its predecessor's hash and its own content, so an edit
made behind the database's back shows up in :meth:`AuditStore.verify`. The HMAC's key is not in the
database (:class:`AuditKey`: a file, by default ``<data_dir>/audit.key``, or a mounted secret): whoever can
write the database cannot rebuild a chain that verifies. Appends are
committed (fsync) before they are acknowledged; :class:`actors.audit.AuditLog` groups
concurrent appends into one commit.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field

from memos_ray.database import Schema, open_database
from memos_ray.types import AuditEvent, AuditPage, AuditQuery, AuditRecord, AuditVerification, Strict

GENESIS = "0" * 64


_SCHEMA = Schema(
    """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    principal TEXT,
    action TEXT NOT NULL,
    result TEXT NOT NULL,
    cube_id TEXT,
    memory_id TEXT,
    request_id TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_cube ON audit (cube_id, seq);
CREATE INDEX IF NOT EXISTS audit_principal ON audit (principal, seq);
CREATE INDEX IF NOT EXISTS audit_request ON audit (request_id);
""",
    sqlite="""
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
""",
    postgres="""
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE OR REPLACE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
""",
)


class AuditKey(Strict):
    """The chain's secret, kept where the database is not. ``unkeyed_until``: the records an earlier version
    chained with a plain SHA-256 before this key existed (they verify as that; every later one needs the key)."""

    key: str = Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")
    unkeyed_until: int = Field(0, ge=0)

    @classmethod
    def load(cls, path: Path, records: int) -> AuditKey:
        """The key in ``path``, made there (mode 0600) if there is none yet: ``records`` already in the log
        are the unkeyed ones."""
        if path.exists():
            return cls.model_validate_json(path.read_text())
        made = cls(key=secrets.token_hex(32), unkeyed_until=records)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(made.model_dump_json())
        return made


def _digest(prev_hash: str, event: AuditEvent, seq: int, key: AuditKey) -> str:
    body = f"{prev_hash}|{seq}|{event.model_dump_json(include=set(AuditEvent.model_fields))}".encode()
    if seq <= key.unkeyed_until:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(bytes.fromhex(key.key), body, hashlib.sha256).hexdigest()


def _ts(value: datetime) -> str:
    """Sortable text: one fixed format, so SQLite compares times as strings."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class AuditStore:
    def __init__(self, path: Path, key_file: Path, uri: str | None = None) -> None:
        """``path``: the SQLite file; ``uri``: a PostgreSQL database instead; ``key_file``: the chain's key
        (see :class:`AuditKey`), never in the database."""
        self._db = open_database(path, _SCHEMA, uri)
        self._lock = threading.Lock()
        rows = self._db.execute("SELECT seq, doc FROM audit ORDER BY seq DESC LIMIT 1")
        last = rows[0] if rows else None
        self.seq = 0 if last is None else last[0]
        self._head = GENESIS if last is None else AuditRecord.model_validate_json(last[1]).hash
        self.key = AuditKey.load(key_file, self.seq)

    def append(self, events: list[AuditEvent]) -> list[AuditRecord]:
        """Append in one transaction; durable when this returns."""
        with self._lock:
            records = []
            seq, head = self.seq, self._head
            for event in events:
                seq += 1
                digest = _digest(head, event, seq, self.key)
                records.append(
                    AuditRecord(
                        **event.model_dump(include=set(AuditEvent.model_fields)), seq=seq, prev_hash=head, hash=digest
                    )
                )
                head = digest
            rows = [
                (
                    r.seq,
                    _ts(r.at),
                    r.principal,
                    r.action,
                    r.result,
                    r.cube_id,
                    r.memory_id,
                    r.request_id,
                    r.model_dump_json(),
                )
                for r in records
            ]
            with self._db.transaction():
                self._db.executemany("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self.seq, self._head = seq, head
            return records

    def query(self, q: AuditQuery) -> AuditPage:
        where: list[str] = ["seq > ?"]
        args: list[str | int] = [q.after_seq]
        for column in ("cube_id", "principal", "result", "memory_id", "request_id"):
            value = getattr(q, column)
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if q.action is not None:
            if q.action.endswith("."):
                where.append("substr(action, 1, ?) = ?")
                args += [len(q.action), q.action]
            else:
                where.append("action = ?")
                args.append(q.action)
        if q.since is not None:
            where.append("at >= ?")
            args.append(_ts(q.since))
        if q.until is not None:
            where.append("at < ?")
            args.append(_ts(q.until))
        sql = f"SELECT doc FROM audit WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, [*args, q.limit + 1])
        records = [AuditRecord.model_validate_json(row[0]) for row in rows[: q.limit]]
        more = len(rows) > q.limit
        return AuditPage(records=records, next_after_seq=records[-1].seq if more else None)

    def verify(self) -> AuditVerification:
        """Recompute the chain from the first record with the key, and check the indexed columns against it.
        A chain rebuilt without the key fails at its first record after ``unkeyed_until``. (A cut tail is
        not seen: the last records and the head are in the same database.)"""
        head, count = GENESIS, 0
        columns = "seq, at, principal, action, result, cube_id, memory_id, request_id"
        with self._lock:
            rows = self._db.execute(f"SELECT {columns}, doc FROM audit ORDER BY seq")
        for *indexed, doc in rows:
            record = AuditRecord.model_validate_json(doc)
            count += 1
            seq = indexed[0]
            # the queried columns must say what the hashed record says
            expected = [
                record.seq,
                _ts(record.at),
                record.principal,
                record.action,
                record.result,
                record.cube_id,
                record.memory_id,
                record.request_id,
            ]
            digest = _digest(head, record, seq, self.key)
            if indexed != expected or record.prev_hash != head or not hmac.compare_digest(digest, record.hash):
                return AuditVerification(ok=False, records=count, first_bad_seq=seq)
            head = record.hash
        return AuditVerification(ok=True, records=count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
