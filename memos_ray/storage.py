"""Durable storage on Milvus: one milvus-lite file per cube by default, a Milvus server by URI.

Milvus is the record of truth. milvus-lite appends every insert to its write-ahead log and
flushes it to the OS before the call returns, so an acknowledged write survives the death
of the process that made it (the cube actor). Its file lock allows one owning process per
file: exactly one cube actor (or the Directory, for the catalog) opens each file.

A table is (pk, vec, doc): the document is the pydantic model's JSON. Milvus requires a
vector field in every collection, so tables without embeddings carry a 2-dim zero vector.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from memos_ray.config import StorageConfig
from memos_ray.errors import Unavailable
from memos_ray.models import CubeMeta, MemoryItem

log = logging.getLogger(__name__)
# query_iterator warns on every scan that milvus-lite has no MVCC timestamp; that is expected.
logging.getLogger("pymilvus").setLevel(logging.ERROR)

_PLACEHOLDER_DIM = 2
_PLACEHOLDER_VEC = [1.0, 0.0]  # not zero: a zero vector has no cosine
_MAX_PK = 128
_PAGE = 4_096


def _open_client(uri: str, lock_wait_s: float) -> MilvusClient:
    """Open ``uri``, waiting while a previous owner of a lite file is still exiting."""
    deadline = time.monotonic() + lock_wait_s
    delay = 0.05
    while True:
        try:
            return MilvusClient(uri)
        except Exception as exc:  # milvus-lite raises DataDirLockedError wrapped variously
            if "lock" not in repr(exc).lower() or time.monotonic() > deadline:
                raise Unavailable(f"cannot open storage {uri}: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class MilvusTable:
    """A (pk, vec, doc) collection: the one way memos-ray talks to Milvus."""

    def __init__(self, client: MilvusClient, name: str, dim: int) -> None:
        self.client = client
        self.name = name
        self.dim = dim
        self._unflushed = 0
        if not client.has_collection(name):
            schema = client.create_schema(auto_id=False)
            schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=_MAX_PK)
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
            schema.add_field("doc", DataType.JSON)
            index = client.prepare_index_params()
            index.add_index("vec", index_type="FLAT", metric_type="COSINE")
            client.create_collection(name, schema=schema, index_params=index)
        client.load_collection(name)

    def upsert(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.client.upsert(self.name, rows)
            self._unflushed += len(rows)

    def delete(self, pks: list[str]) -> None:
        if pks:
            self.client.delete(self.name, ids=pks)

    def scan(self, with_vectors: bool = True) -> Iterator[dict[str, Any]]:
        fields = ["pk", "doc", "vec"] if with_vectors else ["pk", "doc"]
        it = self.client.query_iterator(self.name, batch_size=_PAGE, filter='pk != ""', output_fields=fields)
        try:
            while batch := it.next():
                yield from batch
        finally:
            it.close()

    def flush_if(self, threshold: int) -> None:
        if self._unflushed >= threshold:
            self.flush()

    def flush(self) -> None:
        self.client.flush(self.name)
        self._unflushed = 0

    def drop(self) -> None:
        self.client.drop_collection(self.name)


def _safe_name(prefix: str, key: str) -> str:
    # Milvus collection names allow [A-Za-z0-9_]; cube ids also allow '-': hash to stay unambiguous.
    return f"{prefix}_{hashlib.sha1(key.encode()).hexdigest()[:20]}"


class CubeStore:
    """A cube's memory versions (one row per version, embeddings kept) and its counters."""

    def __init__(self, config: StorageConfig, cube_id: str, dim: int) -> None:
        self.config = config
        self.cube_id = cube_id
        if config.is_lite:
            self.path: Path | None = config.data_dir / "cubes" / cube_id
            self.path.mkdir(parents=True, exist_ok=True)
            uri = str(self.path / "milvus.db")
            names = ("memories", "counters")
        else:
            self.path = None
            uri = config.milvus_uri or ""
            names = (_safe_name("mem", cube_id), _safe_name("ctr", cube_id))
        self.client = _open_client(uri, config.lock_wait_s)
        self.memories = MilvusTable(self.client, names[0], dim)
        self.counters = MilvusTable(self.client, names[1], _PLACEHOLDER_DIM)

    @staticmethod
    def pk(memory_id: str, version: int) -> str:
        return f"{memory_id}@{version:010d}"

    def write(self, items: list[MemoryItem], vecs: np.ndarray) -> None:
        rows = [
            {"pk": self.pk(it.id, it.version), "vec": vec.tolist(), "doc": it.model_dump(mode="json")}
            for it, vec in zip(items, vecs, strict=True)
        ]
        self.memories.upsert(rows)
        self.memories.flush_if(self.config.flush_every)

    def load(self) -> Iterator[tuple[MemoryItem, np.ndarray]]:
        for row in self.memories.scan(with_vectors=True):
            yield MemoryItem.model_validate(row["doc"]), np.asarray(row["vec"], dtype=np.float32)

    def delete_versions(self, memory_id: str, versions: list[int]) -> None:
        self.memories.delete([self.pk(memory_id, v) for v in versions])

    def save_seq_floor(self, seq: int) -> None:
        self.counters.upsert([{"pk": "seq_floor", "vec": _PLACEHOLDER_VEC, "doc": {"seq": seq}}])

    def load_seq_floor(self) -> int:
        for row in self.counters.scan(with_vectors=False):
            if row["pk"] == "seq_floor":
                return int(row["doc"]["seq"])
        return 0

    def flush(self) -> None:
        self.memories.flush()
        self.counters.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.client.close()

    def destroy(self) -> None:
        """Remove every row of the cube (the files too, for milvus-lite)."""
        if self.path is None:
            self.memories.drop()
            self.counters.drop()
            self.client.close()
        else:
            self.client.close()
            shutil.rmtree(self.path, ignore_errors=True)


class CatalogStore:
    """Which cubes exist, with their metadata. Owned by the Directory actor."""

    def __init__(self, config: StorageConfig) -> None:
        if config.is_lite:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            uri = str(config.data_dir / "catalog.db")
        else:
            uri = config.milvus_uri or ""
        self.client = _open_client(uri, config.lock_wait_s)
        self.table = MilvusTable(self.client, "memos_catalog", _PLACEHOLDER_DIM)

    def put(self, meta: CubeMeta) -> None:
        self.table.upsert([{"pk": meta.id, "vec": _PLACEHOLDER_VEC, "doc": meta.model_dump(mode="json")}])

    def delete(self, cube_id: str) -> None:
        self.table.delete([cube_id])

    def load(self) -> dict[str, CubeMeta]:
        return {row["pk"]: CubeMeta.model_validate(row["doc"]) for row in self.table.scan(with_vectors=False)}

    def close(self) -> None:
        try:
            self.table.flush()
        finally:
            self.client.close()
