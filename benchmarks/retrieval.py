"""Retrieval that finds what was said, fast: LoCoMo recall through the HTTP API beside the same search in
process, what each signal adds per category, the weights chosen with each conversation left out, the
embedder's backends (throughput and recall), and search, ingest and cold activation through HTTP.

    .venv/bin/python -m benchmarks.retrieval            # ~12 min on 2 cores
    .venv/bin/python -m benchmarks.retrieval --no-http  # the in-process part only (~4 min)

Prints one table per part and writes benchmarks/results/retrieval.json. The in-process part runs first,
before Ray starts, so each backend has both cores as the Embedder would.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

from benchmarks import foundation, locomo, recall
from benchmarks.common import corpus, pct, print_table, settle, stack, write_json
from memos_ray.config import EmbedderConfig, SearchConfig
from memos_ray.plaintext.embedding import SentenceEncoder
from memos_ray.plaintext.text import index_text

BACKENDS = ("torch", "onnx", "onnx-int8")


def backends(batch: int = 64) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each backend: sentences/s over LoCoMo's turns in the Embedder's batches, and R@10 at the default
    settings with its own vectors and word table. Returns the rows and the default backend's cubes."""
    rows: list[dict[str, Any]] = []
    default: dict[str, Any] = {}
    texts = [index_text(m.content, m.speaker) for c in locomo.load() for m in c.messages]
    for backend in BACKENDS:
        encoder = SentenceEncoder(EmbedderConfig(backend=backend))
        encoder.encode(texts[:batch])  # warm
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            encoder.encode(texts[i : i + batch])
        rate = len(texts) / (time.perf_counter() - start)
        start = time.perf_counter()
        for t in texts[:200]:
            encoder.encode([t])
        one = (time.perf_counter() - start) / 200 * 1000
        words = encoder.word_neighbours()
        cubes = recall.cubes(encoder)
        table = recall.score(cubes, SearchConfig(), words)
        rows.append(
            {
                "backend": backend,
                "sentences_per_s": rate,
                "one_sentence_ms": one,
                "R@10": table["overall"]["R@10"],
                "multi-hop": table["multi-hop"]["R@10"],
                "open-domain": table["open-domain"]["R@10"],
            }
        )
        if backend == EmbedderConfig().backend:
            default = {"cubes": cubes, "words": words}
        del encoder
        gc.collect()
    base = rows[0]
    for row in rows:
        row["speed_vs_torch"] = row["sentences_per_s"] / base["sentences_per_s"]
        row["R@10_vs_torch"] = row["R@10"] - base["R@10"]
    print_table(f"Embedder backends: LoCoMo's {len(texts)} turns in batches of {batch}, 2 threads", rows)
    return rows, default


def in_process(cubes: list[recall.Cube], words: Any) -> dict[str, Any]:
    """What the peers were measured on: LoCoMo conversations in process, MiniLM, no LLM. Search p50/p95 with
    the query's embedding (the default backend) over the largest conversation's cube; ingest as memories/s
    through a real MemCube (milvus-lite rows, dedup, the index), embedding included, in batches of 64."""
    import tempfile
    from pathlib import Path

    from memos_ray.config import StorageConfig
    from memos_ray.plaintext.cube import MemCube
    from memos_ray.plaintext.index import HybridIndex
    from memos_ray.plaintext.reader import read_messages
    from memos_ray.types import CubeMeta, MessagesCreate, SearchQuery, utcnow

    encoder = SentenceEncoder(EmbedderConfig())
    cube = max(cubes, key=lambda c: len(c.items))
    index = HybridIndex(cube.vecs.shape[1], SearchConfig(), words=words)
    for item, vec in zip(cube.items, cube.vecs, strict=True):
        index.upsert(item, vec)
    times = []
    for q in cube.conv.questions:
        start = time.perf_counter()
        index.search(SearchQuery(query=q.text, top_k=10), encoder.encode([q.text])[0])
        times.append(time.perf_counter() - start)
    made = read_messages(MessagesCreate(messages=cube.conv.messages, conversation_id=cube.conv.sample_id))
    with tempfile.TemporaryDirectory() as data:
        now = utcnow()
        store = MemCube(
            CubeMeta(id="ingest", created_at=now, updated_at=now),
            StorageConfig(data_dir=Path(data)),
            SearchConfig(),
            cube.vecs.shape[1],
            words=words,
        )
        start = time.perf_counter()
        for i in range(0, len(made), 64):
            batch = made[i : i + 64]
            store.add(batch, encoder.encode([index_text(m.text, m.source.speaker) for m in batch]), "bench")
        rate = len(made) / (time.perf_counter() - start)
    row = {
        "memories": len(cube.items),
        "search_p50_ms": pct(times, 50) * 1000,
        "search_p95_ms": pct(times, 95) * 1000,
        "ingest_per_s": rate,
        "peers": "mem0 (faiss), MemOS general_text: search 8 ms p50; batch add 43-106/s (the issue's figures)",
    }
    print_table(f"In process, {cube.conv.sample_id}: search with the query's embedding, ingest into a MemCube", [row])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest-n", type=int, default=2_048)
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out["backends"], default = backends()
    cubes, words = default["cubes"], default["words"]
    out["signals"] = recall.signals(cubes, words)
    print_table("LoCoMo dev R@10 in process: what each signal adds, per category", out["signals"])
    out["in_process"] = in_process(cubes, words)
    loo = recall.leave_one_out(cubes, words)
    out["leave_one_out"] = loo
    print_table(
        f"Leave one conversation out: the best of {loo['settings_tried']} settings on the other five", loo["folds"]
    )
    print_table(
        "Pooled over the six held-out conversations, beside the default on the whole split",
        [
            loo["pooled"],
            next(r for r in out["signals"] if r["settings"] == "default (all)"),
        ],
    )
    if not args.no_http:
        sizes = [int(x) for x in args.sizes.split(",")]
        with stack(port=args.port) as s:
            out["settled_s"] = settle(s)  # the model worker's calibration and the spare cube actors: not measured
            foundation._create(s, "warm")
            foundation._ingest(
                s, "warm", corpus(4 * foundation.BATCH)
            )  # the embedder's and the write path's first calls
            out["ingest"] = foundation.bench_ingest(s, args.ingest_n)
            out["search"] = foundation.bench_search(s, sizes, args.queries)
            out["activation"] = foundation.bench_activation(s, sizes, repeats=5)
            out["locomo"] = foundation.bench_locomo(s)
        small, large = out["search"][0], out["search"][-1]
        api = out["locomo"]
        targets = [
            {"figure": "LoCoMo R@10 through the API", "value": api["overall"]["R@10"], "target": ">= .75"},
            {"figure": "  multi-hop", "value": api["multi-hop"]["R@10"], "target": ">= .50"},
            {"figure": "  open-domain", "value": api["open-domain"]["R@10"], "target": ">= .40"},
            {"figure": "  leave one conversation out", "value": loo["pooled"]["R@10"], "target": "(beside)"},
            {
                "figure": f"server-side search p50, {small['memories']} memories (ms)",
                "value": small["server_p50_ms"],
                "target": "<= 10",
            },
            {
                "figure": f"HTTP search p50, {large['memories']} memories (ms)",
                "value": large["p50_ms"],
                "target": "<= 20",
            },
            {
                "figure": f"HTTP search p95, {large['memories']} memories (ms)",
                "value": large["p95_ms"],
                "target": "<= 40",
            },
            {
                "figure": "batched ingest through HTTP (memories/s)",
                "value": out["ingest"]["api_batched_add_per_s"],
                "target": ">= 160",
            },
        ]
        out["targets"] = targets
        print_table("Against the targets (one run)", targets)
    print(f"\nwrote {write_json('retrieval', out)}")


if __name__ == "__main__":
    main()
