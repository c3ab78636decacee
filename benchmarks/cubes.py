"""Many cubes on one machine: cold activation, a Zipf workload against warm, ten thousand registered cubes,
and what a live cube costs in memory.

    .venv/bin/python -u -m benchmarks.cubes                  # everything (~35 min on 2 cores, mostly 10k cubes)
    .venv/bin/python -u -m benchmarks.cubes --only cold,memory

Prints one table per part and writes benchmarks/results/cubes.json. Targets (issue #13): cold activation
<= 200 ms p50 at 1k memories and <= 500 ms at 10k; Zipf p95 <= 2x the warm p95 of the same run; unique
memory per live cube <= 80 MiB at 1k memories. Memories for the cold and memory parts are added through the
cube actors with random unit vectors (the texts are real dialogue lines): what is timed is the activation,
not the embedder.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import ray

from actors.cube import CubeHost
from actors.cubes import Cubes
from actors.directory import DIRECTORY_NAME
from benchmarks import plots
from benchmarks.common import Stack, check, corpus, pct, print_table, settle, stack, write_json
from benchmarks.foundation import bench_zipf
from memos_ray.types import MemoryCreate, Role
from tests.helpers import alive_actors

MIB = 1024 * 1024


def _directory(s: Stack) -> Any:
    return ray.get_actor(DIRECTORY_NAME, namespace=s.config.namespace)


def _fill(s: Stack, cube_id: str, n: int, batch: int = 500) -> None:
    """``n`` memories through the cube actor (random unit vectors, real texts)."""
    check(s.http.post("/v1/cubes", json={"id": cube_id}), 201)
    texts = corpus(n)
    rng = np.random.default_rng(0)

    async def go() -> None:
        ref = await Cubes(_directory(s)).open(cube_id, None, Role.write)
        for i in range(0, n, batch):
            part = texts[i : i + batch]
            vecs = rng.standard_normal((len(part), s.config.embedder.dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            await ref.call(CubeHost.add, [MemoryCreate(text=t) for t in part], vecs, "bench")

    asyncio.run(go())


def bench_cold(s: Stack, sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    directory = _directory(s)
    rows = []
    for size in sizes:
        cube_id = f"cold-{size}"
        _fill(s, cube_id, size)
        query = {"query": "what did she paint?", "top_k": 5}
        cold, warm = [], []
        for _ in range(repeats):
            ray.get(directory.passivate.remote(cube_id))
            time.sleep(0.5)  # its checkpoint is written, its actor back among the spares
            start = time.perf_counter()
            check(s.http.post(f"/v1/cubes/{cube_id}/search", json=query))
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            check(s.http.post(f"/v1/cubes/{cube_id}/search", json=query))
            warm.append(time.perf_counter() - start)
        rows.append(
            {
                "memories": size,
                "cold_p50_ms": pct(cold, 50) * 1000,
                "cold_max_ms": max(cold) * 1000,
                "warm_p50_ms": pct(warm, 50) * 1000,
                "target_ms": "<= 200" if size <= 1_000 else "<= 500",
            }
        )
    print_table("Cold activation: first search of a passivated cube, through HTTP (warm: the search after)", rows)
    return rows


def _smaps(pid: int) -> dict[str, float]:
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value, *_ = line.split()
        fields[key.rstrip(":")] = int(value) * 1024 / MIB
    return {
        "rss_mib": fields["Rss"],
        "pss_mib": fields["Pss"],
        "uss_mib": fields["Private_Clean"] + fields["Private_Dirty"],
        "anon_mib": fields["Anonymous"],
    }


def bench_memory(s: Stack, sizes: list[int]) -> list[dict[str, Any]]:
    """PSS and USS of the cube actors hosting the cold part's cubes, of a spare, and of the storage actors."""
    directory = _directory(s)
    for size in sizes:  # each opened again, in an actor that gave back what it held before
        ray.get(directory.passivate.remote(f"cold-{size}"))
    time.sleep(1.0)
    cube_pids = alive_actors("CubeHost")
    rows = []
    for size in sizes:
        act = ray.get(directory.activate.remote(f"cold-{size}"))
        check(s.http.post(f"/v1/cubes/cold-{size}/search", json={"query": "what did she paint?", "top_k": 5}))
        pid = cube_pids.get(act.handle._actor_id.hex())
        if pid is not None:
            rows.append({"process": f"cube actor, {size} memories", **_smaps(pid)})
    hosting = {ray.get(directory.activate.remote(f"cold-{n}")).handle._actor_id.hex() for n in sizes}
    spare = [pid for aid, pid in cube_pids.items() if aid not in hosting]
    if spare:
        rows.append({"process": "cube actor, spare (nothing loaded)", **_smaps(spare[0])})
    for pid in alive_actors("StorageHost").values():
        rows.append({"process": "storage actor (one shard)", **_smaps(pid)})
    print_table("Memory per process (PSS shares pages with the other Ray workers; USS is what it alone holds)", rows)
    return rows


def _size_mib(path: Path) -> float:
    """A folder's files, or a file with its siblings named after it (a SQLite file's WAL and shared memory)."""
    files = list(path.parent.glob(f"{path.name}*")) if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / MIB


def bench_registered(s: Stack, n: int, clients: int, requests: int, alpha: float) -> dict[str, Any]:
    """``n`` cubes created through HTTP, each given two memories; the catalog's size, paging, then a Zipf run."""
    ids = [f"r{i:05d}" for i in range(n)]
    texts = corpus(2 * n)

    def create(cube_id: str) -> None:
        check(s.http.post("/v1/cubes", json={"id": cube_id}), 201)

    def fill(i: int) -> None:
        body = {"items": [{"text": texts[2 * i]}, {"text": texts[2 * i + 1]}]}
        check(s.http.post(f"/v1/cubes/{ids[i]}/memories/batch", json=body), 201)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(create, ids))
    created_s = time.perf_counter() - start
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(fill, range(n)))
    filled_s = time.perf_counter() - start
    data = s.config.storage.data_dir
    catalog_mib, shards_mib = _size_mib(data / "catalog.sqlite"), _size_mib(data / "shards")
    pages: dict[str, float] = {}
    for offset in (0, n // 2, n - 100):
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            page = check(s.http.get("/v1/cubes", params={"offset": offset, "limit": 100}))
            times.append(time.perf_counter() - t0)
        assert page["total"] >= n and len(page["cubes"]) == 100
        pages[f"page_at_{offset}_p50_ms"] = pct(times, 50) * 1000
    row = {
        "cubes": n,
        "create_per_s": n / created_s,
        "two_memories_each_per_s": n / filled_s,
        "catalog_mib": catalog_mib,
        "shards_mib": shards_mib,
        **pages,
    }
    print_table(f"{n} cubes registered, two memories each", [row])
    row["zipf"] = bench_zipf(s, ids, requests, clients=4, alpha=alpha)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="cold,memory,zipf,registered")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--zipf-cubes", type=int, default=1_000)
    parser.add_argument("--zipf-requests", type=int, default=600)
    parser.add_argument("--alpha", type=float, default=1.1)
    parser.add_argument("--registered", type=int, default=10_000)
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    only = set(args.only.split(","))
    sizes = [int(x) for x in args.sizes.split(",")]
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with stack(port=args.port) as s:
        out["live_cap"] = s.config.directory.max_live_cubes
        out["warm_pool_s"] = settle(s)
        if "cold" in only or "memory" in only:
            out["cold"] = bench_cold(s, sizes, args.repeats)
            write_json("cubes", out)  # after each part: a long run keeps what it measured
        if "memory" in only:
            out["memory"] = bench_memory(s, sizes)
            write_json("cubes", out)
        if "zipf" in only:
            ids = [f"z{i:04d}" for i in range(args.zipf_cubes)]
            for cube_id in ids:
                check(s.http.post("/v1/cubes", json={"id": cube_id}), 201)
            out["zipf"] = bench_zipf(s, ids, args.zipf_requests, clients=4, alpha=args.alpha)
            write_json("cubes", out)
        if "registered" in only:
            out["registered"] = bench_registered(s, args.registered, 4, args.zipf_requests, args.alpha)
    print(f"\nwrote {write_json('cubes', out)}")
    plots.after("cubes", out)


if __name__ == "__main__":
    main()
