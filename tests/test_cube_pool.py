"""Cube actors as a pool: spares reused from one cube to the next, leases that keep a late call from
reaching the next cube, and two hundred cubes churned concurrently under writes with nothing lost."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from actors.cube import CubeHost
from actors.cubes import Cubes
from actors.directory import DirectoryActor
from memos_ray.config import DirectoryConfig, MemosConfig, StorageConfig
from memos_ray.errors import Unavailable
from memos_ray.types import Caller, CubeCreate, LifecycleState, MemoryCreate, PrincipalKind, Role
from tests.helpers import Leased, alive_actors, wait_for_condition

ROOT = Caller(principal="root", kind=PrincipalKind.user, subjects=["root"], admin=True, key_id="test")
DIM = 384


def _directory(tmp_path: Path, name: str, **directory: object) -> Any:
    config = MemosConfig(
        namespace=f"memos_tests_{name}",
        storage=StorageConfig(data_dir=tmp_path / name),
        directory=DirectoryConfig.model_validate({"eviction_grace_s": 0, **directory}),
    )
    d = DirectoryActor.options(namespace=config.namespace).remote(config)
    ray.get(d.ready.remote())
    return d


def _vec(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((1, DIM)).astype(np.float32)
    return v / np.linalg.norm(v)


def test_a_spare_actor_hosts_cube_after_cube_and_a_call_for_an_earlier_life_is_refused(
    runtime,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    d = _directory(tmp_path, "pool", max_live_cubes=1, spare_actors=1)
    ids = ["a", "b", "c", "e", "f"]
    for cube_id in ids:
        ray.get(d.create_cube.remote(CubeCreate(id=cube_id), ROOT))
    rng = np.random.default_rng(0)
    first = ray.get(d.activate.remote("a"))
    (secret,) = ray.get(Leased(first).add.remote([MemoryCreate(text="a's secret")], _vec(rng), "t")).items
    reused = None
    for cube_id in ids[1:]:  # with one live cube and one spare, a's actor comes back for a later cube
        act = ray.get(d.activate.remote(cube_id))
        if act.handle._actor_id == first.handle._actor_id:
            reused = act
            break
    assert reused is not None, "a passivated cube's actor should be reused as a spare"
    assert reused.lease != first.lease
    with pytest.raises(Unavailable) as refused:  # a late call made for a's life
        ray.get(first.handle.get.remote(first.lease, secret.id))
    assert refused.value.details["retry"]
    assert ray.get(Leased(reused).list.remote(0, 100, list(LifecycleState), [], None)).total == 0
    # a comes back whole, in whichever actor
    again = ray.get(d.activate.remote("a"))
    assert ray.get(Leased(again).get.remote(secret.id)).text == "a's secret"
    stats = ray.get(d.stats.remote())
    assert stats.live == 1 and stats.spares <= 1
    ray.get(d.shutdown.remote())
    ray.kill(d)


def test_the_pool_fills_to_warm_actors_in_the_background_so_a_new_live_set_starts_no_process(
    runtime,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    d = _directory(tmp_path, "warm", max_live_cubes=4, spare_actors=1, warm_actors=4)
    ids = [f"warm{i}" for i in range(5)]
    ray.get([d.create_cube.remote(CubeCreate(id=c), ROOT) for c in ids])
    wait_for_condition(lambda: ray.get(d.stats.remote()).spares == 4, timeout=90)
    started = set(alive_actors("CubeHost"))
    acts = ray.get([d.activate.remote(c) for c in ids[:4]])
    assert {a.handle._actor_id.hex() for a in acts} <= started, "the live set should open on prestarted actors"
    ray.get(d.activate.remote(ids[4]))  # past the cap: one is passivated for it
    assert ray.get(d.stats.remote()).live == 4
    ray.get(d.shutdown.remote())
    ray.kill(d)


def test_two_hundred_cubes_churned_concurrently_under_writes_lose_no_acknowledged_write(
    runtime,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    d = _directory(tmp_path, "swarm", max_live_cubes=8, spare_actors=2, eviction_grace_s=0.5)
    ids = [f"swarm{i:03d}" for i in range(200)]
    ray.get([d.create_cube.remote(CubeCreate(id=c), ROOT) for c in ids])
    cubes = Cubes(d)  # the way every entry point reaches a cube: reactivates and retries after a passivation
    rng = np.random.default_rng(1)
    order = [ids[i % len(ids)] for i in range(600)]  # three writes per cube
    random.Random(2).shuffle(order)

    async def write(i: int, cube_id: str) -> tuple[str, str, str]:
        ref = await cubes.open(cube_id, None, Role.write)
        text = f"{cube_id} fact {i}"
        added = await ref.call(CubeHost.add, [MemoryCreate(text=text)], _vec(rng), "tester")
        return cube_id, added.items[0].id, text

    async def read(cube_id: str, memory_id: str) -> str:
        ref = await cubes.open(cube_id, None, Role.read)
        return (await ref.call(CubeHost.get, memory_id, None)).text

    async def churn() -> list[tuple[str, str, str]]:
        slots = asyncio.Semaphore(6)  # fewer writers than live slots: cubes churn, writers do not wait
        acked: list[tuple[str, str, str]] = []

        async def one(i: int, cube_id: str) -> None:
            async with slots:
                acked.append(await write(i, cube_id))
                if i % 3 == 0:  # read an earlier acknowledged write back while others churn
                    cube, memory_id, text = acked[len(acked) // 2]
                    assert await read(cube, memory_id) == text

        async def passivations() -> None:  # explicit passivations besides the cap's evictions
            for cube_id in random.Random(3).sample(ids, 60):
                await d.passivate.remote(cube_id)
                await asyncio.sleep(0.02)

        await asyncio.gather(*(one(i, c) for i, c in enumerate(order)), passivations())
        return acked

    acked = asyncio.run(churn())
    assert len(acked) == 600
    stats = ray.get(d.stats.remote())
    assert stats.activations >= 200 and stats.live <= 8

    async def everything() -> dict[str, dict[str, str]]:
        out = {}
        for cube_id in ids:
            ref = await cubes.open(cube_id, None, Role.read)
            listed = await ref.call(CubeHost.list, 0, 100, [LifecycleState.active], [], None)
            out[cube_id] = {m.id: m.text for m in listed.items}
        return out

    expected: dict[str, dict[str, str]] = {c: {} for c in ids}
    for cube_id, memory_id, text in acked:
        expected[cube_id][memory_id] = text
    assert asyncio.run(everything()) == expected
    metas = {m.id: m.memory_count for m in ray.get(d.list_cubes.remote(ROOT, 0, 1000)).cubes}
    assert metas == {c: 3 for c in ids}
    ray.get(d.shutdown.remote())
    ray.kill(d)
