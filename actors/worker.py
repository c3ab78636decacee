"""Model workers: a real LLM (SmolLM2 via transformers) with KV-cache injection and LoRA adapters.

Adapters (parametric memory) stay resident in :class:`AdapterSlots`, several at once under a
byte budget (LRU); a chat names its cube's adapter and brings the adapter's weights as an
ObjectRef, which a worker that lacks it maps from the object store and loads. A KV cache is
keyed by the adapter it was computed under, so it is never used under another.

Each worker holds KV caches in a :class:`LocalKVStore` (LRU under a byte budget, every entry also
on disk). A cache lives in the Ray object store from the moment it is built or loaded: the
worker puts it there once and computes on zero-copy views of that buffer. Moving it to
another worker passes the ObjectRef: on the same node the receiver maps the same shared
memory (no copy at all); on another node Ray's object manager transfers it.
"""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray

from actors import metrics
from actors.calls import actor_class
from actors.handoff import AdapterWeights, KVHandle, Placement
from memos_ray.activation import kvcache
from memos_ray.activation.blocks import Composer
from memos_ray.activation.compose import ComposedPrompt
from memos_ray.activation.store import LocalKVStore
from memos_ray.config import MemosConfig
from memos_ray.errors import Conflict, Internal, InvalidInput, Unavailable
from memos_ray.llm import load_model
from memos_ray.parametric.slots import AdapterSlots
from memos_ray.types import (
    AdapterRef,
    AdapterSettings,
    AdapterStatus,
    ChatOutcome,
    ChatPlan,
    KVCacheEntry,
    KVInfo,
    KVStatus,
    ModelIdentity,
)


def worker_name(index: int) -> str:
    return f"memos_worker:{index}"


class ModelWorker:
    def __init__(self, index: int, config: MemosConfig) -> None:
        self.index = index
        self.config = config
        self.lm = load_model(config.llm, config.storage.data_dir / "models")
        self.eos = int(self.lm.tokenizer.eos_token_id)
        self.store = LocalKVStore(
            config.storage.data_dir / "kv", config.workers.kv_budget_mb * 1024 * 1024, on_evict=self._forget
        )
        self._refs: dict[str, ray.ObjectRef] = {}  # key -> the cache in the object store
        self.slots = AdapterSlots(self.lm.model, config.workers.adapter_budget_mb * 1024 * 1024)
        self.slots.warm(AdapterSettings())  # at start: wrapping the model is not the first adapter's cost
        self.composer = Composer(self.lm.tokenizer, self.lm.identity, config.workers.block_budget_mb * 1024 * 1024)
        self.prefills = 0
        self.prefill_tokens = 0
        self.calibrations = 0  # break-even measurements (one per Scheduler: each burns a core for ~20 s)

    def identity(self) -> ModelIdentity:
        return self.lm.identity

    def resident(self) -> list[str]:
        return self.store.keys()

    # ------------------------------------------------------------ caches

    def _ensure(
        self, plan: ChatPlan, model: Any, prefix_ids: list[int]
    ) -> tuple[KVCacheEntry, dict[str, Any], KVStatus]:
        """The cache of ``plan``'s prefix on this worker: held (hit), from disk (loaded), or computed (built)."""
        adapter = plan.adapter.adapter_id if plan.adapter else None
        key, _ = kvcache.cache_key(self.lm.identity, adapter, plan.prefix_text)
        if self.store.in_memory(key):
            entry, tensors = self.store.get(key)  # type: ignore[misc]
            return entry, tensors, "hit"
        found = self.store.get(key)
        if found is not None:  # from disk
            entry, tensors = found[0], self._publish(found[0], found[1])
            self.store.put(entry, tensors, persist=False)
            return entry, tensors, "loaded"
        tensors = kvcache.prefill(model, prefix_ids)
        self._count_prefill(len(prefix_ids))
        entry = kvcache.new_entry(self.lm.identity, adapter, plan.sources, plan.prefix_text, prefix_ids, tensors)
        kvcache.save(self.store.path(key), entry, tensors)
        tensors = self._publish(entry, tensors)
        self.store.put(entry, tensors, persist=False)
        return entry, tensors, "built"

    def _publish(self, entry: KVCacheEntry, tensors: dict[str, Any]) -> dict[str, Any]:
        """Put the cache in the object store once, as one buffer (k0, v0, k1, v1, ...); compute on
        zero-copy views of it from now on."""
        import torch

        layers = len(tensors) // 2
        packed = torch.cat([tensors[f"{kind}.{i}"] for i in range(layers) for kind in "kv"], dim=0)
        ref = ray.put(_to_numpy(packed))
        self._refs[entry.key] = ref
        return self._views(entry, ref)

    @staticmethod
    def _views(entry: KVCacheEntry, ref: ray.ObjectRef) -> dict[str, Any]:
        packed = _from_numpy(ray.get(ref), entry.model.dtype)
        return {f"{'kv'[i % 2]}.{i // 2}": packed[i : i + 1] for i in range(len(packed))}

    def _forget(self, key: str) -> None:
        self._refs.pop(key, None)

    def build(self, plan: ChatPlan, adapter: AdapterWeights | None = None) -> KVHandle:
        """Make sure this worker holds the cache of ``plan``'s prefix (built, or loaded from disk)."""
        start = time.perf_counter()
        self._ensure_adapter(plan.adapter, adapter)
        prefix_ids, _ = kvcache.split_prompt(self.lm.tokenizer, plan.prefix_text, plan.messages)
        with self.slots.use(plan.adapter.adapter_id if plan.adapter else None) as model:
            entry = self._ensure(plan, model, prefix_ids)[0]
        return KVHandle(entry, self._refs[entry.key], time.perf_counter() - start)

    # ------------------------------------------------------------ adapters

    def _ensure_adapter(
        self, ref: AdapterRef | None, weights: AdapterWeights | None
    ) -> tuple[AdapterStatus, float | None]:
        if ref is None:
            return "off", None
        if self.slots.has(ref.adapter_id):
            return "resident", None
        if weights is None or weights.adapter.adapter_id != ref.adapter_id:
            raise Unavailable(f"worker {self.index} does not hold adapter {ref.adapter_id} and got no weights")
        return "loaded", self.load_adapter(weights)

    def load_adapter(self, weights: AdapterWeights) -> float:
        """Load an adapter from the object store (mapped on this node, fetched from another); seconds taken,
        measured here (mapping included)."""
        ref, mine = weights.adapter, self.lm.identity
        if (ref.base_model.name, ref.base_model.file_sha256) != (mine.name, mine.file_sha256):  # dtype may differ
            raise Conflict(
                f"adapter {ref.adapter_id} was trained on {ref.base_model.key}; this worker runs {mine.key}",
                {"adapter_id": ref.adapter_id},
            )
        start = time.perf_counter()
        state = ray.get(weights.weights)
        self.slots.load(ref.adapter_id, ref.settings, state)
        return time.perf_counter() - start

    def drop_adapters(self, adapter_ids: list[str]) -> int:
        dropped = sum(self.slots.remove(a) for a in adapter_ids)
        if dropped:
            gc.collect()  # peft's removed layers are cycles: collect them now, not in a later adapter's load
        stale = [k for k in self.store.keys() if any(f"|{a}|" in k for a in adapter_ids)]
        for key in stale:  # caches computed under a dropped adapter go with it
            self.store.remove(key)
        self.composer.drop_adapters(adapter_ids)
        return dropped

    def adapters(self) -> list[str]:
        return self.slots.resident()

    def logits(self, token_ids: list[int], adapter_id: str | None) -> np.ndarray:
        """The next-token logits after ``token_ids`` under an adapter (None: the base model), float32."""
        import torch

        with self.slots.use(adapter_id) as model, torch.no_grad():
            out = model(input_ids=torch.tensor([token_ids]))
        return out.logits[0, -1].float().numpy()

    def export(self, key: str) -> KVHandle:
        """The cache in the object store (a reference: the bytes stay where they are)."""
        if key not in self._refs or not self.store.in_memory(key):
            found = self.store.get(key)
            if found is None:
                raise Unavailable(f"worker {self.index} has no KV cache {key}")
            self.store.put(found[0], self._publish(found[0], found[1]), persist=False)
        entry = self.store.get(key)[0]  # type: ignore[index]
        return KVHandle(entry, self._refs[key])

    def receive(self, kv: KVHandle) -> float:
        """Adopt a cache from the object store: zero-copy views on this node's shared memory (Ray's object
        manager brings it from another node first). Returns the seconds it took, measured here."""
        if kv.entry.model.key != self.lm.identity.key:  # computed by another model: never injected here
            raise Conflict(
                f"KV cache {kv.entry.key} was computed by {kv.entry.model.key}; "
                f"this worker runs {self.lm.identity.key}",
                {"key": kv.entry.key},
            )
        start = time.perf_counter()
        tensors = self._views(kv.entry, kv.ref)
        self.store.put(kv.entry, tensors, persist=False)
        self._refs[kv.entry.key] = kv.ref
        return time.perf_counter() - start

    def drop(self, keys: list[str]) -> int:
        """Forget caches everywhere: memory and disk (stale, or demoted off the disk)."""
        return sum(self.store.remove(k) for k in keys)

    def demote(self, keys: list[str]) -> int:
        """Caches leave this worker's memory; their files stay (a later chat loads them)."""
        return sum(self.store.evict(k) for k in keys)

    def calibrate(self) -> tuple[int, list[dict[str, float]]]:
        """The prefix length from which a KV cache pays off on this worker (see ``measure_break_even``)."""
        self.calibrations += 1
        filler = self.lm.tokenizer(kvcache.SYSTEM_PREAMBLE + " ", add_special_tokens=False).input_ids
        return kvcache.measure_break_even(self.lm.model, self.eos, filler)

    # ------------------------------------------------------------ chat

    def _count_prefill(self, n: int) -> None:
        self.prefills += 1
        self.prefill_tokens += n

    def _check_context(self, plan: ChatPlan, prompt_tokens: int) -> None:
        needed = prompt_tokens + plan.max_tokens
        limit = int(self.lm.model.config.max_position_embeddings)
        if needed > limit:
            raise InvalidInput(
                f"prompt of {prompt_tokens} tokens plus max_tokens {plan.max_tokens} exceeds the model's "
                f"context of {limit} tokens",
                {"tokens": needed, "limit": limit},
            )

    def _run(
        self, plan: ChatPlan, placement: Placement | None, adapter: AdapterWeights | None
    ) -> Iterator[tuple[int, ChatOutcome | None]]:
        composed = self.composer.prompt(plan) if plan.blocks is not None else None
        if composed is not None:  # compose: the same ids, in pieces (the head, one per memory line, the rest)
            prefix_ids, suffix_ids = composed.ids[: composed.prefix_len], composed.tail
        else:
            prefix_ids, suffix_ids = kvcache.split_prompt(self.lm.tokenizer, plan.prefix_text, plan.messages)  # once
        self._check_context(plan, len(prefix_ids) + len(suffix_ids))
        start = time.perf_counter()
        adapter_status, adapter_s = self._ensure_adapter(plan.adapter, adapter)
        switch = time.perf_counter()
        with self.slots.use(plan.adapter.adapter_id if plan.adapter else None) as model:
            if adapter_status == "resident":
                adapter_s = time.perf_counter() - switch  # activating a resident adapter (0 if it was active)
            kv: dict[str, Any] | None
            if composed is not None and plan.use_kv:
                kv, info = self._composed(plan, composed, model)
            else:
                kv, info = self._activation(plan, placement, model, prefix_ids)
            prefilled = len(suffix_ids) if kv is not None else len(prefix_ids) + len(suffix_ids)
            self._count_prefill(prefilled)
            tokens: list[int] = []
            ttft = 0.0
            for token, _ in kvcache.generate(
                model, self.eos, prefix_ids, suffix_ids, kv, plan.max_tokens, plan.temperature, plan.seed
            ):
                if not tokens:
                    ttft = time.perf_counter() - start  # includes building or loading the cache
                if token != self.eos:
                    tokens.append(token)
                    yield token, None
        _measured(info, ttft, adapter_status)
        yield (
            -1,
            ChatOutcome(
                text=self.lm.tokenizer.decode(tokens, skip_special_tokens=True),
                token_ids=tokens,
                ttft_ms=ttft * 1000,
                total_ms=(time.perf_counter() - start) * 1000,
                prefill_tokens=prefilled,
                prompt_tokens=len(prefix_ids) + len(suffix_ids),
                kv=info,
                adapter=plan.adapter.adapter_id if plan.adapter else None,
                adapter_status=adapter_status,
                adapter_ms=None if adapter_s is None else adapter_s * 1000,
            ),
        )

    def _activation(
        self, plan: ChatPlan, placement: Placement | None, model: Any, prefix_ids: list[int]
    ) -> tuple[dict[str, Any] | None, KVInfo]:
        """The prefix's KV tensors for this chat (None: prefill everything) and what it took: the one place
        a chat's KV status is decided."""
        if not plan.use_kv:
            return None, KVInfo(status="off", worker=self.index)
        adopt = placement.adopt if placement else None
        adopt_s = None
        if adopt is not None and not self.store.in_memory(adopt.entry.key):
            try:
                adopt_s = self.receive(adopt)
            except ray.exceptions.RayError:  # its owner died: _ensure loads it from disk or builds it
                adopt_s = None
        entry, tensors, status = self._ensure(plan, model, prefix_ids)
        moved = adopt_s is not None and status == "hit"
        if moved:
            status = "moved"
        elif status == "hit" and placement is not None and placement.built:
            status = "built"  # the Scheduler had this worker build it for this chat
        info = KVInfo(
            status=status,
            key=entry.key,
            tokens=entry.tokens,
            worker=self.index,
            moved_bytes=entry.bytes if moved else 0,
            move_ms=None if adopt_s is None else adopt_s * 1000,
        )
        return tensors, info

    def _composed(self, plan: ChatPlan, prompt: ComposedPrompt, model: Any) -> tuple[dict[str, Any], KVInfo]:
        """Compose: the prefix's KV assembled from the memories' blocks (built here when missing)."""
        done = self.composer.assemble(model, plan, prompt)
        info = KVInfo(
            status="composed",
            tokens=prompt.prefix_len,
            worker=self.index,
            reused_tokens=done.reused_tokens,
            recomputed_tokens=done.recomputed_tokens,
            blocks_built=done.blocks_built,
        )
        return done.tensors, info

    def drop_blocks(self, memory_ids: list[str]) -> int:
        """Forget the KV blocks of memories that changed or are gone (the cascade's, like :meth:`drop`)."""
        return self.composer.blocks.drop_memories(memory_ids)

    def chat(
        self, plan: ChatPlan, placement: Placement | None = None, adapter: AdapterWeights | None = None
    ) -> ChatOutcome:
        for _, outcome in self._run(plan, placement, adapter):
            if outcome is not None:
                return outcome
        raise Internal("generation ended without an outcome")  # pragma: no cover

    @ray.method(num_returns="streaming")  # type: ignore[misc]
    def chat_stream(
        self, plan: ChatPlan, placement: Placement | None = None, adapter: AdapterWeights | None = None
    ) -> Iterator[str | ChatOutcome]:
        """Text pieces as they are decoded, then the outcome."""
        sent = ""
        tokens: list[int] = []
        for token, outcome in self._run(plan, placement, adapter):
            if outcome is not None:
                yield outcome
                return
            tokens.append(token)
            text = self.lm.tokenizer.decode(tokens, skip_special_tokens=True)
            if len(text) > len(sent) and not text.endswith("\ufffd"):  # whole characters only
                yield text[len(sent) :]
                sent = text

    def stats(self) -> dict[str, Any]:
        return {
            "worker": self.index,
            "node": ray.get_runtime_context().get_node_id(),
            "model": self.lm.identity.key,
            "resident": len(self.store.keys()),
            "kv_bytes": self.store.used,
            "kv_budget": self.store.budget,
            "evictions": self.store.evictions,
            "disk_loads": self.store.disk_loads,
            "prefills": self.prefills,
            "prefill_tokens": self.prefill_tokens,
            "calibrations": self.calibrations,
            "adapters": self.slots.stats(),
            "adapter_ids": self.slots.resident(),
            "blocks": vars(self.composer.blocks.stats()),
            "block_keys": self.composer.blocks.keys(),
        }


def _to_numpy(t: Any) -> np.ndarray:
    import torch

    # numpy has no bfloat16: ship its bits as int16 (a view, no copy) and view them back on arrival
    return t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _from_numpy(a: np.ndarray, dtype: str) -> Any:
    import torch

    with warnings.catch_warnings():  # read-only on purpose: the object store's buffer is never written
        warnings.simplefilter("ignore", UserWarning)  # (generation appends with torch.cat)
        t = torch.from_numpy(a)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


WorkerActor = actor_class(ModelWorker, max_restarts=-1, max_task_retries=0)
"""The actor (each is its own process); ``ModelWorker`` names its methods for typed calls."""


def _measured(info: KVInfo, ttft_s: float, adapter_status: str) -> None:
    """A chat's figures, as metrics (:mod:`actors.metrics`)."""
    metrics.count("memos_kv_total", status=info.status)
    metrics.observe("memos_ttft_ms", ttft_s * 1000, kv=info.status)
    if info.status != "off":
        metrics.count("memos_kv_prefix_tokens_total", info.tokens - info.recomputed_tokens)
    metrics.count("memos_kv_moved_bytes_total", info.moved_bytes)
    if adapter_status != "off":
        metrics.count("memos_adapter_total", status=adapter_status)


__all__ = ["ModelWorker", "WorkerActor", "worker_name"]
