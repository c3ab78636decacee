"""Where the MemScheduler's lifecycle sweep left each cube: up to which seq its memories were compared for
near-duplicates, the cube's seq then (a later write makes it due), and when a memory of it next expires or
falls due for archiving. A SQLite file beside the usage (or a table in the PostgreSQL database
``storage.database_uri`` names), so a restart neither compares a cube all over again nor wakes a passivated
cube before it is due."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memos_ray.database import Schema, open_database, upsert

SCHEMA = Schema("""
CREATE TABLE IF NOT EXISTS lifecycle_marks (
    cube_id TEXT PRIMARY KEY, merge_seq INTEGER NOT NULL, seq INTEGER NOT NULL, next_due REAL,
    swept_at REAL NOT NULL);
""")


@dataclass(frozen=True)
class Mark:
    merge_seq: int
    seq: int
    next_due: float | None
    swept_at: float


class LifecycleMarks:
    def __init__(self, path: Path, uri: str | None = None) -> None:
        """``path``: the SQLite file; ``uri``: a PostgreSQL database instead."""
        self.db = open_database(path, SCHEMA, uri, durable=False)  # a lost mark only means one more comparison
        rows = self.db.execute("SELECT cube_id, merge_seq, seq, next_due, swept_at FROM lifecycle_marks")
        self.marks = {c: Mark(m, s, d, a) for c, m, s, d, a in rows}

    def get(self, cube_id: str) -> Mark | None:
        return self.marks.get(cube_id)

    def put(self, cube_id: str, mark: Mark) -> None:
        self.marks[cube_id] = mark
        self.db.execute(
            upsert("lifecycle_marks", ["cube_id", "merge_seq", "seq", "next_due", "swept_at"], ["cube_id"]),
            (cube_id, mark.merge_seq, mark.seq, mark.next_due, mark.swept_at),
        )

    def forget(self, cube_id: str) -> None:
        self.marks.pop(cube_id, None)
        self.db.execute("DELETE FROM lifecycle_marks WHERE cube_id = ?", (cube_id,))

    def close(self) -> None:
        self.db.close()
