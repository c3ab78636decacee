"""Word neighbours for query expansion: the words of common English the shared sentence model places
close to each other, so a question about "children" also finds a memory that says "kids" or "son".

Why a table of words and not of memories: a cube's memories say the same things in other words than the
questions asked of them (LoCoMo: "Which cities has John been to?" is answered by "I was in Chicago"),
and BM25 only finds the words a query names. Each word of the sentence model's own vocabulary (its
tokenizer's whole words, ~16k BM25 stems) is embedded once by the Embedder, batched; each keeps its
:data:`NEIGHBOURS` closest words. At search, a query word brings in its closest neighbours that the cube
itself holds (the cube's own vocabulary), at a fraction of a query word's weight. Nothing is computed
per memory: ingest pays nothing, activation reads nothing, and the table is the same for every cube of
a model (the Embedder builds it once per model and machine, ~15 s on 2 cores, and caches it on disk).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memos_ray.plaintext.text import STOP_WORDS, _stem

WORDS_VERSION = 1
NEIGHBOURS = 16  # kept per word; a query word uses the few of them its cube holds
MIN_KEPT = 0.35  # a neighbour less similar than this is never used, so it is not kept
_WORD_RE = re.compile(r"[a-z]{3,}")
_BLOCK = 2048  # rows of the similarity matrix computed at once (~130 MB of float32)


@dataclass(frozen=True, slots=True)
class WordNeighbours:
    """``stems`` sorted; row r's neighbours are ``stems[neighbours[r, k]]`` at cosine ``similarity[r, k]``,
    best first (-1: none)."""

    stems: np.ndarray  # unicode, sorted
    neighbours: np.ndarray  # int32 (n, NEIGHBOURS)
    similarity: np.ndarray  # float32 (n, NEIGHBOURS)

    def __len__(self) -> int:
        return len(self.stems)

    def row(self, stem: str) -> int | None:
        r = int(np.searchsorted(self.stems, stem))
        return r if r < len(self.stems) and self.stems[r] == stem else None

    def of(self, stem: str) -> Iterator[tuple[str, float]]:
        """``stem``'s neighbours, closest first (none for a word outside the table)."""
        r = self.row(stem)
        if r is None:
            return
        for k, sim in zip(self.neighbours[r].tolist(), self.similarity[r].tolist(), strict=True):
            if k < 0:
                return
            yield str(self.stems[k]), sim

    @classmethod
    def build(cls, words: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> WordNeighbours:
        """The table of ``words`` (whole words; each kept under its BM25 stem, the first word of a stem
        standing for it), ``encode`` giving their L2-normalised vectors."""
        by_stem: dict[str, str] = {}
        for word in words:
            if _WORD_RE.fullmatch(word) and word not in STOP_WORDS:
                by_stem.setdefault(_stem(word), word)
        stems = sorted(by_stem)
        vecs = np.asarray(encode([by_stem[s] for s in stems]), dtype=np.float32)
        n = len(stems)
        k = min(NEIGHBOURS, max(n - 1, 0))
        neighbours = np.full((n, NEIGHBOURS), -1, dtype=np.int32)
        similarity = np.zeros((n, NEIGHBOURS), dtype=np.float32)
        for a in range(0, n, _BLOCK):
            sims = vecs[a : a + _BLOCK] @ vecs.T
            rows = np.arange(len(sims))
            sims[rows, a + rows] = -np.inf  # not its own neighbour
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k else np.zeros((len(sims), 0), dtype=int)
            top_sims = np.take_along_axis(sims, top, axis=1)
            order = np.argsort(-top_sims, axis=1, kind="stable")
            top, top_sims = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)
            kept = top_sims >= MIN_KEPT
            neighbours[a : a + len(sims), :k] = np.where(kept, top, -1)
            similarity[a : a + len(sims), :k] = np.where(kept, top_sims, 0.0)
        return cls(np.array(stems), neighbours, similarity)

    def save(self, path: Path) -> None:
        """Written whole or not at all (a temporary file renamed), as plain arrays: never a pickle."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            np.savez(f, stems=self.stems, neighbours=self.neighbours, similarity=self.similarity)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> WordNeighbours:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["stems"], z["neighbours"], z["similarity"])


def fingerprint(words: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> str:
    """What the table depends on: the vocabulary, the stemmer's version and the model's weights (through
    the vectors it gives a probe, rounded so thread counts do not change it)."""
    probe = np.round(np.asarray(encode(["memos-ray word table probe: children, kids"]), dtype=np.float64), 4)
    h = hashlib.sha256(f"words-v{WORDS_VERSION}\n".encode())
    h.update("\n".join(words).encode())
    h.update(probe.tobytes())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "memos-ray"


def cached_word_neighbours(
    words: Sequence[str], encode: Callable[[list[str]], np.ndarray], cache_dir: Path | None
) -> WordNeighbours:
    """The table for this model, from ``cache_dir`` (None: ``~/.cache/memos-ray``), built there if missing."""
    path = (cache_dir or default_cache_dir()) / f"words-{fingerprint(words, encode)}.npz"
    if path.exists():
        try:
            return WordNeighbours.load(path)
        except (OSError, ValueError, KeyError):  # a damaged file is built again
            pass
    table = WordNeighbours.build(words, encode)
    table.save(path)
    return table
