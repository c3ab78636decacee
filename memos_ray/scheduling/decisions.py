"""The MemScheduler's decisions, each with its reason and the figures it rested on: appended to a SQLite
file, or to the PostgreSQL database ``storage.database_uri`` names (the newest ``kept``), so
``GET /v1/scheduler/decisions`` answers across restarts."""

from __future__ import annotations

from pathlib import Path

from memos_ray.database import Schema, open_database
from memos_ray.types import Decision, DecisionInput, DecisionKind, DecisionPage, utcnow

SCHEMA = Schema("""
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, cube_id TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_cube ON decisions (cube_id, seq);
""")


class DecisionLog:
    def __init__(self, path: Path, kept: int, uri: str | None = None) -> None:
        """``path``: the SQLite file; ``uri``: a PostgreSQL database instead."""
        self.kept = kept
        self.db = open_database(path, SCHEMA, uri, durable=False)
        self.seq = int(self.db.execute("SELECT coalesce(max(seq), 0) FROM decisions")[0][0])
        self.counts: dict[DecisionKind, int] = {}

    def add(
        self,
        kind: DecisionKind,
        reason: str,
        cube_id: str | None = None,
        key: str | None = None,
        worker: int | None = None,
        inputs: dict[str, DecisionInput] | None = None,
    ) -> Decision:
        self.seq += 1
        d = Decision(
            seq=self.seq,
            at=utcnow(),
            kind=kind,
            reason=reason,
            cube_id=cube_id,
            key=key,
            worker=worker,
            inputs=inputs or {},
        )
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO decisions VALUES (?, ?, ?, ?)", (d.seq, kind.value, cube_id, d.model_dump_json())
            )
            if self.seq % 100 == 0:  # keep the newest ``kept``
                self.db.execute("DELETE FROM decisions WHERE seq <= ?", (self.seq - self.kept,))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return d

    def query(
        self,
        after_seq: int | None = None,
        limit: int = 100,
        kind: DecisionKind | None = None,
        cube_id: str | None = None,
    ) -> DecisionPage:
        """Oldest first after ``after_seq``; with None, the newest ``limit`` (still oldest first)."""
        where, args = ["seq > ?"], [after_seq or 0]
        if kind is not None:
            where.append("kind = ?")
            args.append(kind.value)  # type: ignore[arg-type]
        if cube_id is not None:
            where.append("cube_id = ?")
            args.append(cube_id)  # type: ignore[arg-type]
        order = "DESC" if after_seq is None else "ASC"
        rows = self.db.execute(
            f"SELECT seq, doc FROM decisions WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT ?", (*args, limit)
        )
        decisions = sorted((Decision.model_validate_json(doc) for _, doc in rows), key=lambda d: d.seq)
        return DecisionPage(decisions=decisions, next_seq=decisions[-1].seq if decisions else after_seq or 0)

    def close(self) -> None:
        self.db.close()
