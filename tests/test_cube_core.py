"""MemCube on real milvus-lite and the real MiniLM encoder, without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from memos_ray.config import SearchConfig, StorageConfig
from memos_ray.errors import Conflict, InvalidInput, MemoryNotFound, QuotaExceeded, Unavailable, VersionConflict
from memos_ray.plaintext.cube import MemCube
from memos_ray.plaintext.embedding import SentenceEncoder
from memos_ray.plaintext.rows import shard_of
from memos_ray.plaintext.storage import CubeStore, Shard
from memos_ray.plaintext.text import index_text
from memos_ray.types import (
    CubeMeta,
    CubeQuotas,
    LifecycleState,
    MemoryCreate,
    MemoryUpdate,
    PendingCascade,
    SearchQuery,
    utcnow,
)

FACTS = [
    "Caroline went to an LGBTQ support group on Tuesday.",
    "Melanie paints landscapes at sunrise.",
    "The team's deploy window is Thursday afternoon.",
    "Bob is allergic to peanuts.",
]


def meta(quotas: CubeQuotas | None = None) -> CubeMeta:
    now = utcnow()
    return CubeMeta(id="c1", created_at=now, updated_at=now, quotas=quotas or CubeQuotas())


def open_cube(storage: StorageConfig, quotas: CubeQuotas | None = None) -> MemCube:
    return MemCube(meta(quotas), storage, SearchConfig(), 384)


def add(cube: MemCube, encoder: SentenceEncoder, texts: list[str]):  # type: ignore[no-untyped-def]
    items = [MemoryCreate(text=t, tags=["t"]) for t in texts]
    return cube.add(items, encoder.encode([index_text(t, None) for t in texts]), "tester").items


def test_add_search_update_delete_purge_and_reload(any_storage: StorageConfig, encoder: SentenceEncoder) -> None:
    cube = open_cube(any_storage)
    items = add(cube, encoder, FACTS)
    assert [i.version for i in items] == [1, 1, 1, 1] and [i.seq for i in items] == [1, 2, 3, 4]
    assert all(i.provenance.author == "tester" for i in items)

    q = SearchQuery(query="who has a food allergy?", top_k=2)
    hits = cube.search(q, encoder.encode([q.query])[0])
    assert hits[0].memory.id == items[3].id
    assert cube.history[items[3].id][-1] == items[3]  # a search leaves the version as it was written

    new_text = "Bob is allergic to shellfish."
    v2 = cube.update(items[3].id, MemoryUpdate(text=new_text, expected_version=1), encoder.encode([new_text])[0], "ed")
    assert (v2.version, v2.text, v2.provenance.author) == (2, new_text, "ed")
    with pytest.raises(VersionConflict):
        cube.update(items[3].id, MemoryUpdate(tags=["x"], expected_version=1), None, "ed")
    with pytest.raises(InvalidInput):
        cube.update(items[3].id, MemoryUpdate(text="needs a vector"), None, "ed")

    gone = cube.delete(items[1].id, None, "ed")
    assert gone.state == LifecycleState.deleted and gone.version == 2
    with pytest.raises(Conflict):
        cube.update(items[1].id, MemoryUpdate(tags=["x"]), None, "ed")
    painting = SearchQuery(query="painting landscapes")
    assert items[1].id not in {h.memory.id for h in cube.search(painting, encoder.encode([painting.query])[0])}

    cube.purge(items[2].id)
    with pytest.raises(MemoryNotFound):
        cube.get(items[2].id)
    seq_before = cube.seq
    cube.close()

    # a fresh process would see the same: reopen from storage
    again = open_cube(any_storage)
    assert again.seq == seq_before
    assert [v.text for v in again.versions(items[3].id)] == [FACTS[3], new_text]
    assert again.get(items[3].id, version=1).text == FACTS[3]
    assert again.get(items[1].id).state == LifecycleState.deleted
    assert again.page(0, 10).total == 2
    assert again.page(0, 10, states=list(LifecycleState)).total == 3
    assert again.get(items[0].id, version=1) == items[0]  # versions are immutable (usage lives beside them)
    hits = again.search(q, encoder.encode([q.query])[0])
    assert hits[0].memory.text == new_text
    with pytest.raises(MemoryNotFound):
        again.get(items[2].id)
    again.close()


def test_failed_write_changes_nothing(storage: StorageConfig, encoder: SentenceEncoder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cube = open_cube(storage)
    add(cube, encoder, FACTS[:2])
    before = (cube.seq, len(cube.latest), cube.live_meta())

    def boom(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(cube.store, "write", boom)
    with pytest.raises(OSError):
        add(cube, encoder, FACTS[2:])
    assert (cube.seq, len(cube.latest), cube.live_meta()) == before
    monkeypatch.undo()
    cube.close()


def test_quota(storage: StorageConfig, encoder: SentenceEncoder) -> None:
    cube = open_cube(storage, CubeQuotas(max_memories=3))
    add(cube, encoder, FACTS[:2])
    with pytest.raises(QuotaExceeded):
        add(cube, encoder, FACTS[2:])
    assert len(cube.latest) == 2
    cube.close()


def test_vectors_must_match(storage: StorageConfig) -> None:
    cube = open_cube(storage)
    with pytest.raises(InvalidInput):
        cube.add([MemoryCreate(text="x")], np.zeros((1, 5), dtype=np.float32), "t")
    cube.close()


def test_checkpoint_plus_tail_after_a_crash(storage: StorageConfig, encoder: SentenceEncoder) -> None:
    cube = open_cube(storage)
    first = add(cube, encoder, FACTS[:3])
    cube.close()  # passivation: checkpoint at seq 3
    assert (storage.data_dir / "cubes" / "c1" / "checkpoint" / "items.json").exists()

    crashed = open_cube(storage)
    later = add(crashed, encoder, FACTS[3:])
    text = "Melanie paints portraits now."
    crashed.update(first[1].id, MemoryUpdate(text=text), encoder.encode([text])[0], "ed")
    # no close(): the rows after the checkpoint exist only in milvus' log

    recovered = open_cube(storage)
    assert set(recovered.latest) == {i.id for i in first + later}
    assert recovered.get(first[1].id).text == text
    assert [v.version for v in recovered.versions(first[1].id)] == [1, 2]
    assert recovered.seq == 5

    recovered.purge(first[0].id)  # drops the checkpoint: it would resurrect the purged rows
    after_purge = open_cube(storage)
    with pytest.raises(MemoryNotFound):
        after_purge.get(first[0].id)
    after_purge.close()

    (storage.data_dir / "cubes" / "c1" / "checkpoint" / "items.json").write_text("{not json")
    damaged = open_cube(storage)  # a damaged checkpoint only means a full scan
    assert set(damaged.latest) == {i.id for i in first[1:] + later}
    q = SearchQuery(query="portrait painting")
    assert damaged.search(q, encoder.encode([q.query])[0])[0].memory.id == first[1].id
    damaged.close()


def test_explicit_nulls_in_an_update_change_nothing(any_storage: StorageConfig, encoder: SentenceEncoder) -> None:
    cube = open_cube(any_storage)
    (item,) = add(cube, encoder, FACTS[:1])
    patch = MemoryUpdate.model_validate({"text": None, "kind": None, "tags": None, "metadata": None, "state": None})
    v2 = cube.update(item.id, patch, None, "ed")
    assert (v2.text, v2.kind, v2.tags, v2.metadata, v2.state) == (
        item.text,
        item.kind,
        item.tags,
        item.metadata,
        item.state,
    )
    cube.close()


def test_change_feed_order_replay_and_purge(any_storage: StorageConfig, encoder: SentenceEncoder) -> None:
    cube = open_cube(any_storage)
    a, b = add(cube, encoder, ["Mia's phone PIN is in the drawer.", "The cat is called Tofu."])
    cube.update(a.id, MemoryUpdate(text="Mia moved the PIN to the safe."), encoder.encode(["x"])[0], "mia")
    cube.delete(b.id, None, "mia")
    ops = [(e.op, e.memory_id, e.version) for e in cube.changes_after(0)]
    assert ops == [("add", a.id, 1), ("add", b.id, 1), ("update", a.id, 2), ("delete", b.id, 2)]
    assert [e.seq for e in cube.changes_after(2)] == [3, 4]
    cube.purge(a.id)  # erased: the feed no longer carries its text, only that it was purged
    events = cube.changes_after(0)
    assert [(e.op, e.memory_id) for e in events if e.memory_id == a.id] == [("purge", a.id)]
    assert all("PIN" not in (e.memory.text if e.memory else "") for e in events)
    cube.close()
    reopened = open_cube(any_storage)  # after a reactivation the feed is rebuilt from the stored versions
    assert [(e.op, e.memory_id, e.version) for e in reopened.changes_after(0)] == [
        ("add", b.id, 1),
        ("delete", b.id, 2),
    ]
    reopened.close()


def test_the_cascade_outbox_is_kept_with_the_rows_and_goes_with_the_cube(any_storage: StorageConfig) -> None:
    """No node's disk holds it: a cube reopened anywhere finds what its last life had not finished."""
    store = CubeStore.local(any_storage, "c1", 384)
    pending = [PendingCascade(memory_ids=["m1"], what="purged"), PendingCascade(memory_ids=["m2"], what="edited")]
    store.set_cascades(pending)
    store.close()
    again = CubeStore.local(any_storage, "c1", 384)
    assert again.state.cascades == pending
    assert again.shard.pending_cascades() == ["c1"] and again.shard.counters_of("c1").cascades == pending
    again.set_cascades(pending[1:])  # the purge's is done
    again.close()
    last = CubeStore.local(any_storage, "c1", 384)
    assert last.state.cascades == pending[1:]
    last.set_cascades([])
    assert last.shard.pending_cascades() == []
    last.set_cascades(pending)
    last.destroy()  # a deleted cube takes its outbox along
    shard = Shard(any_storage, shard_of("c1", any_storage.shards))
    try:
        assert shard.pending_cascades() == [] and shard.counters_of("c1") is None
    finally:
        shard.close()
    assert not (any_storage.data_dir / "cascades").exists()


def test_a_cube_in_the_layout_from_before_shards_is_refused_not_read_as_empty(storage: StorageConfig) -> None:
    legacy = storage.data_dir / "cubes" / "c1" / "milvus.db"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"")  # a wave-1 cube's own milvus-lite file
    with pytest.raises(Unavailable, match="layout from before shards"):
        open_cube(storage)


def test_an_add_with_ids_it_already_holds_is_a_retry_that_adds_nothing(
    storage: StorageConfig, encoder: SentenceEncoder
) -> None:
    from memos_ray.types import keyed_memory_ids

    cube = open_cube(storage)
    ids = keyed_memory_ids("scope|key-1", 1_700_000_000.0, 2)
    new = [MemoryCreate(text=t) for t in FACTS[:2]]
    vecs = encoder.encode(FACTS[:2])
    first = cube.add(new, vecs, "tester", ids=ids)
    assert [i.id for i in first.items] == ids and first.duplicates == []
    seq = cube.seq
    again = cube.add(new, vecs, "tester", ids=ids)  # the first try committed, its answer was lost
    assert again.items == first.items and again.duplicates == [0, 1] and cube.seq == seq
    assert keyed_memory_ids("scope|key-1", 1_700_000_000.0, 2) == ids  # the same on every retry
    assert keyed_memory_ids("scope|key-2", 1_700_000_000.0, 2) != ids
    cube.close()
