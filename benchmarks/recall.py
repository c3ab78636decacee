"""LoCoMo recall in process, on the product's own index: what each search signal adds, per category, and the
signals' weights chosen with each conversation left out in turn (6 folds: the development split's 6).

The cubes are built as the API builds them: :func:`read_messages` makes the memories (each turn's context,
its speaker, its session's time, its conversation), ids come from :func:`new_memory_id` in the order the
turns were said, and every turn and question is embedded once by the encoder under test. So a figure
here equals the API's at the same settings (``benchmarks/retrieval.py`` prints both).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks import locomo
from memos_ray.config import SearchConfig
from memos_ray.plaintext.embedding import SentenceEncoder
from memos_ray.plaintext.index import HybridIndex
from memos_ray.plaintext.reader import read_messages
from memos_ray.plaintext.text import index_text
from memos_ray.plaintext.words import WordNeighbours
from memos_ray.types import MemoryItem, MessagesCreate, Provenance, SearchQuery, new_memory_id, utcnow

BASELINE = SearchConfig(dense_weight=0.5, expansion_weight=0, speaker_weight=0, neighbour_weight=0)  # wave 1
GRID = {
    "dense_weight": (0.3, 0.5),
    "expansion_weight": (0.3, 0.5),
    "expansion_terms": (3, 5),
    "speaker_weight": (0.5, 1.0),
    "neighbour_weight": (0.5, 0.8),
    "neighbour_window": (2, 3),
}


@dataclass
class Cube:
    conv: locomo.Conversation
    items: list[MemoryItem]
    vecs: np.ndarray
    qvecs: np.ndarray


def cubes(encoder: SentenceEncoder) -> list[Cube]:
    """Every development conversation as a cube's memories, with the encoder's vectors."""
    now = utcnow()
    out = []
    for conv in locomo.load():
        made = read_messages(MessagesCreate(messages=conv.messages, conversation_id=conv.sample_id))
        items = [
            MemoryItem(
                id=new_memory_id(),
                cube_id=conv.sample_id,
                version=1,
                text=m.text,
                context=m.context,
                provenance=Provenance(**m.source.model_dump()),
                said_at=m.said_at,
                created_at=now,
                updated_at=now,
            )
            for m in made
        ]
        vecs = encoder.encode([index_text(i.text, i.provenance.speaker) for i in items])
        out.append(Cube(conv, items, vecs, encoder.encode([q.text for q in conv.questions])))
    return out


def ranked(cube: Cube, config: SearchConfig, words: WordNeighbours | None) -> list[tuple[locomo.Question, list[str]]]:
    """Each question's top 20, as the dia ids of the turns found."""
    index = HybridIndex(cube.vecs.shape[1], config, words=words)
    for item, vec in zip(cube.items, cube.vecs, strict=True):
        index.upsert(item, vec)
    dia = {i.id: i.provenance.source_id or "" for i in cube.items}
    return [
        (q, [dia[s.memory_id] for s in index.search(SearchQuery(query=q.text, top_k=max(locomo.KS)), v)])
        for q, v in zip(cube.conv.questions, cube.qvecs, strict=True)
    ]


def score(all_cubes: list[Cube], config: SearchConfig, words: WordNeighbours | None) -> dict[str, dict[str, float]]:
    return locomo.score([r for cube in all_cubes for r in ranked(cube, config, words)])


def _row(label: str, table: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {
        "settings": label,
        "R@10": table["overall"]["R@10"],
        **{g: table[g]["R@10"] for g in ("single-hop", "multi-hop", "temporal", "open-domain")},
        "R@5": table["overall"]["R@5"],
        "R@20": table["overall"]["R@20"],
    }


def signals(all_cubes: list[Cube], words: WordNeighbours) -> list[dict[str, Any]]:
    """R@10 per category: wave 1's search, each signal added to it alone, the default, and the default less
    each signal."""
    default = SearchConfig()
    off = {
        "expansion": {"expansion_weight": 0.0},
        "speaker": {"speaker_weight": 0.0},
        "neighbours": {"neighbour_weight": 0.0},
    }
    rows = [_row("wave 1 (dense .5, BM25 1, contexts)", score(all_cubes, BASELINE, words))]
    rows.append(_row("+ dense .3", score(all_cubes, BASELINE.model_copy(update={"dense_weight": 0.3}), words)))
    for name, zero in off.items():
        on = {k: getattr(default, k) for k in zero}
        rows.append(_row(f"+ {name} alone", score(all_cubes, BASELINE.model_copy(update=on), words)))
    rows.append(_row("default (all)", score(all_cubes, default, words)))
    for name, zero in off.items():
        rows.append(_row(f"default - {name}", score(all_cubes, default.model_copy(update=zero), words)))
    return rows


def leave_one_out(all_cubes: list[Cube], words: WordNeighbours) -> dict[str, Any]:
    """For each conversation: the grid's best settings on the other five, scored on it; pooled over folds."""
    keys = list(GRID)
    settings = [dict(zip(keys, values, strict=True)) for values in itertools.product(*GRID.values())]
    start = time.perf_counter()
    # per setting, per conversation: each question's (category, recall@10, evidence found in top 10)
    per: list[list[list[tuple[locomo.Question, list[str]]]]] = [
        [ranked(cube, SearchConfig(**s), words) for cube in all_cubes] for s in settings
    ]

    def r10(results: list[tuple[locomo.Question, list[str]]]) -> float:
        return sum(len(q.evidence & set(ids[:10])) / len(q.evidence) for q, ids in results)

    folds, pooled = [], []
    for k, cube in enumerate(all_cubes):
        others = [j for j in range(len(all_cubes)) if j != k]
        best = max(range(len(settings)), key=lambda s: sum(r10(per[s][j]) for j in others))
        pooled += per[best][k]
        folds.append({"held_out": cube.conv.sample_id, **settings[best], "R@10": r10(per[best][k]) / len(per[best][k])})
    table = locomo.score(pooled)
    return {
        "folds": folds,
        "pooled": _row("leave one conversation out", table),
        "settings_tried": len(settings),
        "seconds": time.perf_counter() - start,
    }
