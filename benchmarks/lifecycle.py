"""MemLifecycle on LoCoMo dev and at 10k memories: what a sample policy merges and archives, what it does
to retrieval, what a sweep costs, and how long a purge takes until its last trace is gone.

    .venv/bin/python -m benchmarks.lifecycle          # ~8 min on 2 cores; writes results/lifecycle.json

Runs the cube itself (``MemCube`` on milvus-lite, the real MiniLM encoder), without Ray: the policy and the
store are what is measured; the MemScheduler only decides when to call them.

- *merge*: near-duplicates (same kind and speaker, cosine >= 0.95) merged into the oldest. Retrieval is
  scored on what a user sees: a hit on a merged memory stands for the ones merged into it (their dia ids).
- *archive*: 30 days unused, and saying little (salience below 2.5: greetings, thanks, small talk). The first
  half of each conversation's questions is asked during the month (the memories they retrieve are used); the
  sweep runs 31 days on; the second half is scored with archived memories out of search, against the same
  questions with the policy off, and under other bars (none: every unused memory archived; 1.5, 3.5, 4.5).
- *dedup on ingest*: the same conversations written to a cube whose policy refuses near-copies.
- *sweep per 10k*: a cube of 10,000 LoCoMo-derived memories, every rule on: the first full sweep (every
  memory compared), then a sweep after 100 new writes (only they are compared).
- *purge*: one memory of the 10k cube and of a LoCoMo cube, timed from the call to its return, when no file
  of the cube holds its text any more (checked, decoding parquet and Arrow files).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import locomo
from benchmarks.common import corpus, print_table, write_json
from memos_ray.config import MemosConfig, SearchConfig, StorageConfig
from memos_ray.plaintext.cube import MemCube
from memos_ray.plaintext.embedding import SentenceEncoder
from memos_ray.plaintext.reader import context_of, read_messages
from memos_ray.plaintext.text import index_text
from memos_ray.types import (
    CubeMeta,
    LifecyclePolicy,
    LifecycleState,
    LifecycleSweep,
    MemoryCreate,
    MemoryKind,
    MessagesCreate,
    SearchFilter,
    SearchQuery,
    utcnow,
)
from tests.helpers import traces

DAY = 86_400.0
MERGE = 0.95
ARCHIVE_S = 30 * DAY
SALIENCE = 2.5  # the sample bar: greetings, thanks, small talk (chosen on this split: every bar tried is printed)
OTHER_BARS: tuple[float | None, ...] = (None, 1.5, 3.5, 4.5)  # None: every unused memory (no bar)


def open_cube(root: Path, cube_id: str, policy: LifecyclePolicy | None = None) -> MemCube:
    now = utcnow()
    meta = CubeMeta(id=cube_id, created_at=now, updated_at=now, lifecycle=policy)
    return MemCube(meta, StorageConfig(data_dir=root), SearchConfig(), 384)


def memories_of(conv: locomo.Conversation) -> list[MemoryCreate]:
    """As the API ingests a conversation: the MemReader over batches of 100 messages, context carried over."""
    out: list[MemoryCreate] = []
    for i in range(0, len(conv.messages), 100):
        req = MessagesCreate(
            messages=conv.messages[i : i + 100],
            conversation_id=conv.sample_id,
            context=context_of(conv.messages[i - 1]) if i else None,
        )
        out += read_messages(req)
    return out


def embed(encoder: SentenceEncoder, items: list[MemoryCreate]) -> np.ndarray:
    return encoder.encode([index_text(m.text, m.source.speaker) for m in items])


def ranked_dias(
    cube: MemCube, encoder: SentenceEncoder, query: str, states: list[LifecycleState] | None = None, k: int = 20
) -> list[set[str]]:
    """What a user sees for a query, hit by hit: each hit's dia id, and those of the memories merged into it."""
    q = SearchQuery(query=query, top_k=k, filter=SearchFilter(states=states))
    out: list[set[str]] = []
    for hit in cube.search(q, encoder.encode([query])[0]):
        merged = (cube.get(r.memory_id).provenance.source_id for r in hit.memory.merged_from)
        out.append({d for d in (hit.memory.provenance.source_id, *merged) if d})
    return out


def score(results: list[tuple[locomo.Question, list[set[str]]]]) -> dict[str, float]:
    """R@k over the top k hits (a merged hit carries the dia ids it stands for), overall."""
    n = len(results)
    out: dict[str, float] = {"n": n}
    for k in locomo.KS:
        found = [len(q.evidence & set().union(*hits[:k])) / len(q.evidence) for q, hits in results]
        out[f"R@{k}"] = round(sum(found) / n, 4)
    return out


def _bar_name(bar: float | None) -> str:
    return "every unused memory" if bar is None else f"unused, salience < {bar:g}"


def bench_locomo(root: Path, encoder: SentenceEncoder) -> dict[str, Any]:
    rows = []
    totals: dict[str, float] = {"memories": 0, "merged": 0, "archived": 0, "dedup_refused": 0, "merged_at_0.90": 0}
    scored: dict[str, list[tuple[locomo.Question, list[set[str]]]]] = {
        "off": [],
        "merge": [],
        "merge_0.90": [],
        "off_2nd": [],
        "archive_2nd": [],
        "archive_2nd_with_archived": [],
    }
    others: dict[str, dict[str, Any]] = {_bar_name(b): {"archived": 0, "scored": []} for b in OTHER_BARS}
    for conv in locomo.load():
        items = memories_of(conv)
        vecs = embed(encoder, items)
        cube = open_cube(root, f"lc-{conv.sample_id}")
        cube.add(items, vecs, "bench")
        half = len(conv.questions) // 2
        first, second = conv.questions[:half], conv.questions[half:]
        scored["off"] += [(q, ranked_dias(cube, encoder, q.text)) for q in conv.questions]
        scored["off_2nd"] += [(q, ranked_dias(cube, encoder, q.text)) for q in second]

        cube.meta = cube.meta.model_copy(update={"lifecycle": LifecyclePolicy(merge_threshold=MERGE)})
        now = time.time()
        merged = cube.sweep_lifecycle({}, now, 0, "pinned", "bench")
        scored["merge"] += [(q, ranked_dias(cube, encoder, q.text)) for q in conv.questions]

        archived = _month(cube, encoder, first, now, merged.merge_seq, SALIENCE)
        scored["archive_2nd"] += [(q, ranked_dias(cube, encoder, q.text)) for q in second]
        both = [LifecycleState.active, LifecycleState.archived]
        scored["archive_2nd_with_archived"] += [(q, ranked_dias(cube, encoder, q.text, states=both)) for q in second]
        active = sum(1 for m in cube.latest.values() if m.state == LifecycleState.active)
        cube.close()

        for i, bar in enumerate(OTHER_BARS):  # the same month under other salience bars, each on a fresh cube
            other = open_cube(root, f"bar{i}-{conv.sample_id}", LifecyclePolicy(merge_threshold=MERGE))
            other.add(items, vecs, "bench")
            seq = other.sweep_lifecycle({}, now, 0, "pinned", "bench").merge_seq
            entry = others[_bar_name(bar)]
            entry["archived"] += len(_month(other, encoder, first, now, seq, bar).archived)
            entry["scored"] += [(q, ranked_dias(other, encoder, q.text)) for q in second]
            other.close()

        dedup = open_cube(root, f"dd-{conv.sample_id}", LifecyclePolicy(dedup_threshold=MERGE))
        refused = len(dedup.add(items, vecs, "bench").duplicates)
        dedup.close()
        looser = open_cube(root, f"m90-{conv.sample_id}", LifecyclePolicy(merge_threshold=0.90))
        looser.add(items, vecs, "bench")
        merged_90 = looser.sweep_lifecycle({}, now, 0, "pinned", "bench")
        scored["merge_0.90"] += [(q, ranked_dias(looser, encoder, q.text)) for q in conv.questions]
        looser.close()
        row: dict[str, Any] = {
            "conversation": conv.sample_id,
            "memories": len(items),
            "merged": len(merged.merged),
            "archived": len(archived.archived),
            "active_after": active,
            "dedup_refused": refused,
            "merged_at_0.90": len(merged_90.merged),
        }
        rows.append(row)
        for key in totals:
            totals[key] += row[key]
    scores = {name: score(r) for name, r in scored.items()}
    print_table(
        f"LoCoMo dev under a sample lifecycle policy (merge >= 0.95; archive after 30 days unused, salience < "
        f"{SALIENCE:g})",
        rows,
    )
    second_half = [
        {"questions": "2nd half", "policy": "off", **_rk(scores["off_2nd"])},
        {"questions": "2nd half", "policy": f"merge + archive ({_bar_name(SALIENCE)})", **_rk(scores["archive_2nd"])},
        {"questions": "2nd half", "policy": "... searching archived too", **_rk(scores["archive_2nd_with_archived"])},
    ]
    print_table(
        "Retrieval (R@k; a merged hit counts the dia ids of what it stands for)",
        [
            {"questions": "all", "policy": "off", **_rk(scores["off"])},
            {"questions": "all", "policy": "merge", **_rk(scores["merge"])},
            {"questions": "all", "policy": "merge at 0.90", **_rk(scores["merge_0.90"])},
            *second_half,
        ],
    )
    bars = [{"archive rule": "off", "archived": 0, **_rk(scores["off_2nd"])}]
    bars.append({"archive rule": _bar_name(SALIENCE), "archived": totals["archived"], **_rk(scores["archive_2nd"])})
    for name, entry in others.items():
        bars.append({"archive rule": name, "archived": entry["archived"], **_rk(score(entry["scored"]))})
    bars.sort(key=lambda r: r["archived"])
    print_table("The archive rule's salience bar against recall (2nd-half questions, merge >= 0.95 on)", bars)
    return {"per_conversation": rows, "totals": totals, "recall": scores, "salience_bars": bars}


def _month(
    cube: MemCube, encoder: SentenceEncoder, asked: list[locomo.Question], now: float, seq: int, bar: float | None
) -> LifecycleSweep:
    """A month of use (``asked`` are the questions; what they retrieve is used), then the archive sweep 31 days
    on under merge + archive with salience ``bar``."""
    used: dict[str, float] = {}
    for q in asked:
        hits = cube.search(SearchQuery(query=q.text, top_k=10), encoder.encode([q.text])[0])
        used.update({h.memory.id: now + 29 * DAY for h in hits})
    policy = LifecyclePolicy(merge_threshold=MERGE, archive_after_s=ARCHIVE_S, archive_below_salience=bar)
    cube.meta = cube.meta.model_copy(update={"lifecycle": policy})
    return cube.sweep_lifecycle(used, now + 31 * DAY, seq, "pinned", "bench")


def _rk(table: dict[str, float]) -> dict[str, Any]:
    return {"n": int(table["n"]), **{k: table[k] for k in ("R@1", "R@5", "R@10", "R@20")}}


def bench_scale(root: Path, encoder: SentenceEncoder, n: int) -> dict[str, Any]:
    texts = corpus(n + 100)  # LoCoMo turns paired: past 3,435 lines their halves repeat, so many merge
    # every 20th line repeats the one before it with a trailing mark: duplicates for the merge to find
    items = [MemoryCreate(text=texts[i - 1] + " !" if i % 20 == 19 else texts[i]) for i in range(n)]
    vecs = embed(encoder, items)
    cube = open_cube(
        root,
        "scale",
        LifecyclePolicy(
            ttl_s={MemoryKind.event: 7 * DAY},
            archive_after_s=ARCHIVE_S,
            archive_below_salience=SALIENCE,
            merge_threshold=MERGE,
        ),
    )
    for i in range(0, n, 2_000):
        cube.add(items[i : i + 2_000], vecs[i : i + 2_000], "bench")
    now = time.time()
    full = cube.sweep_lifecycle({}, now, 0, "pinned", "bench")
    fresh = [MemoryCreate(text=t) for t in texts[n : n + 100]]
    cube.add(fresh, embed(encoder, fresh), "bench")
    start = time.perf_counter()
    incremental = cube.sweep_lifecycle({}, now, full.merge_seq, "pinned", "bench")
    incremental_ms = (time.perf_counter() - start) * 1000
    idle = cube.sweep_lifecycle({}, now, incremental.merge_seq, "pinned", "bench")
    month = cube.sweep_lifecycle({}, now + 31 * DAY, idle.merge_seq, "pinned", "bench")  # every salience read
    purge = _purge(root / "cubes" / "scale", cube, "scale")
    cube.close()
    rows = [
        {
            "sweep": "first (all compared)",
            "memories": n,
            "compared": full.checked,
            "merged": len(full.merged),
            "archived": len(full.archived),
            "ms": full.took_ms,
        },
        {
            "sweep": "after 100 writes",
            "memories": n + 100,
            "compared": incremental.checked,
            "merged": len(incremental.merged),
            "archived": len(incremental.archived),
            "ms": round(incremental_ms, 2),
        },
        {
            "sweep": "nothing new",
            "memories": n + 100,
            "compared": idle.checked,
            "merged": len(idle.merged),
            "archived": len(idle.archived),
            "ms": idle.took_ms,
        },
        {
            "sweep": "31 days on (archive: each unused memory's salience)",
            "memories": n + 100,
            "compared": month.checked,
            "merged": len(month.merged),
            "archived": len(month.archived),
            "ms": month.took_ms,
        },
    ]
    print_table(f"A lifecycle sweep of a {n:,}-memory cube (ttl + archive + merge on)", rows)
    return {"sweeps": rows, "purge": purge}


def _purge(folder: Path, cube: MemCube, label: str) -> dict[str, Any]:
    """Purge a memory carrying a unique token; timed until the call returns, when no file holds the token."""
    token = f"purgetoken{int(time.time())}"
    item = MemoryCreate(text=f"The storage locker code is {token}.")
    (written,) = cube.add([item], np.random.default_rng(0).standard_normal((1, 384)).astype(np.float32), "bench").items
    cube.store.flush()
    before = traces(folder, token)
    start = time.perf_counter()
    cube.purge(written.id)
    took = time.perf_counter() - start
    after = traces(folder, token)
    row = {
        "cube": label,
        "memories": len(cube.latest),
        "purge_ms": round(took * 1000, 1),
        "files_before": len(before),
        "files_after": len(after),
    }
    print_table("Purge: the call returns when no file of the cube holds the text", [row])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--only", default="locomo,scale")
    args = parser.parse_args()
    only = set(args.only.split(","))
    encoder = SentenceEncoder(MemosConfig().embedder)
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix="memos-lifecycle-") as tmp:
        root = Path(tmp)
        if "locomo" in only:
            out["locomo"] = bench_locomo(root, encoder)
            lc = open_cube(root, f"lc-{locomo.load()[0].sample_id}")
            out["purge_locomo"] = _purge(root / "cubes" / lc.meta.id, lc, "locomo conv-26")
            lc.close()
        if "scale" in only:
            out["scale"] = bench_scale(root, encoder, args.n)
    print(f"\nwrote {write_json('lifecycle', out)}")


if __name__ == "__main__":
    main()
