"""The in-memory hybrid index, on hand-made vectors (no model needed to judge ranking)."""

from datetime import UTC, datetime, timedelta

import numpy as np

from memos_ray.config import SearchConfig
from memos_ray.plaintext.index import HybridIndex, TermRows
from memos_ray.types import (
    LifecycleState,
    MemoryItem,
    MemoryKind,
    Provenance,
    SearchFilter,
    SearchQuery,
    TimePreference,
)

DIM = 8
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def item(mid: str, text: str, **kw: object) -> MemoryItem:
    base = dict(id=mid, cube_id="c", version=1, text=text, created_at=T0, updated_at=T0)
    base.update(kw)
    return MemoryItem.model_validate(base)


def onehot(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    return v


def build() -> HybridIndex:
    idx = HybridIndex(DIM, SearchConfig(), capacity=2)  # tiny capacity: exercises growth
    idx.upsert(item("a", "apples grow on trees", tags=["fruit"], said_at=T0), onehot(0))
    idx.upsert(item("b", "bananas are yellow", tags=["fruit", "yellow"], said_at=T0 + timedelta(days=10)), onehot(1))
    idx.upsert(
        item("c", "the sun is yellow", tags=["sky"], kind=MemoryKind.event, said_at=T0 + timedelta(days=100)), onehot(2)
    )
    idx.upsert(item("d", "Bob said hello", provenance=Provenance(speaker="Bob")), onehot(3))
    return idx


def ids(hits) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.memory_id for h in hits]


def test_dense_ranks_nearest_first() -> None:
    idx = build()
    hits = idx.search(SearchQuery(query="zzz", mode="dense", top_k=2), onehot(1) + 0.1 * onehot(2))
    assert ids(hits) == ["b", "c"]
    assert hits[0].dense is not None and hits[0].dense > hits[1].dense  # type: ignore[operator]


def test_bm25_needs_the_words() -> None:
    idx = build()
    hits = idx.search(SearchQuery(query="yellow bananas", mode="bm25"), None)
    assert ids(hits) == ["b", "c"]
    assert idx.search(SearchQuery(query="nothing matches", mode="bm25"), None) == []


def test_hybrid_fuses_both_signals() -> None:
    idx = build()
    # dense points at "a", words point at "b": both appear, and "b" (in both lists' tops) wins over "c"
    hits = idx.search(SearchQuery(query="bananas", top_k=4), onehot(0) + 0.5 * onehot(1))
    assert ids(hits)[:2] == ["b", "a"] or ids(hits)[:2] == ["a", "b"]
    assert "b" in ids(hits)[:2]


def test_filters() -> None:
    idx = build()
    q = lambda **f: ids(idx.search(SearchQuery(query="yellow", top_k=10, filter=SearchFilter(**f)), onehot(2)))  # noqa: E731
    assert set(q(tags_any=["fruit"])) == {"a", "b"}
    assert q(tags_all=["fruit", "yellow"]) == ["b"]
    assert q(kinds=[MemoryKind.event]) == ["c"]
    assert set(q(said_after=T0 + timedelta(days=5))) == {"b", "c"}
    assert q(said_after=T0 + timedelta(days=5), said_before=T0 + timedelta(days=50)) == ["b"]
    assert q(speakers=["bob"]) == ["d"]


def test_states_and_updates() -> None:
    idx = build()
    deleted = item("b", "bananas are yellow", version=2, state=LifecycleState.deleted, tags=["fruit", "yellow"])
    idx.upsert(deleted, onehot(1))  # a delete is a new version in state deleted
    assert "b" not in ids(idx.search(SearchQuery(query="bananas", mode="bm25"), None))
    only_deleted = SearchFilter(states=[LifecycleState.deleted])
    assert ids(idx.search(SearchQuery(query="bananas", mode="bm25", filter=only_deleted), None)) == ["b"]
    # a new version replaces the old words
    idx.upsert(item("a", "cherries are red", version=2), onehot(0))
    assert ids(idx.search(SearchQuery(query="apples", mode="bm25"), None)) == []
    assert ids(idx.search(SearchQuery(query="cherries", mode="bm25"), None)) == ["a"]
    idx.remove("a")
    assert len(idx) == 3
    assert ids(idx.search(SearchQuery(query="cherries", mode="bm25"), None)) == []
    idx.upsert(item("e", "cherries again"), onehot(4))  # reuses the freed slot
    assert ids(idx.search(SearchQuery(query="cherries", mode="bm25"), None)) == ["e"]


def test_time_preference_favours_memories_said_near_the_anchor() -> None:
    idx = build()
    q = SearchQuery(
        query="yellow",
        mode="bm25",
        prefer_time=TimePreference(anchor=T0 + timedelta(days=100), half_life_days=5, weight=0.9),
    )
    assert ids(idx.search(q, None))[0] == "c"
    q2 = q.model_copy(update={"prefer_time": TimePreference(anchor=T0, half_life_days=5, weight=0.9)})
    assert ids(idx.search(q2, None))[0] == "b"


def test_a_bulk_load_from_cached_term_rows_indexes_what_upserts_do() -> None:
    """A checkpoint's terms (compressed rows, in its own order, some missing) load into the index that
    upserting the same memories one by one builds, and that index still updates correctly."""
    built = build()
    items = [
        item("a", "apples grow on trees", tags=["fruit"], said_at=T0),
        item("b", "bananas are yellow", tags=["fruit", "yellow"], said_at=T0 + timedelta(days=10)),
        item("c", "the sun is yellow", tags=["sky"], kind=MemoryKind.event, said_at=T0 + timedelta(days=100)),
        item("d", "Bob said hello", provenance=Provenance(speaker="Bob")),
    ]
    saved_order = ["d", "b", "a", "c"]  # a checkpoint's rows need not follow the index's slots
    terms = built.indexed_terms()
    cached = TermRows.of([terms[m] for m in saved_order])
    assert [cached.row(r) for r in range(len(cached))] == [terms[m] for m in saved_order]
    rows = np.array([saved_order.index(i.id) if i.id != "c" else -1 for i in items])  # c changed: tokenized again
    loaded = HybridIndex(DIM, SearchConfig())
    loaded.load(items, np.stack([onehot(k) for k in range(4)]), cached.take(rows), lambda _: [])
    for query in ("yellow", "bob hello", "apples trees"):  # terms not yet made dicts, then made on first use
        want = built.search(SearchQuery(query=query, mode="bm25"), None)
        got = loaded.search(SearchQuery(query=query, mode="bm25"), None)
        assert [(h.memory_id, round(h.score, 9)) for h in got] == [(h.memory_id, round(h.score, 9)) for h in want]
    for index in (built, loaded):  # a loaded memory's old words go, those still in arrays too ("bananas")
        index.upsert(item("b", "cherries are red", version=2), onehot(1))
    assert ids(loaded.search(SearchQuery(query="bananas", mode="bm25"), None)) == []
    assert ids(loaded.search(SearchQuery(query="cherries", mode="bm25"), None)) == ["b"]
    assert {t: loaded._posting(t) for t in built._postings} == built._postings
    assert loaded.indexed_terms() == built.indexed_terms()
    assert loaded._total_len == built._total_len
