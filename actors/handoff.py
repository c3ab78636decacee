"""What actors hand each other for activation and parametric memory, after vLLM's ``KVCacheBlocks``:
small dataclasses that hide where the tensors are.

Tensors never travel inside these: an ``ObjectRef`` does. Ray does not dereference a reference
nested inside an argument, so the receiver decides when (and whether) to map the buffer, on
this node's shared memory or through Ray's object manager from another node.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray import ObjectRef
from ray.actor import ActorHandle

from memos_ray.types import AdapterRef, KVCacheEntry


@dataclass(frozen=True)
class KVHandle:
    """A KV cache in the object store: its entry and its tensors, packed in one buffer (k0, v0, k1, ...)."""

    entry: KVCacheEntry
    ref: ObjectRef
    compute_s: float = 0.0  # what making it took the worker that built or loaded it (0: it was held)


@dataclass(frozen=True)
class AdapterWeights:
    """A LoRA adapter in the object store: what it is, and its state dict of float32 arrays."""

    adapter: AdapterRef
    weights: ObjectRef


@dataclass(frozen=True)
class Placement:
    """Where a chat runs, decided by the Scheduler. ``adopt`` carries a cache held elsewhere: the worker
    takes it from the object store inside the chat call, so a move adds no round trip. ``built``: this
    placement made the Scheduler build the cache (the chat reports ``built``, not ``hit``)."""

    worker: int
    handle: ActorHandle
    key: str | None
    built: bool = False
    adopt: KVHandle | None = None


__all__ = ["AdapterWeights", "KVHandle", "Placement"]
