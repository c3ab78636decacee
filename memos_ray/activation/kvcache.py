"""Activation memory: the KV cache of a rendered memory prefix, built once and injected at chat.

A prompt is split into a *prefix* (the system turn that carries the memories) and a *suffix*
(the conversation). The prefix's KV cache is computed once; a chat that starts with the same
prefix prefills only its suffix. Prefix and suffix are tokenised separately and concatenated,
so a full prefill and an injected one see exactly the same token ids.

An entry records what it was built from (model identity, adapter, memory ids and versions)
and is keyed by (model, adapter, content hash of the prefix tokens): the same prefix is never
computed twice, and an edit of a source memory makes the entry stale. Tensors are kept out
of the pydantic entry: in a worker's memory, in the object store, or in a safetensors file.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from memos_ray.types import ChatMessage, KVCacheEntry, MemoryItem, MemoryRef, ModelIdentity, utcnow

SYSTEM_PREAMBLE = "You are a helpful assistant with a long-term memory. What you remember:"


def memory_line(m: MemoryItem) -> str:
    """One memory as the system turn shows it: its date and speaker when known, then its text."""
    when = f"[{m.said_at:%Y-%m-%d}] " if m.said_at else ""
    who = f"{m.provenance.speaker}: " if m.provenance.speaker else ""
    return f"- {when}{who}{m.text}"


def render_memories(memories: Sequence[MemoryItem]) -> str:
    """The system turn a prefix is made of: one line per memory, oldest first."""
    return "\n".join([SYSTEM_PREAMBLE, *(memory_line(m) for m in memories)])


def split_prompt(tokenizer: Any, system: str, messages: Sequence[ChatMessage]) -> tuple[list[int], list[int]]:
    """Token ids of the memory prefix and of the rest of the chat prompt (generation prompt included)."""
    head = [{"role": "system", "content": system}]
    convo = [{"role": m.role, "content": m.content} for m in messages]
    prefix = tokenizer.apply_chat_template(head, tokenize=False)
    full = tokenizer.apply_chat_template(head + convo, tokenize=False, add_generation_prompt=True)
    if not full.startswith(prefix):
        raise ValueError("the chat template does not keep the system turn as a prefix")
    encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    return list(encode(prefix)), list(encode(full[len(prefix) :]))


def cache_key(model: ModelIdentity, adapter: str | None, prefix_text: str) -> tuple[str, str]:
    """(key, content hash). The rendered prefix text determines its tokens for a given model, so the
    scheduler can key a cache without a tokenizer."""
    digest = hashlib.sha256(prefix_text.encode()).hexdigest()
    return f"{model.key}|{adapter or '-'}|{digest[:32]}", digest


def prefill(model: Any, ids: Sequence[int]) -> dict[str, Any]:
    """Run the prefix once; its KV cache as named tensors ``k.<layer>`` / ``v.<layer>``."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.inference_mode():
        model(input_ids=torch.tensor([list(ids)]), past_key_values=cache, use_cache=True)
    tensors: dict[str, Any] = {}
    for i, layer in enumerate(cache.layers):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or values is None:
            raise ValueError(f"layer {i} has no attention KV cache (not a plain decoder?)")
        tensors[f"k.{i}"] = keys.contiguous()
        tensors[f"v.{i}"] = values.contiguous()
    return tensors


def to_cache(tensors: dict[str, Any]) -> Any:
    """A fresh DynamicCache over the stored tensors: generation appends with new tensors (torch.cat),
    so the stored ones are never mutated and one entry serves any number of chats."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for i in range(len(tensors) // 2):
        cache.update(tensors[f"k.{i}"], tensors[f"v.{i}"], i)
    return cache


def nbytes(tensors: dict[str, Any]) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors.values()))


def new_entry(
    model: ModelIdentity,
    adapter: str | None,
    sources: Sequence[MemoryRef],
    prefix_text: str,
    prefix_ids: Sequence[int],
    tensors: dict[str, Any],
) -> KVCacheEntry:
    key, digest = cache_key(model, adapter, prefix_text)
    return KVCacheEntry(
        key=key,
        model=model,
        adapter=adapter,
        sources=list(sources),
        tokens=len(prefix_ids),
        bytes=nbytes(tensors),
        content_hash=digest,
        created_at=utcnow(),
    )


def generate(
    model: Any,
    eos_id: int,
    prefix_ids: Sequence[int],
    suffix_ids: Sequence[int],
    kv: dict[str, Any] | None,
    max_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
) -> Iterator[tuple[int, float]]:
    """Decode after the prompt, yielding (token id, seconds since start). With ``kv`` (the
    prefix's cache) only the suffix is prefilled; without it the whole prompt is."""
    import torch

    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    if kv is not None:
        cache = to_cache(kv)
        step_ids = list(suffix_ids)
    else:
        from transformers import DynamicCache

        cache = DynamicCache()
        step_ids = list(prefix_ids) + list(suffix_ids)
    with torch.inference_mode():
        for _ in range(max_tokens):
            logits = model(input_ids=torch.tensor([step_ids]), past_key_values=cache, use_cache=True).logits[0, -1]
            if temperature > 0:
                probs = torch.softmax(logits.float() / temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            else:
                token = int(torch.argmax(logits))
            yield token, time.perf_counter() - start
            if token == eos_id:
                return
            step_ids = [token]


# ------------------------------------------------------------------ persistence


def save(path: Path, entry: KVCacheEntry, tensors: dict[str, Any]) -> None:
    """safetensors, the entry as metadata: no pickle. Written aside, then renamed into place."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"entry": entry.model_dump_json()})
    tmp.replace(path)


def read_entry(path: Path) -> KVCacheEntry:
    """The entry a cache file holds (its header only: no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    return KVCacheEntry.model_validate(json.loads(meta["entry"]))


def load(path: Path) -> tuple[KVCacheEntry, dict[str, Any]]:
    from safetensors.torch import load_file

    return read_entry(path), load_file(str(path))


# ------------------------------------------------------------------ break-even


CALIBRATION_LENGTHS = (16, 32, 64, 128, 256)


def measure_break_even(
    model: Any, eos_id: int, filler_ids: Sequence[int], suffix_tokens: int = 24, repeats: int = 3
) -> tuple[int, list[dict[str, float]]]:
    """The shortest prefix whose cache pays off on this machine: for each length, the time to the first
    token with the prefix prefilled (off) and with its cache injected (hit), best of ``repeats``. Returns
    the first length from which every longer one is faster on a hit (the shortest measured when all are),
    and the points measured."""
    points: list[dict[str, float]] = []
    ids = list(filler_ids)
    while len(ids) < CALIBRATION_LENGTHS[-1] + suffix_tokens:
        ids += list(filler_ids)
    suffix = ids[:suffix_tokens]
    for n in CALIBRATION_LENGTHS:
        prefix = ids[suffix_tokens : suffix_tokens + n]
        kv = prefill(model, prefix)

        def first(kv_: dict[str, Any] | None, prefix: list[int] = prefix) -> float:
            return next(generate(model, eos_id, prefix, suffix, kv_, 1))[1]

        off = min(first(None) for _ in range(repeats))
        hit = min(first(kv) for _ in range(repeats))
        points.append({"tokens": n, "off_ms": off * 1000, "hit_ms": hit * 1000})
    break_even = CALIBRATION_LENGTHS[0]
    for p in points:
        if p["hit_ms"] >= p["off_ms"]:
            break_even = int(p["tokens"]) * 2  # not worth it at this length: the next one up, at least
    return break_even, points
