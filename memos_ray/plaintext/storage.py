"""Durable storage on Milvus: cubes live in shards, each a milvus-lite file by default (or a Milvus server
by URI), and a shard's storage actor is the one process that opens it.

Milvus is the record of truth. milvus-lite appends every insert to its write-ahead log and flushes it to
the OS before the call returns, so an acknowledged write survives the death of any process. Its file lock
allows one owning process per file, and opening a client costs the pymilvus imports (pandas, pyarrow:
~0.5 s) and ~100 MiB: so a few shards (``storage.shards``) hold every cube, each cube its own collection
in its shard (a purge can then rewrite one cube's table and drop its files without touching the others),
and one counters table per shard holds each cube's small numbers. Cube actors import none of this: they
reach their shard's actor (``actors/storage.py``) through :class:`~memos_ray.plaintext.rows.CubeRows`.

A table is (pk, seq, vec, doc): the document is the pydantic model's JSON and ``seq`` the cube's change
number, so "everything after N" is one scalar filter. Milvus requires a vector field in every collection,
so tables without embeddings carry a 2-dim placeholder. A passivating cube writes a checkpoint
(``checkpoint.py``) and activation reads only the rows after it.

Erasure: deleting a row is not enough. milvus-lite keeps what was written in its write-ahead log and
sealed segments until its size-tiered compaction happens to rewrite them (a manual ``compact`` does not),
so the text of a deleted row stays on disk. A purge therefore rewrites the cube's table: a new generation
of the collection gets every remaining row, the counters name it, and the old collection (its files) is
dropped. A crash in between is finished on the next open (the counters say a rewrite is pending).

With a Milvus server (``storage.milvus_uri``) every cube's rows share one collection, split into 64
partitions by a hash of the cube, every read naming its cube's partition: loading a collection on a server
costs seconds (~3 s here), so a collection per cube would make every new cube that slow. (Milvus' own
partition key would do the hashing, but 2.3.5 routes an upsert to another partition than a filtered query
reads, so the rows vanish from it.) A purge there deletes the rows and asks the server to compact, and
the server's garbage collection removes the old segment files (``dataCoord.gc.*`` sets when). A server that
restarted answers "collection not loaded" until a client loads it again: that is done here and the call
retried; a server that does not answer is :class:`~memos_ray.errors.Unavailable` (503), never a 500.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from memos_ray.config import StorageConfig
from memos_ray.errors import Unavailable
from memos_ray.plaintext.rows import Counters, row_key, shard_of
from memos_ray.types import CubeMeta, MemoryItem, PendingCascade

log = logging.getLogger(__name__)
# query_iterator warns on every scan that milvus-lite has no MVCC timestamp; that is expected.
logging.getLogger("pymilvus").setLevel(logging.ERROR)

_PLACEHOLDER_DIM = 2
_PLACEHOLDER_VEC = [1.0, 0.0]  # not zero: a zero vector has no cosine
_MAX_PK = 128
_MAX_SERVER_PK = 160  # "<cube>/<memory>@<version>"
_PAGE = 4_096
_NOT_LOADED = 101  # a server's answer for a collection that is not in memory (after a restart)
_PARTITIONS = 64  # of a server's rows table, by cube
T = TypeVar("T")


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
    """A (pk, seq, vec, doc) collection: the one way memos-ray talks to Milvus. ``partitioned``: rows also
    carry their ``cube`` and live in its partition (a server's one table of every cube's rows)."""

    def __init__(
        self, client: MilvusClient, name: str, dim: int, server: str | None = None, partitioned: bool = False
    ) -> None:
        self.client = client
        self.name = name
        self.dim = dim
        self.server = server  # the server's URI; None: milvus-lite
        self._unflushed = 0
        self._call(self._create, partitioned)
        self._call(client.load_collection, name)

    def _create(self, partitioned: bool) -> None:
        if self.client.has_collection(self.name):
            return
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=_MAX_SERVER_PK if partitioned else _MAX_PK)
        if partitioned:
            schema.add_field("cube", DataType.VARCHAR, max_length=_MAX_PK)
        schema.add_field("seq", DataType.INT64)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("doc", DataType.JSON)
        index = self.client.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="COSINE")
        try:
            # Strong: a reactivated cube must read every acknowledged row (a Milvus server defaults
            # to Bounded staleness, which could hide the last seconds of writes).
            self.client.create_collection(self.name, schema=schema, consistency_level="Strong")
        except MilvusException:
            if not self.client.has_collection(self.name):  # not another shard's actor creating it at once
                raise
            return
        # sync=False: pymilvus otherwise polls the index state every 0.5 s; a FLAT index is ready at once.
        self.client.create_index(self.name, index, sync=False)
        for k in range(_PARTITIONS if partitioned else 0):
            self.client.create_partition(self.name, partition_of(k))

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` against the server, loading the collection again if a server restart unloaded it (then
        retried once); a server that does not answer raises Unavailable. milvus-lite: called as is."""
        if self.server is None:
            return fn(*args, **kwargs)
        try:
            try:
                return fn(*args, **kwargs)
            except MilvusException as exc:
                if exc.code != _NOT_LOADED and "not loaded" not in str(exc.message):
                    raise
                log.warning("Milvus collection %s was not loaded (a server restart?): loading it", self.name)
                self.client.load_collection(self.name)
                return fn(*args, **kwargs)
        except MilvusException as exc:
            raise Unavailable(
                f"the Milvus server at {self.server} did not answer: {exc.message}", {"milvus_uri": self.server}
            ) from exc

    def upsert(self, rows: list[dict[str, Any]], partition: str | None = None) -> None:
        if rows:
            self._call(self.client.upsert, self.name, rows, **_in(partition))
            self._unflushed += len(rows)

    def delete(self, pks: list[str] | None = None, where: str | None = None, partition: str | None = None) -> None:
        if pks:
            self._call(self.client.delete, self.name, ids=pks, **_in(partition))
        if where:
            self._call(self.client.delete, self.name, filter=where, **_in(partition))

    def get(self, pks: list[str], fields: list[str], partition: str | None = None) -> list[dict[str, Any]]:
        if not pks:
            return []
        return self._call(
            self.client.get,
            self.name,
            ids=pks,
            output_fields=fields,
            partition_names=[partition] if partition else None,
        )

    def scan(
        self,
        with_vectors: bool = True,
        after_seq: int | None = None,
        where: str | None = None,
        partition: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        fields = ["pk", "seq", "doc", "vec"] if with_vectors else ["pk", "seq", "doc"]
        terms = [where or 'pk != ""'] + ([] if after_seq is None else [f"seq > {int(after_seq)}"])
        it = self._call(
            self.client.query_iterator,
            self.name,
            batch_size=_PAGE,
            filter=" and ".join(terms),
            output_fields=fields,
            partition_names=[partition] if partition else None,
            consistency_level="Strong",
        )
        try:
            while batch := self._call(it.next):
                yield from batch
        finally:
            it.close()

    def flush_if(self, threshold: int) -> None:
        if self._unflushed >= threshold:
            self.flush()

    def flush(self) -> None:
        # A server's acknowledged rows are in its log already; a flush there only seals small segments.
        if self.server is None:
            self.client.flush(self.name)
        self._unflushed = 0

    def compact(self) -> None:
        """Ask a server to rewrite segments without their deleted rows (milvus-lite: see the module's note)."""
        if self.server is not None:
            self._call(self.client.compact, self.name)

    def release(self) -> None:
        self._call(self.client.release_collection, self.name)

    def drop(self) -> None:
        self._call(self.client.drop_collection, self.name)


def _in(partition: str | None) -> dict[str, str]:
    """The ``partition_name`` argument: absent for a table without partitions (pymilvus refuses "")."""
    return {"partition_name": partition} if partition else {}


def partition_of(bucket: int) -> str:
    return f"p{bucket:02d}"


def _safe_name(prefix: str, key: str) -> str:
    # Milvus collection names allow [A-Za-z0-9_]; cube ids also allow '-': hash to stay unambiguous.
    return f"{prefix}_{hashlib.sha1(key.encode()).hexdigest()[:20]}"


class Shard:
    """One Milvus database holding many cubes: ``<data_dir>/shards/<k>.db`` with milvus-lite, the server's
    default database otherwise. One process opens a lite shard: its storage actor (or a test, a tool)."""

    _open: ClassVar[dict[str, tuple[Shard, int]]] = {}  # uri -> (shard, users) in this process

    def __init__(self, config: StorageConfig, index: int) -> None:
        self.config = config
        self.index = index
        self.lite = config.is_lite
        if self.lite:
            (config.data_dir / "shards").mkdir(parents=True, exist_ok=True)
            self.uri = str(config.data_dir / "shards" / f"{index:03d}.db")
        else:
            self.uri = config.milvus_uri or ""
        self.client = _open_client(self.uri, config.lock_wait_s)
        self.server = None if self.lite else self.uri
        self.counters = MilvusTable(self.client, "memos_counters", _PLACEHOLDER_DIM, self.server)
        self._rows: dict[int, MilvusTable] = {}

    def rows(self, dim: int) -> MilvusTable:
        """A server's one table of every cube's rows (per embedding width)."""
        table = self._rows.get(dim)
        if table is None:
            table = self._rows[dim] = MilvusTable(self.client, f"memos_rows_{dim}", dim, self.server, partitioned=True)
        return table

    def counters_of(self, cube_id: str) -> Counters | None:
        """A cube's counters row (None: nothing was ever written to the cube)."""
        rows = self.client.get(self.counters.name, ids=[cube_id], output_fields=["doc"])
        return Counters.model_validate(rows[0]["doc"]) if rows else None

    def pending_cascades(self) -> list[str]:
        """The cubes of this shard whose cascade outbox holds something (each must be opened to finish it)."""
        rows = self.counters.scan(with_vectors=False)
        return sorted(r["pk"] for r in rows if (r["doc"] or {}).get("cascades"))

    def open_cube(self, cube_id: str, dim: int, owned: bool = False) -> CubeStore:
        """The store of ``cube_id``'s rows: its own collection in a lite file, a partition on a server."""
        return (CubeStore if self.lite else ServerCubeStore)(self, cube_id, dim, owned)

    @classmethod
    def acquire(cls, config: StorageConfig, cube_id: str) -> Shard:
        """The shard of ``cube_id``, opened once per process however many cubes use it."""
        index = shard_of(cube_id, config.shards)
        uri = str(config.data_dir / "shards" / f"{index:03d}.db") if config.is_lite else (config.milvus_uri or "")
        shard, users = cls._open.get(uri, (None, 0))
        if shard is None:
            shard = cls(config, index)
        cls._open[uri] = (shard, users + 1)
        return shard

    def release(self) -> None:
        shard, users = self._open.pop(self.uri, (self, 1))
        if users > 1:
            self._open[self.uri] = (shard, users - 1)
        else:
            self.close()

    def close(self) -> None:
        try:
            self.counters.flush()
        finally:
            _close_client(self.client, self.uri, self.lite)


class CubeStore:
    """A cube's memory versions (one row per version, embeddings kept) in its shard, and its counters."""

    def __init__(self, shard: Shard, cube_id: str, dim: int, owned: bool = False) -> None:
        self.shard = shard
        self.client = shard.client
        self.config = shard.config
        self.cube_id = cube_id
        self.dim = dim
        self._owned = owned  # opened by CubeStore.local: closing the cube releases the shard
        self._base = _safe_name("mem", cube_id)
        self.state, self._stored = self._read_counters()
        legacy = self.config.data_dir / "cubes" / cube_id / "milvus.db"
        if not self._stored and self.config.is_lite and legacy.exists():  # never read as an empty cube
            raise Unavailable(
                f"cube {cube_id} is stored in the layout from before shards ({legacy}); this version does not "
                "migrate it yet: run the earlier version, or move the cube's memories through the API",
                {"cube_id": cube_id, "path": str(legacy)},
            )
        self._table: MilvusTable | None = None  # opened on first use: a clean reactivation needs none
        if self._stored and self.state.clean_seq is None:  # not passivated cleanly: finish what a purge left
            self._recover()

    @property
    def memories(self) -> MilvusTable:
        if self._table is None:
            self._table = MilvusTable(self.client, self._name(self.state.generation), self.dim)
        return self._table

    @classmethod
    def local(cls, config: StorageConfig, cube_id: str, dim: int) -> CubeStore:
        """Opened in this process (tests, tools): never while a server's storage actor holds the shard."""
        shard = Shard.acquire(config, cube_id)
        try:
            return shard.open_cube(cube_id, dim, owned=True)
        except BaseException:
            shard.release()
            raise

    def _name(self, generation: int) -> str:
        return self._base if generation == 0 else f"{self._base}_g{generation}"

    def _recover(self) -> None:
        """A rewrite that died half-way leaves its new collection behind (dropped), a finished one at most the
        old (dropped); a purge that died before its rewrite was done is finished from the old table."""
        gen = self.state.generation
        for other in (gen - 1, gen + 1):
            if other >= 0 and self.client.has_collection(self._name(other)):
                self.client.drop_collection(self._name(other))
        if self.state.rewrite_pending:
            self.rewrite(self._surviving_rows())

    def _read_counters(self) -> tuple[Counters, bool]:
        """The cube's counters, and whether it has a row: none means nothing was ever written (the first
        write of a cube writes its counters first), so a new cube's activation reads no table."""
        counters = self.shard.counters_of(self.cube_id)
        return (counters, True) if counters is not None else (Counters(), False)

    def _save_counters(self, **changes: Any) -> None:
        self.state = self.state.model_copy(update=changes)
        self._stored = True
        row = {"pk": self.cube_id, "seq": 0, "vec": _PLACEHOLDER_VEC, "doc": self.state.model_dump()}
        self.shard.counters.upsert([row])

    pk = staticmethod(row_key)

    def set_cascades(self, items: list[PendingCascade]) -> None:
        self._save_counters(cascades=items)

    def _dirty(self) -> None:
        """Before a row changes: the checkpoint no longer says everything (durable first)."""
        if self.state.clean_seq is not None or not self._stored:
            self._save_counters(clean_seq=None)
            self._stored = True

    def write(self, items: list[MemoryItem], vecs: np.ndarray) -> None:
        self._dirty()
        rows = [
            {"pk": self.pk(it.id, it.version), "seq": it.seq, "vec": vec.tolist(), "doc": it.model_dump(mode="json")}
            for it, vec in zip(items, vecs, strict=True)
        ]
        self.memories.upsert(rows)
        self.memories.flush_if(self.config.flush_every)

    def load(self, after_seq: int | None = None) -> tuple[list[MemoryItem], dict[str, np.ndarray]]:
        """Every version stored after ``after_seq`` (None: all), and the vector of each memory's latest one."""
        items: list[MemoryItem] = []
        if not self._stored:
            return items, {}
        vecs: dict[str, np.ndarray] = {}
        latest: dict[str, int] = {}
        for row in self.memories.scan(with_vectors=True, after_seq=after_seq):
            # rows written before usage moved to the MemScheduler carry a ``usage`` counter: not read
            item = MemoryItem.model_validate({k: v for k, v in row["doc"].items() if k != "usage"})
            items.append(item)
            if item.version >= latest.get(item.id, 0):
                latest[item.id] = item.version
                vecs[item.id] = np.asarray(row["vec"], dtype=np.float32)
        return items, vecs

    def erase(
        self, pks: list[str], scrubbed: list[str], kept: list[MemoryItem], vecs: dict[str, np.ndarray], seq: int
    ) -> None:
        """Leave no trace of the rows ``pks`` in any file: the table is rewritten from ``kept`` (every version
        that stays, as the cube holds it, contexts already cleared in the ``scrubbed`` rows; each row gets its
        memory's current vector, the only one ever read) and the old table dropped with its files. What to
        leave out is recorded first, so a crash is finished on the next open from the old table. The cube
        drops its checkpoint before (it would bring the purged rows back)."""
        self._save_counters(seq_floor=seq, rewrite_pending=True, erase=pks, scrub=scrubbed, clean_seq=None)
        self.shard.counters.flush()
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
        self.shard.counters.flush()
        old, self._table = self.memories, fresh
        old.drop()

    # ------------------------------------------------------------ lifecycle

    def flush(self) -> None:
        if self._table is not None:
            self._table.flush()
        self.shard.counters.flush()

    def close(self, clean_seq: int | None = None) -> None:
        """Flushed, and its rows out of the shard's memory until the cube is opened again; ``clean_seq``: the
        seq of the checkpoint the cube wrote (it holds every row)."""
        try:  # no flush: every row is in the write-ahead log already, and a clean reopen reads no table
            if clean_seq is not None and clean_seq != self.state.clean_seq:
                self._save_counters(clean_seq=clean_seq)
            if self._table is not None:
                self._table.release()
        finally:
            if self._owned:
                self.shard.release()

    def destroy(self) -> None:
        """Remove every row of the cube, its files and its counters."""
        try:
            gen = self.state.generation
            for name in {self._name(max(gen - 1, 0)), self._name(gen), self._name(gen + 1)}:
                if self.client.has_collection(name):
                    self.client.drop_collection(name)
            self.shard.counters.delete([self.cube_id])
            self.shard.counters.flush()
        finally:
            if self._owned:
                self.shard.release()


class _CubeSlice:
    """One cube's rows in a server's shared table, used as the cube's own table: keys are prefixed with the
    cube (primary keys are unique per collection) and every read is filtered to its partition."""

    def __init__(self, table: MilvusTable, cube_id: str) -> None:
        self.table = table
        self.cube_id = cube_id
        self.name = table.name
        self._prefix = f"{cube_id}/"
        self.where = f'cube == "{cube_id}"'  # cube ids are [A-Za-z0-9_-]: nothing to escape
        self.partition = partition_of(shard_of(cube_id, _PARTITIONS))

    def key(self, pk: str) -> str:
        return self._prefix + pk

    def upsert(self, rows: list[dict[str, Any]]) -> None:
        self.table.upsert([{**r, "pk": self.key(r["pk"]), "cube": self.cube_id} for r in rows], self.partition)

    def delete(self, pks: list[str]) -> None:
        self.table.delete([self.key(pk) for pk in pks], partition=self.partition)

    def get(self, pks: list[str]) -> list[dict[str, Any]]:
        rows = self.table.get([self.key(pk) for pk in pks], ["pk", "seq", "doc", "vec"], self.partition)
        return [{**r, "pk": r["pk"].removeprefix(self._prefix)} for r in rows]

    def scan(self, with_vectors: bool = True, after_seq: int | None = None) -> Iterator[dict[str, Any]]:
        for row in self.table.scan(with_vectors, after_seq, where=self.where, partition=self.partition):
            yield {**row, "pk": row["pk"].removeprefix(self._prefix)}

    def flush_if(self, threshold: int) -> None:
        self.table.flush_if(threshold)

    def flush(self) -> None:
        self.table.flush()

    def drop(self) -> None:
        self.table.delete(where=self.where, partition=self.partition)
        self.table.compact()


class ServerCubeStore(CubeStore):
    """A cube's rows on a Milvus server: a partition of the shared table, so opening a cube opens nothing.

    A purge deletes the erased rows, writes the scrubbed ones back without their context and asks the server
    to compact; what to erase is recorded first, so a crash is finished on the next open (it is idempotent).
    """

    _table: _CubeSlice | None  # type: ignore[assignment]

    @property
    def memories(self) -> _CubeSlice:  # type: ignore[override]
        if self._table is None:
            self._table = _CubeSlice(self.shard.rows(self.dim), self.cube_id)
        return self._table

    def erase(
        self, pks: list[str], scrubbed: list[str], kept: list[MemoryItem], vecs: dict[str, np.ndarray], seq: int
    ) -> None:
        self._save_counters(seq_floor=seq, rewrite_pending=True, erase=pks, scrub=scrubbed, clean_seq=None)
        scrub = set(scrubbed)
        self._finish_erase(
            [
                {"pk": self.pk(i.id, i.version), "seq": i.seq, "vec": vecs[i.id], "doc": i.model_dump(mode="json")}
                for i in kept
                if self.pk(i.id, i.version) in scrub
            ]
        )

    def _recover(self) -> None:
        """A purge left pending (no generations here: they are milvus-lite's rewrites): finished from what is
        stored, its scrubbed rows read back and written without their context."""
        if self.state.rewrite_pending:
            scrub = [{**r, "doc": {**r["doc"], "context": None}} for r in self.memories.get(self.state.scrub)]
            self._finish_erase(scrub)

    def _finish_erase(self, scrubbed_rows: list[dict[str, Any]]) -> None:
        self.memories.delete(self.state.erase)
        self.memories.upsert(scrubbed_rows)
        self.memories.table.compact()
        self._save_counters(rewrite_pending=False, erase=[], scrub=[])

    def close(self, clean_seq: int | None = None) -> None:
        try:  # the shared table stays loaded: it is every cube's
            if clean_seq is not None and clean_seq != self.state.clean_seq:
                self._save_counters(clean_seq=clean_seq)
        finally:
            if self._owned:
                self.shard.release()

    def destroy(self) -> None:
        try:
            self.memories.drop()
            self.shard.counters.delete([self.cube_id])
        finally:
            if self._owned:
                self.shard.release()


def _close_client(client: MilvusClient, uri: str, lite: bool) -> None:
    client.close()
    if lite:
        # MilvusClient.close leaves milvus-lite's in-process server (and its file lock) running;
        # stop it so the next owner of the file can open it at once.
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def read_legacy_catalog(path: Path, lock_wait_s: float) -> list[CubeMeta]:
    """The cubes an earlier version listed in a milvus-lite catalog file (imported by ``catalog.py``)."""
    uri = str(path)
    client = _open_client(uri, lock_wait_s)
    try:
        table = MilvusTable(client, "memos_catalog", _PLACEHOLDER_DIM)
        return [CubeMeta.model_validate(row["doc"]) for row in table.scan(with_vectors=False)]
    finally:
        _close_client(client, uri, True)
