"""What search adds to its two ranked lists: query expansion from the cube's own vocabulary, the speaker a
query names, and the conversation around a memory. Hand-made vectors (all equal, so the dense list ties
and the signal under test decides), and the real sentence model's word table."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from memos_ray.config import SearchConfig
from memos_ray.plaintext.embedding import SentenceEncoder
from memos_ray.plaintext.index import HybridIndex
from memos_ray.plaintext.words import NEIGHBOURS, WordNeighbours, cached_word_neighbours
from memos_ray.types import LifecycleState, MemoryItem, Provenance, SearchFilter, SearchQuery

DIM = 4
T0 = datetime(2024, 5, 8, 13, 56, tzinfo=UTC)
SAME = np.ones(DIM, dtype=np.float32)


def item(mid: str, text: str, speaker: str | None = None, conv: str | None = None, **kw: object) -> MemoryItem:
    base: dict[str, object] = dict(id=mid, cube_id="c", version=1, text=text, created_at=T0, updated_at=T0)
    base["provenance"] = Provenance(speaker=speaker, conversation_id=conv)
    base.update(kw)
    return MemoryItem.model_validate(base)


def table(pairs: dict[str, list[tuple[str, float]]]) -> WordNeighbours:
    stems = sorted({w for k, v in pairs.items() for w in [k, *(n for n, _ in v)]})
    at = {s: i for i, s in enumerate(stems)}
    neighbours = np.full((len(stems), NEIGHBOURS), -1, dtype=np.int32)
    similarity = np.zeros((len(stems), NEIGHBOURS), dtype=np.float32)
    for word, near in pairs.items():
        for k, (n, sim) in enumerate(near):
            neighbours[at[word], k], similarity[at[word], k] = at[n], sim
    return WordNeighbours(np.array(stems), neighbours, similarity)


def ids(idx: HybridIndex, query: str, **kw: object) -> list[str]:
    return [s.memory_id for s in idx.search(SearchQuery(query=query, top_k=10, **kw), SAME)]  # type: ignore[arg-type]


ALONE = SearchConfig(speaker_weight=0, neighbour_weight=0)


def test_a_query_word_brings_in_its_close_words_that_the_cube_holds() -> None:
    words = table({"children": [("kid", 0.88), ("youth", 0.62), ("toy", 0.40)]})
    idx = HybridIndex(DIM, ALONE, words=words)
    idx.upsert(item("a", "They're tough kids."), SAME)
    idx.upsert(item("b", "We bought a toy."), SAME)
    idx.upsert(item("c", "The weather was grey."), SAME)
    assert ids(idx, "How many children?", mode="bm25") == ["a"]  # "toy" is under the similarity bar
    terms = idx.query_terms("How many children?")
    assert terms == {"many": 1.0, "children": 1.0, "kid": pytest.approx(ALONE.expansion_weight * 0.88)}  # no "youth"
    plain = HybridIndex(DIM, ALONE)  # no table: no expansion
    plain.upsert(item("a", "They're tough kids."), SAME)
    assert ids(plain, "How many children?", mode="bm25") == []
    off = HybridIndex(DIM, ALONE.model_copy(update={"expansion_weight": 0.0}), words=words)
    off.upsert(item("a", "They're tough kids."), SAME)
    assert ids(off, "How many children?", mode="bm25") == []


def test_a_named_speaker_is_preferred_unless_the_query_names_two() -> None:
    idx = HybridIndex(DIM, SearchConfig(neighbour_weight=0))
    idx.upsert(item("m", "I love painting sunsets.", speaker="Melanie"), SAME)
    idx.upsert(item("c", "I love painting sunsets.", speaker="Caroline"), SAME)
    assert ids(idx, "What does Caroline love painting?")[0] == "c"
    assert ids(idx, "What does Melanie love painting?")[0] == "m"
    both = ids(idx, "What do Caroline and Melanie love painting?")
    alone = HybridIndex(DIM, ALONE)
    alone.upsert(item("m", "I love painting sunsets.", speaker="Melanie"), SAME)
    alone.upsert(item("c", "I love painting sunsets.", speaker="Caroline"), SAME)
    assert both == ids(alone, "What do Caroline and Melanie love painting?")


def conversation(idx: HybridIndex, order: list[int]) -> None:
    turns = [
        ("Melanie", "We went on a roadtrip this weekend."),
        ("Melanie", "My son got into an accident on the way."),
        ("Caroline", "Oh no, is everyone okay?"),
        ("Melanie", "They're tough kids, all fine now."),
        ("Caroline", "Glad to hear it."),
    ]
    for i in order:
        speaker, text = turns[i]
        idx.upsert(item(f"t{i}", text, speaker=speaker, conv="s1", said_at=T0), SAME)


LEXICAL = SearchConfig(speaker_weight=0, dense_weight=0)  # the dense list ties here: BM25 and the signal decide


def test_a_turn_is_found_by_its_neighbours_in_the_conversation() -> None:
    idx = HybridIndex(DIM, LEXICAL)
    conversation(idx, [0, 1, 2, 3, 4])
    idx.upsert(item("x", "The accident report was filed.", conv="s2", said_at=T0), SAME)
    hits = ids(idx, "accident")
    assert set(hits[:2]) == {"t1", "x"}
    assert set(hits[2:]) == {"t0", "t2", "t3"}  # within two turns of t1, though they share no word with the query
    alone = HybridIndex(DIM, LEXICAL.model_copy(update={"neighbour_weight": 0.0}))
    conversation(alone, [0, 1, 2, 3, 4])
    assert ids(alone, "accident") == ["t1"]


def test_conversations_are_linked_by_when_said_then_by_id_whatever_the_write_order() -> None:
    cfg = LEXICAL.model_copy(update={"neighbour_window": 1})
    in_order, shuffled = HybridIndex(DIM, cfg), HybridIndex(DIM, cfg)
    conversation(in_order, [0, 1, 2, 3, 4])
    conversation(shuffled, [3, 0, 4, 1, 2])
    assert ids(in_order, "accident") == ids(shuffled, "accident") == ["t1", "t0", "t2"]
    shuffled.remove("t2")  # its neighbours are each other's now
    assert ids(shuffled, "accident") == ["t1", "t0", "t3"]


def test_turns_said_apart_or_filtered_out_are_not_neighbours() -> None:
    idx = HybridIndex(DIM, LEXICAL.model_copy(update={"neighbour_window": 1}))
    idx.upsert(item("a", "My son had an accident.", conv="s", said_at=T0), SAME)
    idx.upsert(item("b", "He is fine now.", conv="s", said_at=T0 + timedelta(minutes=5)), SAME)
    idx.upsert(item("c", "Next day: we went hiking.", conv="s", said_at=T0 + timedelta(days=1)), SAME)
    assert ids(idx, "accident") == ["a", "b"]  # c was said a day later: another session
    idx.upsert(
        item("b", "He is fine now.", conv="s", said_at=T0 + timedelta(minutes=5), state=LifecycleState.archived), SAME
    )
    assert ids(idx, "accident") == ["a"]  # archived: not searched, so not brought in by its neighbour
    assert ids(idx, "accident", filter=SearchFilter(states=[LifecycleState.active, LifecycleState.archived])) == [
        "a",
        "b",
    ]


@pytest.mark.slow
def test_the_model_word_table_is_built_once_and_read_back(encoder: SentenceEncoder, tmp_path: Path) -> None:
    words = encoder.vocabulary()[:3000]
    built = cached_word_neighbours(words, encoder.encode, tmp_path)
    (saved,) = tmp_path.glob("words-*.npz")
    again = cached_word_neighbours(words, encoder.encode, tmp_path)
    assert again.stems.tolist() == built.stems.tolist() and np.array_equal(again.neighbours, built.neighbours)
    full = encoder.word_neighbours()
    assert "kid" in [w for w, _ in full.of("children")][:3]
    assert "town" in [w for w, _ in full.of("city")][:3]
    cached_word_neighbours(words[:-1], encoder.encode, tmp_path)  # another vocabulary: another table
    assert len(list(tmp_path.glob("words-*.npz"))) == 2 and saved.exists()
