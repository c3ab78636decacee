"""Activation memory on the real SmolLM2 (fp32, where exact equality is tested), without Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from memos_ray.activation import kvcache as kv
from memos_ray.llm import LoadedModel
from memos_ray.types import ChatMessage, MemoryItem, utcnow

pytestmark = pytest.mark.slow  # loads the real LLM


def memories(n: int) -> list[MemoryItem]:
    now = utcnow()
    return [
        MemoryItem(
            id=f"m{i}",
            cube_id="c",
            version=1,
            created_at=now,
            updated_at=now,
            text=f"Box {i} is {'red' if i % 2 else 'blue'} and holds {i * 3} marbles.",
        )
        for i in range(n)
    ]


def tokens(stream) -> list[int]:  # type: ignore[no-untyped-def]
    return [t for t, _ in stream]


def test_model_identity_is_recorded(llm: LoadedModel) -> None:
    ident = llm.identity
    assert ident.name == "smollm2-135m-instruct" and ident.dtype == "float32" and len(ident.file_sha256) == 64
    assert ident.key.startswith("smollm2-135m-instruct@")


def test_injected_cache_gives_the_full_prefill_output(llm: LoadedModel) -> None:
    system = kv.render_memories(memories(20))
    prefix, suffix = kv.split_prompt(llm.tokenizer, system, [ChatMessage(content="How many marbles are in box 4?")])
    assert len(prefix) > 300 and 0 < len(suffix) < 40
    tensors = kv.prefill(llm.model, prefix)
    assert set(tensors) == {f"{kind}.{i}" for kind in "kv" for i in range(30)}
    assert tuple(tensors["k.0"].shape) == (1, 3, len(prefix), 64)
    eos = llm.tokenizer.eos_token_id
    injected = tokens(kv.generate(llm.model, eos, prefix, suffix, tensors, 24))
    full = tokens(kv.generate(llm.model, eos, prefix, suffix, None, 24))
    assert injected == full and len(injected) > 3
    # the stored tensors are not mutated by a chat: a second chat gives the same again
    assert tokens(kv.generate(llm.model, eos, prefix, suffix, tensors, 24)) == full
    # and the injected cache really is what the model reads: another prefix's cache, another answer
    other = [m.model_copy(update={"text": m.text.replace("marbles", "pebbles")}) for m in memories(20)]
    other_prefix, _ = kv.split_prompt(llm.tokenizer, kv.render_memories(other), [])
    assert tokens(kv.generate(llm.model, eos, prefix, suffix, kv.prefill(llm.model, other_prefix), 24)) != full


def test_entries_are_keyed_by_content_and_persist_without_pickle(llm: LoadedModel, tmp_path: Path) -> None:
    mems = memories(5)
    system = kv.render_memories(mems)
    prefix, suffix = kv.split_prompt(llm.tokenizer, system, [ChatMessage(content="Box 1?")])
    tensors = kv.prefill(llm.model, prefix)
    entry = kv.new_entry(llm.identity, None, [m.ref for m in mems], system, prefix, tensors)
    assert entry.tokens == len(prefix) and entry.bytes == 30 * 2 * 3 * 64 * 4 * len(prefix)
    assert kv.cache_key(llm.identity, None, system)[0] == entry.key
    assert kv.cache_key(llm.identity, "adapter-1", system)[0] != entry.key
    assert kv.cache_key(llm.identity, None, system + " ")[0] != entry.key

    path = tmp_path / "kv" / "entry.safetensors"
    kv.save(path, entry, tensors)
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle: a safetensors header
    loaded, again = kv.load(path)
    assert loaded == entry
    eos = llm.tokenizer.eos_token_id
    assert tokens(kv.generate(llm.model, eos, prefix, suffix, again, 12)) == tokens(
        kv.generate(llm.model, eos, prefix, suffix, tensors, 12)
    )
