"""Text handling shared by ingest and retrieval: what gets indexed, BM25 tokens, splitting.

``index_text`` is the one place that decides which words of a memory are embedded and
BM25-indexed, so the add path, the update path and a rebuild index the same words.
"""

from __future__ import annotations

import functools
import re

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+|\n+")

# A compact English stop list (articles, pronouns, auxiliaries, prepositions).
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
    nor not now of off on once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your yours yourself yourselves
    s t don ll ve re m d o y""".split()
)


def index_text(text: str, speaker: str | None) -> str:
    """What a memory is searched by: the speaker is part of what was said ("Caroline: ...")."""
    return f"{speaker}: {text}" if speaker else text


@functools.lru_cache(maxsize=200_000)  # a vocabulary is small; loading a 10k cube stems ~600k tokens
def _stem(token: str) -> str:
    """A light suffix stripper: plurals and the commonest verb endings, never below 3 letters."""
    if token.endswith("'s"):
        token = token[:-2]
    if len(token) <= 3 or token.isdigit():
        return token
    for suffix, repl in (("sses", "ss"), ("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if not token.endswith(suffix) or (suffix == "s" and token.endswith("ss")):
            continue
        stem = token[: len(token) - len(suffix)] + repl
        if len(stem) >= 3:
            return stem
    return token


def tokenize(text: str) -> list[str]:
    """BM25 tokens: lowercase words, stop words dropped, lightly stemmed."""
    out: list[str] = []
    for raw in _TOKEN_RE.findall(text.lower()):
        if raw in STOP_WORDS:
            continue
        out.append(_stem(raw))
    return out


def split_text(text: str, max_chars: int) -> list[str]:
    """Split ``text`` into chunks of at most ``max_chars``, on sentence ends where possible."""
    text = text.strip()
    if len(text) <= max_chars:
        return [text]
    chunks: list[str] = []
    current = ""
    for sentence in _SENTENCE_END_RE.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        while len(sentence) > max_chars:  # one sentence longer than a chunk: cut at a space
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            if current:
                chunks.append(current)
                current = ""
            chunks.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if current and len(current) + 1 + len(sentence) > max_chars:
            chunks.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        chunks.append(current)
    return chunks
