"""Cube, Directory and Embedder actors on one shared local Ray."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import ray

from actors.directory import DirectoryActor
from memos_ray.config import DirectoryConfig, MemosConfig, StorageConfig
from memos_ray.types import Caller, CubeCreate, LifecycleState, MemoryCreate, MemoryUpdate, PrincipalKind
from tests.helpers import Leased, wait_for_condition

ROOT = Caller(principal="root", kind=PrincipalKind.user, subjects=["root"], admin=True, key_id="test")

ALL_STATES = list(LifecycleState)


def _add(runtime, handle, texts: list[str]):  # type: ignore[no-untyped-def]
    vecs = ray.get(runtime.embedder.embed.remote(texts))
    return ray.get(handle.add.remote([MemoryCreate(text=t) for t in texts], vecs, "tester")).items


def _snapshot(handle) -> dict[str, list[tuple[int, str, str]]]:  # type: ignore[no-untyped-def]
    """Every memory with every version: (version, text, state)."""
    listed = ray.get(handle.list.remote(0, 10_000, ALL_STATES, [], None))
    return {
        m.id: [(v.version, v.text, v.state.value) for v in ray.get(handle.history.remote(m.id))] for m in listed.items
    }


def _try_snapshot(handle):  # type: ignore[no-untyped-def]
    try:
        return _snapshot(handle)
    except ray.exceptions.RayActorError:
        return None


def test_embedder_batches_concurrent_requests(runtime) -> None:  # type: ignore[no-untyped-def]
    texts = [f"sentence number {i} about memory" for i in range(40)]
    alone = ray.get(runtime.embedder.embed.remote(texts[:1]))
    before = ray.get(runtime.embedder.stats.remote())
    parts = ray.get([runtime.embedder.embed.remote([t]) for t in texts])
    after = ray.get(runtime.embedder.stats.remote())
    assert np.allclose(parts[0], alone, atol=1e-5)
    assert all(p.shape == (1, 384) for p in parts)
    batches = after.batches - before.batches
    assert batches < len(texts), "concurrent requests should share forward passes"
    assert np.allclose(np.linalg.norm(np.concatenate(parts), axis=1), 1.0, atol=1e-4)


def test_acknowledged_writes_survive_killing_the_cube_actor(runtime) -> None:  # type: ignore[no-untyped-def]
    cube_id = "crash"
    d = runtime.directory
    ray.get(d.create_cube.remote(CubeCreate(id=cube_id), ROOT))
    handle = Leased(ray.get(d.activate.remote(cube_id)))
    acked = []
    for start in range(0, 60, 15):
        acked += _add(runtime, handle, [f"memory {i} of the crash test" for i in range(start, start + 15)])
    text = "memory 0, edited"
    vec = ray.get(runtime.embedder.embed.remote([text]))[0]
    ray.get(handle.update.remote(acked[0].id, MemoryUpdate(text=text), vec, "tester"))
    ray.get(handle.delete.remote(acked[1].id, None, "tester"))
    expected = _snapshot(handle)

    ray.kill(handle.handle, no_restart=False)  # SIGKILL right after the acknowledgements: no flush, no close

    # a crashed cube actor is not restarted in place (it may have hosted any cube): the Directory is told,
    # and the next activation opens the cube in a fresh actor, from its storage
    wait_for_condition(lambda: _try_snapshot(handle) is None, timeout=30)  # ray.kill takes effect asynchronously
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(handle.meta.remote())
    assert not ray.get(d.drop_dead.remote(cube_id, handle.handle))  # not a clean passivation
    got = _snapshot(Leased(ray.get(d.activate.remote(cube_id))))
    assert len(got) == 60
    assert got == expected
    assert got[acked[0].id][-1] == (2, text, "active")
    assert got[acked[1].id][-1][2] == "deleted"


def test_ten_cubes_under_a_live_cap_of_three(runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = MemosConfig(
        namespace="memos_tests_cap3",
        storage=StorageConfig(data_dir=tmp_path / "cap3"),
        directory=DirectoryConfig(max_live_cubes=3),
    )
    d = DirectoryActor.remote(config)
    ids = [f"cube{i}" for i in range(10)]
    expected = {}
    for n, cube_id in enumerate(ids):
        ray.get(d.create_cube.remote(CubeCreate(id=cube_id), ROOT))
        handle = Leased(ray.get(d.activate.remote(cube_id)))
        items = _add(runtime, handle, [f"cube {n} fact {k}" for k in range(5)])
        text = f"cube {n} fact 0, second version"
        vec = ray.get(runtime.embedder.embed.remote([text]))[0]
        ray.get(handle.update.remote(items[0].id, MemoryUpdate(text=text, expected_version=1), vec, "tester"))
        expected[cube_id] = _snapshot(handle)
        assert len(ray.get(d.live_cubes.remote())) <= 3

    # every cube again, in another order: most are passivated by now and come back whole
    for cube_id in reversed(ids):
        handle = Leased(ray.get(d.activate.remote(cube_id)))
        assert _snapshot(handle) == expected[cube_id]
        assert len(ray.get(d.live_cubes.remote())) <= 3
    stats = ray.get(d.stats.remote())
    assert stats.cubes == 10 and stats.live == 3
    assert stats.passivations >= 14
    metas = ray.get(d.list_cubes.remote(ROOT)).cubes
    assert {m.id: m.memory_count for m in metas} == {c: 5 for c in ids}

    # concurrent activations of one passivated cube share one actor
    async def many():  # type: ignore[no-untyped-def]
        return [a.handle for a in await asyncio.gather(*(d.activate.remote("cube0") for _ in range(5)))]

    handles = asyncio.run(many())
    assert len({h._actor_id for h in handles}) == 1

    # more concurrent activations than the cap: the cap holds, and every one gets a working actor
    async def burst():  # type: ignore[no-untyped-def]
        hs = await asyncio.gather(*(d.activate.remote(c) for c in ids[:7]))
        return [Leased(a) for a in hs], await d.stats.remote()

    handles, stats = asyncio.run(burst())
    assert stats.live <= 3
    for cube_id, handle in zip(ids[:7], handles, strict=True):
        try:
            snap = _snapshot(handle)
        except Exception:  # evicted again by a later activation of the burst: reactivate
            snap = _snapshot(Leased(ray.get(d.activate.remote(cube_id))))
        assert snap == expected[cube_id]
    ray.get(d.shutdown.remote())
    ray.kill(d)


@pytest.mark.parametrize("policy", ["lfu", "lru"])
def test_eviction_policy(runtime, tmp_path: Path, policy: str) -> None:  # type: ignore[no-untyped-def]
    config = MemosConfig(
        namespace=f"memos_tests_{policy}",
        storage=StorageConfig(data_dir=tmp_path / policy),
        directory=DirectoryConfig(max_live_cubes=2, eviction=policy, eviction_grace_s=0),
    )
    d = DirectoryActor.remote(config)
    for cube_id in ("hot", "once", "new"):
        ray.get(d.create_cube.remote(CubeCreate(id=cube_id), ROOT))
    for _ in range(5):
        ray.get(d.activate.remote("hot"))
    ray.get(d.activate.remote("once"))  # the most recently used, but used once
    ray.get(d.activate.remote("new"))
    live = set(ray.get(d.live_cubes.remote()))
    assert live == ({"hot", "new"} if policy == "lfu" else {"once", "new"})
    ray.get(d.shutdown.remote())
    ray.kill(d)
