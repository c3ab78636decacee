"""A worker's memory KV blocks (no model): keyed by what they were computed from, kept under a byte budget,
dropped by memory (any version) or adapter."""

from __future__ import annotations

import torch

from memos_ray.activation.blocks import BlockStore, block_key
from memos_ray.types import ComposeBlock, MemoryRef, ModelIdentity

MODEL = ModelIdentity(name="smollm2-135m-instruct", file_sha256="ab" * 32, dtype="float32")


def key(memory: str, version: int = 1, line: str = "- a fact", adapter: str | None = None) -> str:
    return block_key(
        MODEL, adapter, [1, 2, 3], ComposeBlock(ref=MemoryRef(memory_id=memory, version=version), line=line)
    )


def tensors(n: int = 4) -> dict[str, torch.Tensor]:
    return {"k.0": torch.zeros(1, 1, n, 8), "v.0": torch.zeros(1, 1, n, 8)}  # 2 * n * 8 * 4 bytes


def test_a_block_is_built_once_and_its_key_names_its_sources() -> None:
    store = BlockStore(budget_bytes=10_000)
    builds = []
    for _ in range(3):
        store.get_or_build(key("m1"), lambda: builds.append(1) or tensors())
    assert len(builds) == 1 and store.stats().reused == 2
    assert len({key("m1"), key("m1", 2), key("m1", line="- [2024-01-01] a fact"), key("m1", adapter="a1")}) == 4


def test_the_budget_evicts_the_least_recently_used() -> None:
    store = BlockStore(budget_bytes=600)  # two blocks of 256 bytes fit, three do not
    for m in ("m1", "m2"):
        store.get_or_build(key(m), tensors)
    store.get_or_build(key("m1"), tensors)  # m1 used again: m2 is the oldest
    store.get_or_build(key("m3"), tensors)
    assert set(store.keys()) == {key("m1"), key("m3")} and store.stats().bytes == 512


def test_drops_reach_every_version_of_a_memory_and_an_adapters_blocks() -> None:
    store = BlockStore(budget_bytes=1 << 20)
    for k in (key("m1"), key("m1", 2), key("m10"), key("m2", adapter="a1")):
        store.get_or_build(k, tensors)
    assert store.drop_memories(["m1"]) == 2 and set(store.keys()) == {key("m10"), key("m2", adapter="a1")}
    assert store.drop_adapters(["a1"]) == 1 and store.keys() == [key("m10")]
