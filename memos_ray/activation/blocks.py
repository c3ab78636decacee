"""A model worker's memory KV blocks (composable activation memory, :mod:`memos_ray.activation.compose`): each
memory line's block built once, kept under a byte budget (least recently used out first), and dropped when its
memory changes, is purged or its cube goes (the same cascade as the prefix caches), or its adapter is deleted.

A block's key names everything it was computed from: the model, the adapter, the memory's id and version, and a
hash of its rendered line (the date and speaker it shows). An edited memory has a new version, so its old block
can never serve it; the old one is dropped by the cascade, or ages out.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memos_ray.activation import compose
from memos_ray.activation.kvcache import nbytes
from memos_ray.types import ChatPlan, ComposeBlock, ModelIdentity

Tensors = dict[str, Any]


def block_key(model: ModelIdentity, adapter: str | None, head: list[int], block: ComposeBlock) -> str:
    line = hashlib.sha256(block.line.encode()).hexdigest()[:16]
    head_hash = hashlib.sha256(",".join(map(str, head)).encode()).hexdigest()[:8]
    return f"{model.key}|{adapter or '-'}|{head_hash}|{block.ref.memory_id}@{block.ref.version}|{line}"


@dataclass
class BlockStats:
    blocks: int
    bytes: int
    built: int
    reused: int


class BlockStore:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._blocks: OrderedDict[str, Tensors] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self.built = self.reused = 0

    def get_or_build(self, key: str, build: Callable[[], Tensors]) -> tuple[Tensors, bool]:
        """The block under ``key``, built (and kept) when absent; True when it was built."""
        found = self._blocks.get(key)
        if found is not None:
            self._blocks.move_to_end(key)
            self.reused += 1
            return found, False
        tensors = build()
        self._blocks[key] = tensors
        self._bytes[key] = nbytes(tensors)
        self.built += 1
        self._fit()
        return tensors, True

    def _fit(self) -> None:
        while sum(self._bytes.values()) > self.budget and len(self._blocks) > 1:
            key, _ = self._blocks.popitem(last=False)
            self._bytes.pop(key, None)

    def drop_memories(self, memory_ids: list[str]) -> int:
        """Every block of these memories, any version: they changed or are gone."""
        ids = set(memory_ids)
        stale = [k for k in self._blocks if k.rsplit("|", 2)[1].rsplit("@", 1)[0] in ids]
        return self._drop(stale)

    def drop_adapters(self, adapter_ids: list[str]) -> int:
        stale = [k for k in self._blocks if k.split("|")[1] in set(adapter_ids)]
        return self._drop(stale)

    def _drop(self, keys: list[str]) -> int:
        for key in keys:
            self._blocks.pop(key, None)
            self._bytes.pop(key, None)
        return len(keys)

    def keys(self) -> list[str]:
        return list(self._blocks)

    def stats(self) -> BlockStats:
        return BlockStats(len(self._blocks), sum(self._bytes.values()), self.built, self.reused)


@dataclass(frozen=True)
class Composed:
    """A composed chat's prefix cache and what it took."""

    tensors: Tensors
    reused_tokens: int
    recomputed_tokens: int
    blocks_built: int


class Composer:
    """A worker's side of composable activation memory: the prompt of a compose plan, and its prefix cache from
    the head's cache (one per adapter) and the memories' blocks (built once, then reused in any order)."""

    def __init__(self, tokenizer: Any, identity: ModelIdentity, budget_bytes: int) -> None:
        self.tokenizer = tokenizer
        self.identity = identity
        self.blocks = BlockStore(budget_bytes)
        self._heads: dict[tuple[str | None, tuple[int, ...]], Tensors] = {}

    def prompt(self, plan: ChatPlan) -> compose.ComposedPrompt:
        return compose.compose_prompt(self.tokenizer, [b.line for b in plan.blocks or []], plan.messages)

    def assemble(self, model: Any, plan: ChatPlan, prompt: compose.ComposedPrompt) -> Composed:
        adapter = plan.adapter.adapter_id if plan.adapter else None
        head_key = (adapter, tuple(prompt.head))
        head = self._heads.get(head_key)
        if head is None:
            head = self._heads[head_key] = compose.build_head(model, prompt.head)
        built = 0
        tensors: list[Tensors] = []
        for block, ids in zip(plan.blocks or [], prompt.blocks, strict=True):

            def build(ids: list[int] = ids, head: Tensors = head) -> Tensors:
                return compose.build_block(model, head, len(prompt.head), ids)

            got, fresh = self.blocks.get_or_build(block_key(self.identity, adapter, prompt.head, block), build)
            built += fresh
            tensors.append(got)
        assembly = compose.assemble(model, prompt, head, tensors, plan.recompute)
        return Composed(assembly.tensors, assembly.reused_tokens, assembly.recomputed_tokens, built)

    def drop_adapters(self, adapter_ids: list[str]) -> int:
        for key in [k for k in self._heads if k[0] in set(adapter_ids)]:
            del self._heads[key]
        return self.blocks.drop_adapters(adapter_ids)


__all__ = ["BlockStats", "BlockStore", "Composed", "Composer", "block_key"]
