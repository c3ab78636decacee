"""Cube rows on a real Milvus server (the packaged 2.3.5 standalone, started by the session): a purge that
reaches the server's rows, one left pending by a crash, a server restart under an open store, and a server
that does not answer. The cube tests that run on both row stores are in test_cube_core.py (``any_storage``)."""

from __future__ import annotations

import pytest

from memos_ray.config import SearchConfig, StorageConfig
from memos_ray.errors import Unavailable
from memos_ray.plaintext.cube import MemCube
from memos_ray.plaintext.embedding import SentenceEncoder
from memos_ray.plaintext.storage import CubeStore, ServerCubeStore, Shard
from memos_ray.plaintext.text import index_text
from memos_ray.types import CubeMeta, MemoryCreate, MemoryItem, utcnow
from tests.helpers import crash_mid_purge
from tests.milvus_server import MilvusProcess, fresh_database

pytestmark = pytest.mark.slow  # a Milvus server: ~10 s to start, ~3 s to load a collection


@pytest.fixture
def server_storage(milvus: MilvusProcess, tmp_path) -> StorageConfig:  # type: ignore[no-untyped-def]
    return StorageConfig(data_dir=tmp_path / "data", milvus_uri=fresh_database(milvus.uri))


def open_cube(storage: StorageConfig, cube_id: str = "srv") -> MemCube:
    now = utcnow()
    return MemCube(CubeMeta(id=cube_id, created_at=now, updated_at=now), storage, SearchConfig(), 384)


def add(cube: MemCube, encoder: SentenceEncoder, items: list[MemoryCreate]) -> list[MemoryItem]:
    return cube.add(items, encoder.encode([index_text(i.text, None) for i in items]), "tester").items


def server_docs(storage: StorageConfig) -> list[str]:
    """Every row the server returns for the deployment's rows table, read by a client of its own."""
    shard = Shard(storage, 0)
    try:
        return [str(r["doc"]) for r in shard.rows(384).scan(with_vectors=False)]
    finally:
        shard.close()


def test_cubes_share_one_table_and_a_purge_leaves_no_row_on_the_server(
    server_storage: StorageConfig, encoder: SentenceEncoder
) -> None:
    cube, other = open_cube(server_storage, "a"), open_cube(server_storage, "b")
    secret, kept = add(cube, encoder, [MemoryCreate(text="The vault code is pangolin-8812."), MemoryCreate(text="Hi.")])
    quoting = add(cube, encoder, [MemoryCreate(text="Got it.", context="The vault code is pangolin-8812.")])[0]
    theirs = add(other, encoder, [MemoryCreate(text="The vault code is pangolin-8812.")])[0]  # another cube's
    assert isinstance(cube.store, ServerCubeStore)
    # no collection per cube: a new cube opens nothing
    assert set(cube.store.client.list_collections()) == {"memos_counters", "memos_rows_384"}
    assert sum("pangolin" in d for d in server_docs(server_storage)) == 3

    cube.purge(secret.id)
    assert cube.get(quoting.id).context is None
    assert sum("pangolin" in d for d in server_docs(server_storage)) == 1  # cube b's row only
    cube.close()
    other.close()
    again, theirs_again = open_cube(server_storage, "a"), open_cube(server_storage, "b")
    assert set(again.latest) == {kept.id, quoting.id} and again.get(quoting.id).context is None
    assert set(theirs_again.latest) == {theirs.id}  # one cube's purge touched no other cube's rows
    again.close()
    theirs_again.close()


def test_a_purge_left_pending_by_a_crash_is_finished_on_open(
    server_storage: StorageConfig, encoder: SentenceEncoder
) -> None:
    cube = open_cube(server_storage)
    assert isinstance(cube.store, ServerCubeStore)
    _, kept, quoting = crash_mid_purge(cube, encoder)  # recorded what to erase, removed nothing yet
    assert sum("quokka" in d for d in server_docs(server_storage)) == 2
    store = CubeStore.local(server_storage, "srv", 384)
    assert not store.state.rewrite_pending and store.state.erase == [] and store.state.scrub == []
    store.close()
    assert not any("quokka" in d for d in server_docs(server_storage))
    reloaded = open_cube(server_storage)
    assert set(reloaded.latest) == {kept.id, quoting.id} and reloaded.get(quoting.id).context is None
    reloaded.close()


def test_a_server_restart_and_a_server_down_are_a_reload_and_a_503_never_a_crash(
    milvus: MilvusProcess, server_storage: StorageConfig, encoder: SentenceEncoder
) -> None:
    cube = open_cube(server_storage)
    first = add(cube, encoder, [MemoryCreate(text="Written before the restart.")])[0]

    milvus.kill()
    with pytest.raises(Unavailable, match=r"the Milvus server at .* did not answer") as down:
        add(cube, encoder, [MemoryCreate(text="Written while the server is down.")])
    assert down.value.details["milvus_uri"] == server_storage.milvus_uri
    assert set(cube.latest) == {first.id}  # the failed write changed nothing

    milvus.start()  # its collections come back unloaded: the store loads them again and retries
    second = add(cube, encoder, [MemoryCreate(text="Written after the restart.")])[0]
    cube.store.close()  # a crash: the rows are read back from the server, not a checkpoint
    reopened = open_cube(server_storage)
    assert {i.text for i in reopened.latest.values()} == {first.text, second.text}
    reopened.close()
