"""Foundation benchmarks: ingest throughput, search latency, cold activation, Zipf, LoCoMo.

    .venv/bin/python -m benchmarks.foundation              # all of them (~15 min on 2 cores)
    .venv/bin/python -m benchmarks.foundation --only locomo,search

Prints one table per benchmark and writes benchmarks/results/foundation.json.
Ratios are measured within one run (this machine is noisy): the targets are in the issue.
"""

from __future__ import annotations

import argparse
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import ray

from benchmarks import locomo, plots
from benchmarks.common import Stack, check, corpus, pct, print_table, questions, stack, summary_ms, write_json
from memos_ray.config import EmbedderConfig
from memos_ray.plaintext.embedding import SentenceEncoder
from memos_ray.plaintext.reader import context_of

BATCH = 64


def _create(s: Stack, cube_id: str) -> None:
    check(s.http.post("/v1/cubes", json={"id": cube_id}), 201)


def _ingest(s: Stack, cube_id: str, texts: list[str], clients: int = 2) -> float:
    """Batched adds through HTTP with ``clients`` concurrent senders; returns seconds."""
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]

    def send(batch: list[str]) -> None:
        check(s.http.post(f"/v1/cubes/{cube_id}/memories/batch", json={"items": [{"text": t} for t in batch]}), 201)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, batches))
    return time.perf_counter() - start


def bench_ingest(s: Stack, n: int) -> dict[str, Any]:
    texts = corpus(n)
    encoder = SentenceEncoder(EmbedderConfig())
    encoder.encode(texts[:BATCH])  # warm
    start = time.perf_counter()
    for i in range(0, n, BATCH):
        encoder.encode(texts[i : i + BATCH])
    bare = n / (time.perf_counter() - start)
    del encoder
    _create(s, "ingest")
    _ingest(s, "ingest", texts[:BATCH])  # warm the path (activation, first batch)
    api = n / _ingest(s, "ingest", texts)
    row = {
        "sentences": n,
        "bare_embedder_per_s": bare,
        "api_batched_add_per_s": api,
        "ratio": api / bare,
        "target": ">= 0.8",
    }
    print_table("Batched add throughput vs the bare embedder", [row])
    return row


def _search_latency(s: Stack, cube_id: str, qs: list[str], n: int) -> dict[str, Any]:
    for q in qs[:10]:
        check(s.http.post(f"/v1/cubes/{cube_id}/search", json={"query": q, "top_k": 10}))
    wall, server = [], []
    for q in qs[:n]:
        start = time.perf_counter()
        body = check(s.http.post(f"/v1/cubes/{cube_id}/search", json={"query": q, "top_k": 10}))
        wall.append(time.perf_counter() - start)
        server.append(body["took_ms"] / 1000)
    out = summary_ms(wall)
    out["server_p50_ms"] = summary_ms(server)["p50_ms"]
    return out


def bench_search(s: Stack, sizes: list[int], n_queries: int) -> list[dict[str, Any]]:
    qs = questions()
    random.Random(0).shuffle(qs)
    rows = []
    texts = corpus(max(sizes))
    for size in sizes:
        cube_id = f"search-{size}"
        _create(s, cube_id)
        _ingest(s, cube_id, texts[:size])
        lat = _search_latency(s, cube_id, qs, n_queries)
        target = "p50 <= 40, p95 <= 100" if size >= 10_000 else ""
        rows.append({"memories": size, **lat, "target_ms": target})
    print_table("Search latency through HTTP (sequential, top_k=10, hybrid)", rows)
    return rows


def _directory(s: Stack) -> Any:
    from actors.directory import DIRECTORY_NAME

    return ray.get_actor(DIRECTORY_NAME, namespace=s.config.namespace)


def bench_activation(s: Stack, sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    directory = _directory(s)
    rows = []
    for size in sizes:
        cube_id = f"search-{size}"
        times = []
        for _ in range(repeats):
            ray.get(directory.passivate.remote(cube_id))
            time.sleep(0.5)  # let the old process exit, as it would between real requests
            start = time.perf_counter()
            check(s.http.post(f"/v1/cubes/{cube_id}/search", json={"query": "what did she paint?", "top_k": 5}))
            times.append(time.perf_counter() - start)
        rows.append({"memories": size, "cold_p50_s": pct(times, 50), "cold_max_s": max(times), "target_s": "<= 2"})
    print_table("Cold activation of a passivated cube (first search after passivation)", rows)
    return rows


def bench_zipf(s: Stack, ids: list[str], requests: int, clients: int, alpha: float) -> dict[str, Any]:
    """Requests over existing cubes ``ids``, cube i drawn with weight (i+1)^-alpha; then warm-only requests
    over the cubes left live, in the same run."""
    cubes = len(ids)
    ranks = np.arange(1, cubes + 1, dtype=float)
    weights = ranks**-alpha
    rng = np.random.default_rng(0)
    picks = rng.choice(cubes, size=requests, p=weights / weights.sum())
    texts = corpus(2_000)
    qs = questions()
    directory = _directory(s)

    def one(i: int, cube_id: str) -> tuple[float, str]:
        start = time.perf_counter()
        if i % 4 == 0:  # a quarter writes, the rest read
            check(s.http.post(f"/v1/cubes/{cube_id}/memories", json={"text": texts[i % len(texts)]}), 201)
            op = "add"
        else:
            check(s.http.post(f"/v1/cubes/{cube_id}/search", json={"query": qs[i % len(qs)], "top_k": 5}))
            op = "search"
        return time.perf_counter() - start, op

    before = ray.get(directory.stats.remote())
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        mixed = list(pool.map(lambda i: one(i, ids[picks[i]]), range(requests)))
    elapsed = time.perf_counter() - start
    after = ray.get(directory.stats.remote())
    live = ray.get(directory.live_cubes.remote())
    with ThreadPoolExecutor(clients) as pool:
        warm = list(pool.map(lambda i: one(i, live[i % len(live)]), range(min(requests, 400))))
    all_t = [t for t, _ in mixed]
    warm_t = [t for t, _ in warm]
    row = {
        "cubes": cubes,
        "live_cap": s.config.directory.max_live_cubes,
        "requests": requests,
        "distinct_cubes": len(set(picks.tolist())),
        "activations": after.activations - before.activations,
        "zipf_p50_ms": pct(all_t, 50) * 1000,
        "zipf_p95_ms": pct(all_t, 95) * 1000,
        "zipf_p95_2nd_half_ms": pct(all_t[requests // 2 :], 95) * 1000,  # once the live set has filled
        "warm_p50_ms": pct(warm_t, 50) * 1000,
        "warm_p95_ms": pct(warm_t, 95) * 1000,
        "req_per_s": requests / elapsed,
        "activation_p50_ms": (after.activation_p50_s or 0.0) * 1000,  # in the Directory (its last 1,000)
    }
    print_table(f"Zipf (alpha={alpha}) over {cubes} cubes, {clients} clients, 1/4 adds", [row])
    return row


def bench_locomo(s: Stack) -> dict[str, Any]:
    convs = locomo.load()
    results = []
    for conv in convs:
        cube_id = f"locomo-{conv.sample_id}"
        _create(s, cube_id)
        for i in range(0, len(conv.messages), 100):
            body = {
                "messages": [m.model_dump(mode="json") for m in conv.messages[i : i + 100]],
                "conversation_id": conv.sample_id,
                "context": context_of(conv.messages[i - 1]) if i else None,
            }
            check(s.http.post(f"/v1/cubes/{cube_id}/messages", json=body), 201)

        def ask(q: locomo.Question, cube_id: str = cube_id) -> tuple[locomo.Question, list[str]]:
            body = check(s.http.post(f"/v1/cubes/{cube_id}/search", json={"query": q.text, "top_k": max(locomo.KS)}))
            return q, [h["memory"]["provenance"]["source_id"] for h in body["hits"]]

        with ThreadPoolExecutor(4) as pool:
            results += list(pool.map(ask, conv.questions))
    table = locomo.score(results)
    rows = [
        {
            "group": g,
            "n": int(v["n"]),
            **{k: v[k] for k in ("R@1", "R@5", "R@10", "R@20", "H@1", "H@5", "H@10", "H@20")},
        }
        for g, v in sorted(table.items(), key=lambda kv: (kv[0] != "overall", kv[0]))
    ]
    print_table("LoCoMo dev retrieval through the API (target R@10 >= 0.62; reference hybrid .591)", rows)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="ingest,search,activation,zipf,locomo")
    parser.add_argument("--ingest-n", type=int, default=2_048)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--zipf-cubes", type=int, default=1_000)
    parser.add_argument("--zipf-requests", type=int, default=600)
    parser.add_argument("--zipf-alpha", type=float, default=1.1)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    only = set(args.only.split(","))
    sizes = [int(x) for x in args.sizes.split(",")]
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with stack(port=args.port) as s:
        if "ingest" in only:
            out["ingest"] = bench_ingest(s, args.ingest_n)
        if "search" in only or "activation" in only:
            out["search"] = bench_search(s, sizes, args.queries)
        if "activation" in only:
            out["activation"] = bench_activation(s, sizes, repeats=5)
        if "locomo" in only:
            out["locomo"] = bench_locomo(s)
        if "zipf" in only:
            ids = [f"z{i:04d}" for i in range(args.zipf_cubes)]
            for cube_id in ids:
                _create(s, cube_id)
            out["zipf"] = bench_zipf(s, ids, args.zipf_requests, clients=4, alpha=args.zipf_alpha)
    print(f"\nwrote {write_json('foundation', out)}")
    plots.after("foundation", out)


if __name__ == "__main__":
    main()
