"""Which cubes exist, with their metadata (owner, grants, quotas, counters): owned by the Directory actor.

One table in the relational store: a SQLite file under ``data_dir``, or the PostgreSQL database
``storage.database_uri`` names, so a Directory restarted on another node finds every cube. Each change is
committed before the Directory makes it visible. A catalog that an earlier version kept in a milvus-lite
file (``data_dir/catalog.db``) is imported on first open and the file removed once the import is committed
(a crash in between imports it again, adding nothing that is already there).
"""

from __future__ import annotations

import shutil

from memos_ray.config import StorageConfig
from memos_ray.database import Schema, open_database, upsert
from memos_ray.types import CubeMeta

_SCHEMA = Schema("CREATE TABLE IF NOT EXISTS cubes (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, doc TEXT NOT NULL);")
_PUT = upsert("cubes", ["id", "seq", "doc"], ["id"])
LEGACY_FILE = "catalog.db"


class CatalogStore:
    def __init__(self, config: StorageConfig) -> None:
        self._db = open_database(config.data_dir / "catalog.sqlite", _SCHEMA, config.database_uri)
        legacy = config.data_dir / LEGACY_FILE
        if legacy.exists():
            from memos_ray.plaintext.storage import read_legacy_catalog  # imports pymilvus: only to migrate

            metas = read_legacy_catalog(legacy, config.lock_wait_s)
            with self._db.transaction():
                self._db.executemany(
                    "INSERT INTO cubes (id, seq, doc) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    [(m.id, m.seq, m.model_dump_json()) for m in metas],
                )
            if legacy.is_dir():
                shutil.rmtree(legacy)
            else:
                legacy.unlink()

    def put(self, meta: CubeMeta) -> None:
        self._db.execute(_PUT, (meta.id, meta.seq, meta.model_dump_json()))

    def delete(self, cube_id: str) -> None:
        self._db.execute("DELETE FROM cubes WHERE id = ?", (cube_id,))

    def load(self) -> dict[str, CubeMeta]:
        return {
            cube_id: CubeMeta.model_validate_json(doc) for cube_id, doc in self._db.execute("SELECT id, doc FROM cubes")
        }

    def close(self) -> None:
        self._db.close()
