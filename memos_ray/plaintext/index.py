"""The in-memory hybrid index a live cube searches: exact cosine + BM25 + filters + fusion.

What a search adds to the two ranked lists it fuses (each a :class:`SearchConfig` weight, 0 turns it off):
- query expansion: a query word brings in its closest words that the cube holds
  (:mod:`memos_ray.plaintext.words`), so "children" also finds "kids";
- the speaker a query names: "What does Caroline paint?" prefers what Caroline said;
- the conversation around a memory: a turn gains a share of its neighbours' scores, so the answer
  said after the turn that names the topic ("They're tough kids.") is found with it.

Why in memory: milvus-lite searches in Python, ~16 ms for a hybrid query on 10k flushed rows
and ~200 ms with an ``array_contains`` tag filter (platform notes, re-measured), while the
HTTP budget for a search is 40 ms. A cube's rows fit in its actor (10k x 384 float32 = 15 MB),
so the actor keeps them here and searches exactly in ~1-3 ms; Milvus stays the durable record
the index is rebuilt from on activation.

One slot per memory id (its latest version, whatever its state); filters run as numpy masks.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from memos_ray.config import SearchConfig
from memos_ray.plaintext.text import index_text, tokenize
from memos_ray.plaintext.words import WordNeighbours
from memos_ray.types import LifecycleState, MemoryItem, MemoryKind, SearchQuery

_STATES = list(LifecycleState)
_KINDS = list(MemoryKind)
_BM25_K1 = 1.2
_BM25_B = 0.75


def _idf(docs: int, df: int) -> float:
    """BM25's inverse document frequency of a term in ``df`` of ``docs`` memories."""
    return math.log(1.0 + (docs - df + 0.5) / (df + 0.5))


@dataclass(frozen=True, slots=True)
class Scored:
    memory_id: str
    score: float
    dense: float | None
    bm25: float | None


@dataclass(frozen=True, slots=True)
class TermRows:
    """Many memories' BM25 terms as compressed rows, so a checkpoint stores them as three arrays and a
    vocabulary (nothing parsed term by term): row r holds term ``vocab[ids[k]]`` with frequency ``tf[k]``
    for k in ``ptr[r]:ptr[r+1]``."""

    vocab: list[str]
    ptr: np.ndarray  # int64, one more than the rows
    ids: np.ndarray  # int32, into vocab
    tf: np.ndarray  # float64

    @classmethod
    def of(cls, rows: Sequence[dict[str, float]]) -> TermRows:
        index: dict[str, int] = {}
        ids = [index.setdefault(term, len(index)) for row in rows for term in row]
        tf = [tf for row in rows for tf in row.values()]
        ptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(row) for row in rows], out=ptr[1:])
        return cls(list(index), ptr, np.array(ids, dtype=np.int32), np.array(tf, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def take(self, rows: np.ndarray) -> TermRows:
        """These rows, in this order (-1: an empty row)."""
        present = rows >= 0
        start = self.ptr[np.where(present, rows, 0)]
        lengths = np.where(present, self.ptr[np.where(present, rows + 1, 0)] - start, 0)
        ptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        gather = np.repeat(start - ptr[:-1], lengths) + np.arange(ptr[-1])
        return TermRows(self.vocab, ptr, self.ids[gather], self.tf[gather])

    def row(self, r: int) -> dict[str, float]:
        a, b = int(self.ptr[r]), int(self.ptr[r + 1])
        return dict(zip([self.vocab[k] for k in self.ids[a:b].tolist()], self.tf[a:b].tolist(), strict=True))


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What :meth:`HybridIndex.load` indexed, left as arrays: a term's posting, or a slot's terms, becomes a
    dict only when a search or a write first needs it (at activation most never do)."""

    rows: TermRows  # row = slot
    spans: dict[str, tuple[int, int]]  # term -> its posting, [a, b) into slots and tf (popped once a dict)
    slots: np.ndarray
    tf: np.ndarray


def _epoch(when: datetime | None) -> float:
    return when.timestamp() if when is not None else math.nan


def _same(said: float, when: datetime | None) -> bool:
    t = _epoch(when)
    return (math.isnan(said) and math.isnan(t)) or said == t


# the per-slot arrays and what _allocate fills an empty slot with (NaN: no time; -1: no neighbour)
_EMPTY = {
    **dict.fromkeys(("_alive", "_state", "_kind", "_doclen"), 0),
    **dict.fromkeys(("_said", "_valid_from", "_valid_to"), math.nan),
    **dict.fromkeys(("_prev", "_next"), -1),
}
_NAME_RE = re.compile(r"[a-z0-9]+")


class HybridIndex:
    def __init__(
        self, dim: int, config: SearchConfig, capacity: int = 1024, words: WordNeighbours | None = None
    ) -> None:
        self.dim = dim
        self.config = config
        self.words = words  # None: no query expansion
        self._slot: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._free: list[int] = []
        self._allocate(capacity)
        self._speaker: list[str | None] = []
        self._tags: dict[str, set[int]] = {}
        self._slot_tags: list[tuple[str, ...]] = []
        # BM25: term -> {slot: term frequency}; per-slot term counts to undo on update.
        self._postings: dict[str, dict[int, float]] = {}
        self._slot_terms: list[dict[str, float] | None] = []  # None: still in ``_loaded``
        self._loaded: _Loaded | None = None
        self._total_len = 0.0
        self._speakers: Counter[str] = Counter()  # lowercased, over indexed memories
        self._conv: list[str | None] = []  # a slot's conversation
        self._turns: dict[str, list[int]] = {}  # conversation -> its slots, in the order linked
        self._unlinked: set[str] = set()  # conversations whose links are to be made again

    def _allocate(self, capacity: int) -> None:
        """Empty per-slot arrays for ``capacity`` memories."""
        self._vecs = np.zeros((capacity, self.dim), dtype=np.float32)
        self._alive = np.zeros(capacity, dtype=bool)
        self._state = np.zeros(capacity, dtype=np.int8)
        self._kind = np.zeros(capacity, dtype=np.int8)
        self._said = np.full(capacity, math.nan)
        self._valid_from = np.full(capacity, math.nan)  # NaN: open (always / still)
        self._valid_to = np.full(capacity, math.nan)
        self._doclen = np.zeros(capacity, dtype=np.float32)
        self._prev = np.full(capacity, -1, dtype=np.int32)  # the turn said before it in its conversation
        self._next = np.full(capacity, -1, dtype=np.int32)

    def __len__(self) -> int:
        return len(self._slot)

    # ------------------------------------------------------------ writes

    def _grow(self) -> None:
        cap = len(self._alive) * 2
        self._vecs = np.resize(self._vecs, (cap, self.dim))
        for name, fill in _EMPTY.items():
            arr = getattr(self, name)
            grown = np.full(cap, fill, dtype=arr.dtype)
            grown[: len(arr)] = arr
            setattr(self, name, grown)

    def terms(self, item: MemoryItem, contexts: Sequence[str] = ()) -> dict[str, float]:
        """What BM25 finds ``item`` by: its words (with its speaker), and at ``context_weight`` those of its
        context and of ``contexts``, the memories merged into it (a near-duplicate said after other words
        stays findable by them)."""
        terms: Counter[str] = Counter(tokenize(index_text(item.text, item.provenance.speaker)))
        out: dict[str, float] = dict(terms)
        if self.config.context_weight > 0:
            for context in [item.context, *contexts]:
                for term, tf in Counter(tokenize(context or "")).items():
                    out[term] = out.get(term, 0) + tf * self.config.context_weight
        return out

    @property
    def key(self) -> str:
        """What :meth:`terms` depends on: a checkpoint's terms are reused only under the same key."""
        return f"bm25-v1:{self.config.context_weight}"

    def indexed_terms(self) -> dict[str, dict[str, float]]:
        """Every indexed memory's terms, by id: a checkpoint keeps them, so a reload needs no tokenizing."""
        return {memory_id: self._terms_at(slot) for memory_id, slot in self._slot.items()}

    def _terms_at(self, slot: int) -> dict[str, float]:
        terms = self._slot_terms[slot]
        if terms is None:
            assert self._loaded is not None
            terms = self._slot_terms[slot] = self._loaded.rows.row(slot)
        return terms

    def _posting(self, term: str) -> dict[int, float] | None:
        """The slots holding ``term`` with its frequency in each (made from what ``load`` left on first use)."""
        posting = self._postings.get(term)
        if posting is None and self._loaded is not None and (span := self._loaded.spans.pop(term, None)):
            a, b = span
            posting = dict(zip(self._loaded.slots[a:b].tolist(), self._loaded.tf[a:b].tolist(), strict=True))
            self._postings[term] = posting
        return posting

    def _add_terms(self, slot: int, terms: dict[str, float]) -> float:
        """Index ``slot`` under ``terms``; returns its length."""
        self._slot_terms[slot] = terms
        for term, tf in terms.items():
            posting = self._posting(term)
            if posting is None:
                posting = self._postings[term] = {}
            posting[slot] = tf
        return float(sum(terms.values()))

    def upsert(
        self, item: MemoryItem, vec: np.ndarray, contexts: Sequence[str] = (), terms: dict[str, float] | None = None
    ) -> None:
        """Index the latest version of ``item`` (replacing an older one); ``terms``: :meth:`terms` of it and
        ``contexts``, when known."""
        slot = self._slot.get(item.id)
        if slot is None:
            if self._free:
                slot = self._free.pop()
            else:
                slot = len(self._ids)
                if slot >= len(self._alive):
                    self._grow()
                self._ids.append(None)
                self._speaker.append(None)
                self._conv.append(None)
                self._slot_terms.append({})
                self._slot_tags.append(())
            self._slot[item.id] = slot
            self._ids[slot] = item.id
        else:
            self._unindex_terms(slot)
            if self._conv[slot] != item.provenance.conversation_id or not _same(self._said[slot], item.said_at):
                self._leave(slot)
            self._count_speaker(self._speaker[slot], -1)
        norm = float(np.linalg.norm(vec))
        self._vecs[slot] = vec / norm if norm > 0 else vec
        self._alive[slot] = True
        self._state[slot] = _STATES.index(item.state)
        self._kind[slot] = _KINDS.index(item.kind)
        self._said[slot] = _epoch(item.said_at)
        self._valid_from[slot] = _epoch(item.valid_from)
        self._valid_to[slot] = _epoch(item.valid_to)
        self._speaker[slot] = item.provenance.speaker
        self._count_speaker(item.provenance.speaker, 1)
        if self._conv[slot] is None and item.provenance.conversation_id is not None:
            self._join(slot, item.provenance.conversation_id)
        for tag in self._slot_tags[slot]:
            self._tags[tag].discard(slot)
        self._slot_tags[slot] = tuple(item.tags)
        for tag in item.tags:
            self._tags.setdefault(tag, set()).add(slot)
        if terms is None:
            terms = self.terms(item, contexts)
        length = self._add_terms(slot, terms)
        self._doclen[slot] = length
        self._total_len += length

    def load(
        self,
        items: Sequence[MemoryItem],
        vecs: np.ndarray,
        cached: TermRows,
        contexts: Callable[[MemoryItem], Sequence[str]],
    ) -> None:
        """Index ``items`` (latest versions, distinct ids) into an empty index at once: what :meth:`upsert`
        does one by one, with the arrays filled in one step (a 10k cube's activation). ``cached``: their
        :meth:`terms`, row by row; an empty row is tokenized here (with ``contexts`` of its item)."""
        if self._slot:
            raise ValueError("load() fills an empty index")
        n = len(items)
        capacity = len(self._alive)
        while capacity < n:
            capacity *= 2
        if capacity > len(self._alive):
            self._allocate(capacity)
        self._ids = [item.id for item in items]
        self._slot = {item.id: slot for slot, item in enumerate(items)}
        norms = np.linalg.norm(vecs, axis=1, keepdims=True) if n else np.ones((0, 1), dtype=np.float32)
        self._vecs[:n] = vecs / np.where(norms > 0, norms, 1)  # a zero vector stays zero
        self._alive[:n] = True
        states = {state: i for i, state in enumerate(_STATES)}
        kinds = {kind: i for i, kind in enumerate(_KINDS)}
        self._state[:n] = [states[item.state] for item in items]
        self._kind[:n] = [kinds[item.kind] for item in items]
        self._said[:n] = [_epoch(item.said_at) for item in items]
        self._valid_from[:n] = [_epoch(item.valid_from) for item in items]
        self._valid_to[:n] = [_epoch(item.valid_to) for item in items]
        self._speaker = [item.provenance.speaker for item in items]
        self._speakers = Counter(s.lower() for s in self._speaker if s)
        self._conv = [item.provenance.conversation_id for item in items]
        for slot, conv in enumerate(self._conv):
            if conv is not None:
                self._turns.setdefault(conv, []).append(slot)
        self._unlinked = set(self._turns)  # linked at the first search
        self._slot_tags = [tuple(item.tags) for item in items]
        for slot, tags in enumerate(self._slot_tags):
            for tag in tags:
                self._tags.setdefault(tag, set()).add(slot)
        counts = np.diff(cached.ptr)
        slots = np.repeat(np.arange(n), counts)
        order = np.argsort(cached.ids, kind="stable")  # grouped by term, slots ascending within each
        by_term = cached.ids[order]
        starts = np.flatnonzero(np.r_[True, by_term[1:] != by_term[:-1]]) if len(by_term) else np.zeros(0, int)
        bounds = [*starts.tolist(), len(by_term)]
        spans = {cached.vocab[t]: (bounds[k], bounds[k + 1]) for k, t in enumerate(by_term[starts].tolist())}
        self._loaded = _Loaded(cached, spans, slots[order], cached.tf[order])
        lengths = np.bincount(slots, weights=cached.tf, minlength=n)
        self._slot_terms = [None] * n
        for slot in np.flatnonzero(counts == 0).tolist():  # not cached: tokenized now
            lengths[slot] = self._add_terms(slot, self.terms(items[slot], contexts(items[slot])))
        self._doclen[:n] = lengths
        self._total_len = float(lengths.sum())

    def remove(self, memory_id: str) -> None:
        slot = self._slot.pop(memory_id, None)
        if slot is None:
            return
        self._unindex_terms(slot)
        self._leave(slot)
        self._count_speaker(self._speaker[slot], -1)
        self._speaker[slot] = None
        for tag in self._slot_tags[slot]:
            self._tags[tag].discard(slot)
        self._slot_tags[slot] = ()
        self._alive[slot] = False
        self._ids[slot] = None
        self._free.append(slot)

    def _unindex_terms(self, slot: int) -> None:
        for term in self._terms_at(slot):
            posting = self._posting(term)
            if posting is not None:
                posting.pop(slot, None)
                if not posting:
                    del self._postings[term]
        self._total_len -= float(self._doclen[slot])
        self._doclen[slot] = 0.0
        self._slot_terms[slot] = {}

    # ------------------------------------------------------------ speakers and conversations

    def _count_speaker(self, speaker: str | None, delta: int) -> None:
        if speaker:
            name = speaker.lower()
            self._speakers[name] += delta
            if self._speakers[name] <= 0:
                del self._speakers[name]

    def _join(self, slot: int, conv: str) -> None:
        """Place ``slot`` in its conversation: after its last turn when said after it (a conversation is
        mostly written in order), else the conversation is linked again at the next search."""
        self._conv[slot] = conv
        turns = self._turns.setdefault(conv, [])
        if turns and conv not in self._unlinked:
            last = turns[-1]
            if self._order_key(last) <= self._order_key(slot):
                self._link(last, slot)
            else:
                self._unlinked.add(conv)
        turns.append(slot)

    def _leave(self, slot: int) -> None:
        conv = self._conv[slot]
        if conv is None:
            return
        turns = self._turns[conv]
        turns.remove(slot)
        if turns:
            self._unlinked.add(conv)
        else:
            del self._turns[conv]
            self._unlinked.discard(conv)
        self._conv[slot] = None
        self._prev[slot] = self._next[slot] = -1

    def _order_key(self, slot: int) -> tuple[float, str]:
        """When a turn was said, then its id (time-ordered: a batch's memories in the order they came)."""
        said = float(self._said[slot])
        return (-math.inf if math.isnan(said) else said, self._ids[slot] or "")

    def _link(self, before: int, after: int) -> None:
        near = not (abs(float(self._said[after]) - float(self._said[before])) > self.config.neighbour_gap_s)
        self._next[before] = after if near else -1
        self._prev[after] = before if near else -1

    def _relink(self) -> None:
        """Link again the turns of the conversations changed out of order: by when said, then by id."""
        for conv in self._unlinked:
            slots = np.array(self._turns[conv], dtype=np.int32)
            said = self._said[slots]
            order = slots[np.lexsort((np.array([self._ids[s] for s in slots]), np.nan_to_num(said, nan=-np.inf)))]
            near = ~(np.abs(np.diff(self._said[order])) > self.config.neighbour_gap_s)  # NaN: no time, near
            self._prev[order[0]] = -1
            self._next[order[-1]] = -1
            self._prev[order[1:]] = np.where(near, order[:-1], -1)
            self._next[order[:-1]] = np.where(near, order[1:], -1)
            self._turns[conv] = order.tolist()
        self._unlinked.clear()

    def _named_speaker(self, query: str) -> str | None:
        """The one speaker of the cube the query names (lowercased), if it names exactly one."""
        words = set(_NAME_RE.findall(query.lower()))
        named = None
        for speaker in self._speakers:
            parts = _NAME_RE.findall(speaker)
            if parts and all(p in words for p in parts):
                if named is not None:
                    return None
                named = speaker
        return named

    def _with_speaker(self, ranked: dict[int, float], speaker: str) -> dict[int, float]:
        boost = 1.0 + self.config.speaker_weight
        return {s: v * boost if (self._speaker[s] or "").lower() == speaker else v for s, v in ranked.items()}

    def _around(self, slot: int, mask: np.ndarray) -> Iterator[int]:
        """The searched turns within ``neighbour_window`` of ``slot`` in its conversation."""
        for link in (self._prev, self._next):
            j = slot
            for _ in range(self.config.neighbour_window):
                j = int(link[j])
                if j < 0:
                    break
                if mask[j]:
                    yield j

    def _with_neighbours(self, ranked: dict[int, float], mask: np.ndarray) -> dict[int, float]:
        """A memory's score becomes the weighted mean of its own and of its neighbours' mean, ``neighbour_weight``
        to 1: a turn outside either list is found by its neighbours, a hit among weak turns goes down a little,
        and scores stay on fusion's scale, so hits from several cubes still compare."""
        if self._unlinked:
            self._relink()
        weight = self.config.neighbour_weight
        near = {slot: list(self._around(slot, mask)) for slot in ranked}  # the relation is symmetric
        for slot in {j for js in near.values() for j in js} - near.keys():  # found by its neighbours only
            near[slot] = list(self._around(slot, mask))
        out = {}
        for slot, js in near.items():
            own = ranked.get(slot, 0.0)
            out[slot] = (own + weight * sum(ranked.get(j, 0.0) for j in js) / len(js)) / (1 + weight) if js else own
        return out

    def query_terms(self, query: str) -> dict[str, float]:
        """BM25's query: its words at 1, and each word's closest words the cube holds at ``expansion_weight``
        times their similarity (never below a word the query names itself)."""
        terms = dict.fromkeys(tokenize(query), 1.0)
        cfg = self.config
        if self.words is None or cfg.expansion_weight <= 0 or cfg.expansion_terms <= 0:
            return terms
        for term in list(terms):
            taken = 0
            for near, sim in self.words.of(term):
                if sim < cfg.expansion_similarity or taken >= cfg.expansion_terms:
                    break
                if near == term or not self._posting(near):
                    continue
                taken += 1
                terms[near] = max(terms.get(near, 0.0), cfg.expansion_weight * sim)
        return terms

    # ------------------------------------------------------------ search

    def closest(self, vec: np.ndarray, item: MemoryItem) -> tuple[str, float] | None:
        """The active memory of ``item``'s kind and speaker closest to ``vec`` (cosine): ingest dedup."""
        n = len(self._ids)
        if n == 0:
            return None
        speaker = (item.provenance.speaker or "").lower()
        mask = self._alive[:n] & (self._state[:n] == _STATES.index(LifecycleState.active))
        mask &= self._kind[:n] == _KINDS.index(item.kind)
        mask &= np.array([(s or "").lower() == speaker for s in self._speaker[:n]], dtype=bool)
        if not mask.any():
            return None
        q = vec / max(float(np.linalg.norm(vec)), 1e-12)
        sims = np.where(mask, self._vecs[:n] @ q.astype(np.float32), -np.inf)
        best = int(np.argmax(sims))
        return self._ids[best], float(sims[best])  # type: ignore[return-value]

    def salience(self, item: MemoryItem) -> float:
        """How much ``item`` says that the cube's other memories do not: the summed BM25 idf of its distinct
        words (its speaker's name included, which is common and weighs little), in units of a word no other
        memory has, so a bar means the same in a cube of a hundred memories and of ten thousand. "Thanks, see
        you!" scores about 1, a turn naming a place, a person and a date 4 or more; the lifecycle archives only
        what says little."""
        docs = max(len(self._slot), 1)
        words = set(tokenize(index_text(item.text, item.provenance.speaker)))
        said = sum(_idf(docs, len(self._posting(w) or ())) for w in words)
        return float(said / _idf(docs, 1))

    def _mask(self, q: SearchQuery) -> np.ndarray:
        n = len(self._ids)
        f = q.filter
        mask = self._alive[:n].copy()
        mask &= np.isin(self._state[:n], [_STATES.index(s) for s in f.searched_states()])
        if f.as_of is not None:
            t = f.as_of.timestamp()
            vf, vt = self._valid_from[:n], self._valid_to[:n]
            mask &= (np.isnan(vf) | (vf <= t)) & (np.isnan(vt) | (t < vt))
        if f.kinds:
            mask &= np.isin(self._kind[:n], [_KINDS.index(k) for k in f.kinds])
        said = self._said[:n]
        if f.said_after is not None:
            mask &= said >= f.said_after.timestamp()  # NaN (no time) compares False: excluded
        if f.said_before is not None:
            mask &= said < f.said_before.timestamp()
        if f.tags_any:
            hit = np.zeros(n, dtype=bool)
            for tag in f.tags_any:
                hit[list(self._tags.get(tag, ()))] = True
            mask &= hit
        for tag in f.tags_all:
            hit = np.zeros(n, dtype=bool)
            hit[list(self._tags.get(tag, ()))] = True
            mask &= hit
        if f.speakers:
            wanted = {s.lower() for s in f.speakers}
            mask &= np.array([(s or "").lower() in wanted for s in self._speaker[:n]], dtype=bool)
        return mask

    def _bm25(self, query: str, mask: np.ndarray) -> np.ndarray:
        n = len(mask)
        scores = np.zeros(n, dtype=np.float32)
        docs = max(len(self._slot), 1)
        avgdl = max(self._total_len / docs, 1.0)
        for term, weight in self.query_terms(query).items():
            posting = self._posting(term)
            if not posting:
                continue
            slots = np.fromiter(posting.keys(), dtype=np.int64, count=len(posting))
            tf = np.fromiter(posting.values(), dtype=np.float32, count=len(posting))
            idf = _idf(docs, len(posting))
            dl = self._doclen[slots]
            scores[slots] += weight * idf * tf * (_BM25_K1 + 1) / (tf + _BM25_K1 * (1 - _BM25_B + _BM25_B * dl / avgdl))
        scores[~mask] = 0.0
        return scores

    def search(self, q: SearchQuery, qvec: np.ndarray | None) -> list[Scored]:
        n = len(self._ids)
        if n == 0:
            return []
        mask = self._mask(q)
        if not mask.any():
            return []
        cand = self.config.candidates
        dense = bm25 = None
        ranked: dict[int, float] = {}
        if q.mode in ("hybrid", "dense"):
            if qvec is None:
                raise ValueError("dense search needs a query vector")
            qn = qvec / max(float(np.linalg.norm(qvec)), 1e-12)
            dense = self._vecs[:n] @ qn.astype(np.float32)
            dense_masked = np.where(mask, dense, -np.inf)
            listed = q.mode == "dense" or self.config.dense_weight > 0  # weight 0: scored, not fused
            for rank, slot in enumerate(_top(dense_masked, cand) if listed else ()):
                ranked[slot] = ranked.get(slot, 0.0) + self.config.dense_weight / (self.config.rrf_k + rank + 1)
        if q.mode in ("hybrid", "bm25"):
            bm25 = self._bm25(q.query, mask)
            positive = np.where(bm25 > 0, bm25, -np.inf)
            for rank, slot in enumerate(_top(positive, cand)):
                ranked[slot] = ranked.get(slot, 0.0) + self.config.bm25_weight / (self.config.rrf_k + rank + 1)
        if q.mode == "dense" and dense is not None:
            ranked = {s: float(dense[s]) for s in ranked}
        elif q.mode == "bm25" and bm25 is not None:
            ranked = {s: float(bm25[s]) for s in ranked}
        elif ranked:
            if self.config.speaker_weight > 0 and (speaker := self._named_speaker(q.query)) is not None:
                ranked = self._with_speaker(ranked, speaker)
            if self.config.neighbour_weight > 0 and self._turns:
                ranked = self._with_neighbours(ranked, mask)
        if q.prefer_time is not None and ranked:
            ranked = self._apply_time(ranked, q)
        best = sorted(ranked.items(), key=lambda kv: kv[1], reverse=True)[: q.top_k]
        return [
            Scored(
                memory_id=self._ids[slot],  # type: ignore[arg-type]
                score=score,
                dense=None if dense is None else float(dense[slot]),
                bm25=None if bm25 is None else float(bm25[slot]),
            )
            for slot, score in best
        ]

    def _apply_time(self, ranked: dict[int, float], q: SearchQuery) -> dict[int, float]:
        pref = q.prefer_time
        assert pref is not None
        anchor = pref.anchor.timestamp() if pref.anchor else time.time()
        half_life = pref.half_life_days * 86_400.0
        out = {}
        for slot, score in ranked.items():
            said = self._said[slot]
            decay = 0.0 if math.isnan(said) else 2.0 ** (-abs(anchor - said) / half_life)
            out[slot] = score * ((1 - pref.weight) + pref.weight * decay)
        return out


def _top(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` highest finite scores, best first."""
    finite = np.isfinite(scores)
    count = int(finite.sum())
    if count == 0:
        return []
    k = min(k, count)
    part = np.argpartition(-np.where(finite, scores, -np.inf), k - 1)[:k]
    return [int(i) for i in part[np.argsort(-scores[part], kind="stable")]]
