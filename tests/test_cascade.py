"""The cascade is the actor layer's: an edit or a purge made straight on a cube's actor (no HTTP, as any
second entry point would) reaches the adapters, and a purge whose cascade fails says so, is kept in the
cube's counters (with its rows, not on a node's disk) and is retried until done."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from actors.adapters import ADAPTERS_NAME
from actors.directory import DirectoryActor
from actors.rows import storage_name
from memos_ray.config import MemosConfig, StorageConfig
from memos_ray.errors import MemoryNotFound, Unavailable
from memos_ray.types import (
    AdapterChange,
    Caller,
    CubeCreate,
    MemoryCreate,
    MemoryUpdate,
    PendingCascade,
    PrincipalKind,
)
from tests.helpers import Leased, wait_for_condition

ROOT = Caller(principal="root", kind=PrincipalKind.user, subjects=["root"], admin=True, key_id="test")
NAMESPACE = "memos_cascade_tests"


@ray.remote
class FlakyAdapters:
    """In the place of the Adapters actor (its name, in a namespace of its own): refuses its first calls,
    so the cascade's failure path runs against real actors and a real outbox."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[str, list[str], str]] = []

    def memory_changed(self, cube_id: str, memory_ids: list[str], what: str) -> AdapterChange:
        self.calls.append((cube_id, memory_ids, what))
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the adapter store is unreachable")
        return AdapterChange()

    def fail_next(self, failures: int) -> None:
        self.failures = failures

    def seen(self) -> list[tuple[str, list[str], str]]:
        return self.calls


def test_a_purge_whose_cascade_fails_is_refused_loudly_and_retried(runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = MemosConfig(namespace=NAMESPACE, storage=StorageConfig(data_dir=tmp_path / "data"))
    adapters = FlakyAdapters.options(name=ADAPTERS_NAME, namespace=NAMESPACE).remote(failures=1)
    directory = DirectoryActor.options(namespace=NAMESPACE).remote(config)
    try:
        ray.get(directory.create_cube.remote(CubeCreate(id="erasable"), ROOT))
        cube = Leased(ray.get(directory.activate.remote("erasable")))
        texts = ["Quillon's locker code is 4417.", "Quillon likes tea."]
        vecs = ray.get(runtime.embedder.embed.remote(texts))
        secret, kept = ray.get(cube.add.remote([MemoryCreate(text=t) for t in texts], vecs, "tester")).items

        # an edit made on the actor itself, with no HTTP layer in between, still reaches the adapters
        vec = ray.get(runtime.embedder.embed.remote(["Quillon likes green tea."]))[0]
        # its cascade fails at first, which is not the edit's failure: the edit is durable and answers
        edited = ray.get(cube.update.remote(kept.id, MemoryUpdate(text="Quillon likes green tea."), vec, "tester"))
        assert edited.version == 2
        storage = ray.get_actor(storage_name(config, "erasable"), namespace=NAMESPACE)

        def outbox() -> list[PendingCascade]:  # the cube's counters, as its shard's storage actor holds them
            return ray.get(storage.cascades.remote("erasable"))

        wait_for_condition(lambda: not outbox(), timeout=20)  # retried in the background, then done
        assert [c[2] for c in ray.get(adapters.seen.remote())] == ["edited", "edited"]

        # a purge whose cascade fails: erased, refused loudly, kept, and retried until done
        ray.get(adapters.fail_next.remote(1))
        with pytest.raises(Unavailable) as refused:
            ray.get(cube.purge.remote(secret.id))
        assert refused.value.details["cascade"] == "pending"
        with pytest.raises(MemoryNotFound):  # the text itself is gone already
            ray.get(cube.get.remote(secret.id))
        assert [(i.what, i.memory_ids) for i in outbox()] == [("purged", [secret.id])]
        assert ray.get(storage.pending_cascades.remote()) == ["erasable"]  # what a restarted Directory resumes
        assert not (tmp_path / "data" / "cascades").exists()  # nothing on this node's disk
        wait_for_condition(lambda: not outbox(), timeout=20)
        assert ray.get(adapters.seen.remote())[2:] == [("erasable", [secret.id], "purged")] * 2

        # an earlier version's outbox file on this node is taken into the counters when the cube opens, and done
        assert ray.get(directory.passivate.remote("erasable"))
        legacy = tmp_path / "data" / "cascades" / "erasable.json"
        legacy.parent.mkdir(parents=True)
        legacy.write_text(f'[{{"memory_ids": ["{kept.id}"], "what": "edited"}}]')
        Leased(ray.get(directory.activate.remote("erasable")))
        assert not legacy.exists()
        wait_for_condition(lambda: ("erasable", [kept.id], "edited") in ray.get(adapters.seen.remote())[4:], timeout=20)
        wait_for_condition(lambda: not outbox(), timeout=20)
    finally:
        ray.get(directory.shutdown.remote())
        ray.kill(directory, no_restart=True)
        ray.kill(adapters, no_restart=True)
