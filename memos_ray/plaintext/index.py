"""The in-memory hybrid index a live cube searches: exact cosine + BM25 + filters + fusion.

Why in memory: milvus-lite searches in Python, ~16 ms for a hybrid query on 10k flushed rows
and ~200 ms with an ``array_contains`` tag filter (platform notes, re-measured), while the
HTTP budget for a search is 40 ms. A cube's rows fit in its actor (10k x 384 float32 = 15 MB),
so the actor keeps them here and searches exactly in ~1-3 ms; Milvus stays the durable record
the index is rebuilt from on activation.

One slot per memory id (its latest version, whatever its state); filters run as numpy masks.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from memos_ray.config import SearchConfig
from memos_ray.plaintext.text import index_text, tokenize
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


class HybridIndex:
    def __init__(self, dim: int, config: SearchConfig, capacity: int = 1024) -> None:
        self.dim = dim
        self.config = config
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

    def __len__(self) -> int:
        return len(self._slot)

    # ------------------------------------------------------------ writes

    def _grow(self) -> None:
        cap = len(self._alive) * 2
        self._vecs = np.resize(self._vecs, (cap, self.dim))
        for name in ("_alive", "_state", "_kind", "_doclen"):
            arr = getattr(self, name)
            grown = np.zeros(cap, dtype=arr.dtype)
            grown[: len(arr)] = arr
            setattr(self, name, grown)
        for name in ("_said", "_valid_from", "_valid_to"):
            arr = getattr(self, name)
            grown_f = np.full(cap, math.nan)
            grown_f[: len(arr)] = arr
            setattr(self, name, grown_f)

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
                self._slot_terms.append({})
                self._slot_tags.append(())
            self._slot[item.id] = slot
            self._ids[slot] = item.id
        else:
            self._unindex_terms(slot)
        norm = float(np.linalg.norm(vec))
        self._vecs[slot] = vec / norm if norm > 0 else vec
        self._alive[slot] = True
        self._state[slot] = _STATES.index(item.state)
        self._kind[slot] = _KINDS.index(item.kind)
        self._said[slot] = _epoch(item.said_at)
        self._valid_from[slot] = _epoch(item.valid_from)
        self._valid_to[slot] = _epoch(item.valid_to)
        self._speaker[slot] = item.provenance.speaker
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
        for term in set(tokenize(query)):
            posting = self._posting(term)
            if not posting:
                continue
            slots = np.fromiter(posting.keys(), dtype=np.int64, count=len(posting))
            tf = np.fromiter(posting.values(), dtype=np.float32, count=len(posting))
            idf = _idf(docs, len(posting))
            dl = self._doclen[slots]
            scores[slots] += idf * tf * (_BM25_K1 + 1) / (tf + _BM25_K1 * (1 - _BM25_B + _BM25_B * dl / avgdl))
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
            for rank, slot in enumerate(_top(dense_masked, cand)):
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
