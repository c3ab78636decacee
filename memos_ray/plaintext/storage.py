"""Durable storage on Milvus: one milvus-lite file per cube by default, a Milvus server by URI.

Milvus is the record of truth. milvus-lite appends every insert to its write-ahead log and
flushes it to the OS before the call returns, so an acknowledged write survives the death
of the process that made it (the cube actor). Its file lock allows one owning process per
file: exactly one cube actor (or the Directory, for the catalog) opens each file.

A table is (pk, seq, vec, doc): the document is the pydantic model's JSON and ``seq`` the
cube's change number, so "everything after N" is one scalar filter. Milvus requires a
vector field in every collection, so tables without embeddings carry a 2-dim placeholder.

Reading a 10k-memory cube back row by row costs ~0.8 s in milvus-lite, so a passivating
cube also writes a checkpoint (its versions as JSON, its vectors as safetensors, stamped
with its ``seq``). Activation reads the checkpoint and then only the rows written after it;
a cube that crashed since its checkpoint simply has a longer tail. A purge, which removes
rows, drops the checkpoint first.

Erasure: deleting a row is not enough. milvus-lite keeps what was written in its write-ahead log
and sealed segments until its size-tiered compaction happens to rewrite them (a manual
``compact`` does not), so the text of a deleted row stays on disk. A purge therefore rewrites the
cube's table: a new generation of the collection gets every remaining row, the counters name it,
and the old collection (its files) is dropped. A crash in between is finished on the next open
(the counters say a rewrite is pending).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from pymilvus import DataType, MilvusClient
from safetensors.numpy import load_file, save_file

from memos_ray.config import StorageConfig
from memos_ray.errors import Unavailable
from memos_ray.types import CubeMeta, MemoryItem, Strict

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
            schema.add_field("seq", DataType.INT64)
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
            schema.add_field("doc", DataType.JSON)
            index = client.prepare_index_params()
            index.add_index("vec", index_type="FLAT", metric_type="COSINE")
            # Strong: a reactivated cube must read every acknowledged row (a Milvus server defaults
            # to Bounded staleness, which could hide the last seconds of writes).
            client.create_collection(name, schema=schema, consistency_level="Strong")
            # sync=False: pymilvus otherwise polls the index state every 0.5 s; a FLAT index is ready at once.
            client.create_index(name, index, sync=False)
        client.load_collection(name)

    def upsert(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.client.upsert(self.name, rows)
            self._unflushed += len(rows)

    def delete(self, pks: list[str]) -> None:
        if pks:
            self.client.delete(self.name, ids=pks)

    def scan(self, with_vectors: bool = True, after_seq: int | None = None) -> Iterator[dict[str, Any]]:
        fields = ["pk", "seq", "doc", "vec"] if with_vectors else ["pk", "seq", "doc"]
        expr = 'pk != ""' if after_seq is None else f"seq > {int(after_seq)}"
        it = self.client.query_iterator(
            self.name, batch_size=_PAGE, filter=expr, output_fields=fields, consistency_level="Strong"
        )
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


class Checkpoint(Strict):
    seq: int
    items: list[MemoryItem]


class Counters(Strict):
    """A cube's small durable numbers, one row of its counters table."""

    seq_floor: int = 0  # the seq of the last purge: seqs are never reused, even of erased rows
    generation: int = 0  # which collection holds the memories (each rewrite makes the next)
    rewrite_pending: bool = False  # set before a purge rewrites, cleared once the new table holds everything
    erase: list[str] = Field(default_factory=list)  # the rows a pending rewrite leaves out (ids only: no text)
    scrub: list[str] = Field(default_factory=list)  # the rows whose context a pending rewrite clears


class CubeStore:
    """A cube's memory versions (one row per version, embeddings kept) and its counters."""

    def __init__(self, config: StorageConfig, cube_id: str, dim: int) -> None:
        self.config = config
        self.cube_id = cube_id
        self.dim = dim
        if config.is_lite:
            self.path: Path | None = config.data_dir / "cubes" / cube_id
            self.path.mkdir(parents=True, exist_ok=True)
            self.uri = str(self.path / "milvus.db")
            self._base, counters = "memories", "counters"
        else:
            self.path = None
            self.uri = config.milvus_uri or ""
            self._base, counters = _safe_name("mem", cube_id), _safe_name("ctr", cube_id)
        self.client = _open_client(self.uri, config.lock_wait_s)
        self.counters = MilvusTable(self.client, counters, _PLACEHOLDER_DIM)
        self.state = self._read_counters()
        self._drop_other_generations()
        self.memories = MilvusTable(self.client, self._name(self.state.generation), dim)
        if self.state.rewrite_pending:  # a purge died before its rewrite was done: finish it from the old table
            self.rewrite(self._surviving_rows())

    def _name(self, generation: int) -> str:
        return self._base if generation == 0 else f"{self._base}_g{generation}"

    def _drop_other_generations(self) -> None:
        """A rewrite that died half-way leaves its new collection behind; a finished one, nothing."""
        current = self._name(self.state.generation)
        for name in self.client.list_collections():
            if name != current and (name == self._base or name.startswith(f"{self._base}_g")):
                self.client.drop_collection(name)

    def _read_counters(self) -> Counters:
        rows = {row["pk"]: row["doc"] for row in self.counters.scan(with_vectors=False)}
        if "state" in rows:
            return Counters.model_validate(rows["state"])
        if "seq_floor" in rows:  # written before the counters became one row
            return Counters(seq_floor=int(rows["seq_floor"]["seq"]))
        return Counters()

    def _save_counters(self, **changes: Any) -> None:
        self.state = self.state.model_copy(update=changes)
        row = {"pk": "state", "seq": 0, "vec": _PLACEHOLDER_VEC, "doc": self.state.model_dump()}
        self.counters.upsert([row])

    @staticmethod
    def pk(memory_id: str, version: int) -> str:
        return f"{memory_id}@{version:010d}"

    def write(self, items: list[MemoryItem], vecs: np.ndarray) -> None:
        rows = [
            {"pk": self.pk(it.id, it.version), "seq": it.seq, "vec": vec.tolist(), "doc": it.model_dump(mode="json")}
            for it, vec in zip(items, vecs, strict=True)
        ]
        self.memories.upsert(rows)
        self.memories.flush_if(self.config.flush_every)

    def load(self) -> tuple[list[MemoryItem], dict[str, np.ndarray]]:
        """Every stored version, and the vector of each memory's latest version."""
        items: dict[str, MemoryItem] = {}
        vecs: dict[str, np.ndarray] = {}
        latest: dict[str, int] = {}
        since = None
        checkpoint = self._read_checkpoint()
        if checkpoint is not None:
            ckpt, vecs = checkpoint
            since = ckpt.seq
            for item in ckpt.items:
                items[self.pk(item.id, item.version)] = item
                latest[item.id] = max(latest.get(item.id, 0), item.version)
        for row in self.memories.scan(with_vectors=True, after_seq=since):
            item = MemoryItem.model_validate(row["doc"])
            items[row["pk"]] = item
            if item.version >= latest.get(item.id, 0):
                latest[item.id] = item.version
                vecs[item.id] = np.asarray(row["vec"], dtype=np.float32)
        return list(items.values()), vecs

    def erase(
        self, pks: list[str], scrubbed: list[str], kept: list[MemoryItem], vecs: dict[str, np.ndarray], seq: int
    ) -> None:
        """Leave no trace of the rows ``pks`` in any file: the table is rewritten from ``kept`` (every version
        that stays, as the cube holds it, contexts already cleared in the ``scrubbed`` rows; each row gets its
        memory's current vector, the only one ever read) and the old table dropped with its files. What to
        leave out is recorded first, so a crash is finished on the next open from the old table."""
        self.drop_checkpoint()  # it would bring the purged rows back
        self._save_counters(seq_floor=seq, rewrite_pending=True, erase=pks, scrub=scrubbed)
        self.counters.flush()
        self.rewrite(
            {"pk": self.pk(i.id, i.version), "seq": i.seq, "vec": vecs[i.id], "doc": i.model_dump(mode="json")}
            for i in kept
        )

    def _surviving_rows(self) -> Iterator[dict[str, Any]]:
        """The old table's rows less those a pending rewrite leaves out, the scrubbed contexts cleared."""
        erase, scrub = set(self.state.erase), set(self.state.scrub)
        for r in self.memories.scan(with_vectors=True):
            if r["pk"] not in erase:
                doc = {**r["doc"], "context": None} if r["pk"] in scrub else r["doc"]
                yield {"pk": r["pk"], "seq": r["seq"], "vec": r["vec"], "doc": doc}

    def rewrite(self, rows: Iterable[dict[str, Any]]) -> None:
        """Write ``rows`` into the next generation of the table, name it in the counters, then drop the old
        one with its files."""
        generation = self.state.generation + 1
        name = self._name(generation)
        if self.client.has_collection(name):
            self.client.drop_collection(name)
        fresh = MilvusTable(self.client, name, self.dim)
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= _PAGE:
                fresh.upsert(batch)
                batch = []
        fresh.upsert(batch)
        fresh.flush()
        self._save_counters(generation=generation, rewrite_pending=False, erase=[], scrub=[])
        self.counters.flush()
        old, self.memories = self.memories, fresh
        old.drop()

    # ------------------------------------------------------------ checkpoint (milvus-lite only)

    def save_checkpoint(self, seq: int, items: list[MemoryItem], vecs: dict[str, np.ndarray]) -> None:
        if self.path is None:
            return
        tmp, final = self.path / "checkpoint.tmp", self.path / "checkpoint"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        ids = list(vecs)
        matrix = np.stack([vecs[i] for i in ids]) if ids else np.zeros((0, self.memories.dim), dtype=np.float32)
        save_file(
            {"vectors": matrix.astype(np.float32)},
            str(tmp / "vectors.safetensors"),
            metadata={"seq": str(seq), "ids": json.dumps(ids)},
        )
        (tmp / "items.json").write_text(Checkpoint(seq=seq, items=items).model_dump_json())
        self.drop_checkpoint()
        tmp.rename(final)

    def drop_checkpoint(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path / "checkpoint", ignore_errors=True)

    def _read_checkpoint(self) -> tuple[Checkpoint, dict[str, np.ndarray]] | None:
        if self.path is None or not (self.path / "checkpoint").is_dir():
            return None
        folder = self.path / "checkpoint"
        try:
            from safetensors import safe_open

            with safe_open(str(folder / "vectors.safetensors"), framework="np") as f:
                meta = f.metadata()
            matrix = load_file(str(folder / "vectors.safetensors"))["vectors"]
            ids = json.loads(meta["ids"])
            ckpt = Checkpoint.model_validate_json((folder / "items.json").read_bytes())
            if int(meta["seq"]) != ckpt.seq or len(ids) != len(matrix):
                raise ValueError("checkpoint files disagree")
        except Exception as exc:  # a damaged checkpoint is only a slower start
            log.warning("ignoring checkpoint of cube %s: %s", self.cube_id, exc)
            return None
        return ckpt, {memory_id: matrix[i] for i, memory_id in enumerate(ids)}

    # ------------------------------------------------------------ counters, lifecycle

    def flush(self) -> None:
        self.memories.flush()
        self.counters.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            _close_client(self.client, self.uri, self.path is not None)

    def destroy(self) -> None:
        """Remove every row of the cube (the files too, for milvus-lite)."""
        if self.path is None:
            self.memories.drop()
            self.counters.drop()
            self.client.close()
        else:
            _close_client(self.client, self.uri, lite=True)
            shutil.rmtree(self.path, ignore_errors=True)


def _close_client(client: MilvusClient, uri: str, lite: bool) -> None:
    client.close()
    if lite:
        # MilvusClient.close leaves milvus-lite's in-process server (and its file lock) running;
        # stop it so the next owner of the file (a reactivated cube) can open it at once.
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


class CatalogStore:
    """Which cubes exist, with their metadata. Owned by the Directory actor."""

    def __init__(self, config: StorageConfig) -> None:
        if config.is_lite:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            self.uri = str(config.data_dir / "catalog.db")
        else:
            self.uri = config.milvus_uri or ""
        self.lite = config.is_lite
        self.client = _open_client(self.uri, config.lock_wait_s)
        self.table = MilvusTable(self.client, "memos_catalog", _PLACEHOLDER_DIM)

    def put(self, meta: CubeMeta) -> None:
        self.table.upsert(
            [{"pk": meta.id, "seq": meta.seq, "vec": _PLACEHOLDER_VEC, "doc": meta.model_dump(mode="json")}]
        )

    def delete(self, cube_id: str) -> None:
        self.table.delete([cube_id])

    def load(self) -> dict[str, CubeMeta]:
        return {row["pk"]: CubeMeta.model_validate(row["doc"]) for row in self.table.scan(with_vectors=False)}

    def close(self) -> None:
        try:
            self.table.flush()
        finally:
            _close_client(self.client, self.uri, self.lite)
