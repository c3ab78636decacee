"""Idempotency keys: a mutating request sent again with the same ``Idempotency-Key`` gets the first answer.

A caller whose answer was lost (a dropped connection, a timeout, a crash of the replica) cannot know whether
its write happened; sending it again with the same key is safe. The first request with a key reserves it
(``in_flight``) before it runs, and its answer (any status below 500) is stored once it has one. A retry then:

- gets the stored answer again, byte for byte (``Idempotency-Replayed: true``);
- gets 409 while the first is still running;
- gets 422 if its method, path or body differ from the first's (a key names one request, not a slot);
- runs again if the first got a 5xx (nothing was acknowledged), if the process that held its reservation is
  known to have died (its owner, ``actors/idempotency.py``, asks Ray), or if the reservation is older than
  ``lease_s`` (a holder nobody knows: what it did is what a rerun meets, e.g. a memory add that was
  committed is found by its key in the cube; see ``MemoryService``).

Keys are scoped to the credential that sent them (a SHA-256 of it, never the key itself) and kept ``ttl_s``.
One table in the relational store (SQLite under ``data_dir`` or PostgreSQL), one owner (the Idempotency actor).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from memos_ray.database import Schema, open_database, upsert
from memos_ray.types import Strict

_SCHEMA = Schema("""
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, first_at REAL NOT NULL,
    started REAL NOT NULL, status INTEGER, media_type TEXT, body BLOB, PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS idempotency_started ON idempotency (started);
""")
_COLUMNS = ["scope", "key", "fingerprint", "first_at", "started", "status", "media_type", "body"]
_PUT = upsert("idempotency", _COLUMNS, ["scope", "key"])
PRUNE_EVERY = 256  # reservations between two prunes of expired keys


class Claim(Strict):
    """What a request with a key may do: ``run`` it (the key is reserved), or answer at once."""

    outcome: Literal["run", "replay", "in_flight", "mismatch"]
    first_at: float = 0.0  # when the key was first reserved (kept when a dead request's reservation is taken over)
    started: float = 0.0  # in_flight: when the running request reserved it (what a take-over names)
    status: int = 0
    media_type: str = ""
    body: bytes = b""


class IdempotencyStore:
    def __init__(self, path: Path, uri: str | None = None, ttl_s: float = 86_400.0, lease_s: float = 300.0) -> None:
        self._db = open_database(path, _SCHEMA, uri)
        self.ttl_s, self.lease_s = ttl_s, lease_s
        self._claims = 0

    def claim(
        self, scope: str, key: str, fingerprint: str, now: float | None = None, dead: float | None = None
    ) -> Claim:
        """``dead``: the ``started`` of a reservation whose holder died; that one (not a newer one another retry
        took meanwhile) is taken over as if its lease had run out."""
        now = time.time() if now is None else now
        with self._db.transaction():
            rows = self._db.execute(
                "SELECT fingerprint, first_at, started, status, media_type, body FROM idempotency "
                "WHERE scope = ? AND key = ?",
                (scope, key),
            )
            first_at = now
            if rows and rows[0][1] >= now - self.ttl_s:
                seen, first_at, started, status, media_type, body = rows[0]
                if seen != fingerprint:
                    return Claim(outcome="mismatch")
                if status is not None:
                    return Claim(outcome="replay", status=int(status), media_type=str(media_type), body=bytes(body))
                if started >= now - self.lease_s and started != dead:
                    return Claim(outcome="in_flight", started=float(started))
            self._db.execute(_PUT, (scope, key, fingerprint, first_at, now, None, None, None))
        self._claims += 1
        if self._claims % PRUNE_EVERY == 0:
            self._db.execute("DELETE FROM idempotency WHERE first_at < ?", (now - self.ttl_s,))
        return Claim(outcome="run", first_at=first_at)

    def finish(self, scope: str, key: str, status: int, media_type: str, body: bytes) -> None:
        """The first request's answer, kept for its retries."""
        self._db.execute(
            "UPDATE idempotency SET status = ?, media_type = ?, body = ? WHERE scope = ? AND key = ?",
            (status, media_type, body, scope, key),
        )

    def release(self, scope: str, key: str) -> None:
        """The first request got no answer worth keeping (a 5xx, a stream): a retry runs again, as the same
        request (its ``first_at`` is kept)."""
        self._db.execute(
            "UPDATE idempotency SET started = 0 WHERE scope = ? AND key = ? AND status IS NULL", (scope, key)
        )

    def close(self) -> None:
        self._db.close()


__all__ = ["Claim", "IdempotencyStore"]
