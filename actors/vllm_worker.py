"""Model workers on vLLM (``workers.backend: vllm``, the ``[vllm]`` extra): the same calls as
:class:`actors.worker.ModelWorker`, so the Scheduler places chats, builds and moves caches and hands out
adapters the same way, and the same chat request gives the same response.

- **Chats** are batched by the engine: the actor is async, and concurrent chats run in one engine's steps.
- **Activation memory**: a chat's memory prefix (the system turn) goes to the engine as the request's
  ``kv_transfer_params``; memos-ray's KV connector (:mod:`memos_ray.vllm.connector`) saves its KV blocks to
  the activation store the first time and loads them into any engine that lacks them, and the engine's own
  prefix cache serves it after that. A prefix is one safetensors file, moved between workers through the
  Ray object store as bytes (:meth:`export`, :meth:`receive`).
- **Parametric memory**: a cube's adapter (its weights from the object store) is written once to this
  worker's adapter folder and served with ``LoRARequest``; up to ``workers.vllm_max_loras`` at once.
- Composed prompts (``kv_mode: compose``) and next-token logits need the transformers backend.
"""

from __future__ import annotations

import itertools
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import ray

from actors.calls import actor_class
from actors.handoff import AdapterWeights, KVHandle, Placement
from actors.worker import _measured
from memos_ray.activation import kvcache
from memos_ray.config import MemosConfig
from memos_ray.errors import Conflict, InvalidInput, Unavailable
from memos_ray.types import (
    AdapterRef,
    AdapterStatus,
    ChatOutcome,
    ChatPlan,
    KVCacheEntry,
    KVInfo,
    KVStatus,
    ModelIdentity,
    utcnow,
)
from memos_ray.vllm.prefixes import FILE_KEY, PREFIX_NAME, PREFIX_TOKENS, SUFFIX, prefix_file, valid_name

SIDECAR = ".json"  # next to each prefix file: its KVCacheEntry (which Scheduler key it is, what it came from)


class VLLMWorker:
    def __init__(self, index: int, config: MemosConfig) -> None:
        from memos_ray.vllm.engine import start_engine

        self.index = index
        self.config = config
        self.vllm = start_engine(config)
        self.tokenizer = self.vllm.tokenizer
        self.eos = int(self.tokenizer.eos_token_id)
        self.adapter_dir = config.storage.data_dir / "adapters-vllm" / f"worker-{index}"
        self._loras: dict[str, Any] = {}  # adapter id -> its LoRARequest (resident in the engine)
        self._lora_ids = itertools.count(1)
        self._engine_has: set[str] = set()  # prefix files this engine computed or loaded (its prefix cache)
        self._refs: dict[str, ray.ObjectRef] = {}
        self.prefills = self.prefill_tokens = self.chats = 0
        self.calibrations = 0

    def _file(self, key: str) -> Path | None:
        """The prefix file of a Scheduler key, from the sidecars on disk (none: never built here)."""
        for sidecar in self.vllm.kv_dir.glob(f"*{SIDECAR}"):
            entry = KVCacheEntry.model_validate_json(sidecar.read_text())
            if entry.key == key:
                return sidecar.with_suffix(".safetensors")
        return None

    def _entries(self) -> list[KVCacheEntry]:
        return [KVCacheEntry.model_validate_json(p.read_text()) for p in self.vllm.kv_dir.glob(f"*{SIDECAR}")]

    async def identity(self) -> ModelIdentity:
        return self.vllm.identity

    async def resident(self) -> list[str]:
        return [e.key for e in self._entries()]

    # ------------------------------------------------------------ the prompt

    def _prompt(self, plan: ChatPlan) -> tuple[list[int], list[int]]:
        if plan.blocks is not None:
            raise InvalidInput("kv_mode compose needs the transformers backend; this worker runs vllm")
        prefix, suffix = kvcache.split_prompt(self.tokenizer, plan.prefix_text, plan.messages)
        needed = len(prefix) + len(suffix) + plan.max_tokens
        if needed > self.vllm.max_model_len:
            raise InvalidInput(
                f"prompt of {len(prefix) + len(suffix)} tokens plus max_tokens {plan.max_tokens} exceeds the "
                f"engine's context of {self.vllm.max_model_len} tokens",
                {"tokens": needed, "limit": self.vllm.max_model_len},
            )
        return prefix, suffix

    def _name(self, plan: ChatPlan, prefix: list[int]) -> str:
        whole = len(prefix) // self.vllm.block_size * self.vllm.block_size  # none: named, never saved
        adapter = plan.adapter.adapter_id if plan.adapter else None
        return prefix_file(self.vllm.identity.key, adapter, prefix[:whole] if whole else prefix)

    def _entry(self, plan: ChatPlan, prefix: list[int], name: str) -> KVCacheEntry:
        """The prefix file's entry, written beside it once the file exists."""
        sidecar = (self.vllm.kv_dir / name).with_suffix(SIDECAR)
        if sidecar.exists():
            return KVCacheEntry.model_validate_json(sidecar.read_text())
        key, digest = kvcache.cache_key(
            self.vllm.identity, plan.adapter.adapter_id if plan.adapter else None, plan.prefix_text
        )
        entry = KVCacheEntry(
            key=key,
            model=self.vllm.identity,
            adapter=plan.adapter.adapter_id if plan.adapter else None,
            sources=list(plan.sources),
            tokens=len(prefix) // self.vllm.block_size * self.vllm.block_size,
            bytes=path.stat().st_size if (path := self.vllm.kv_dir / name).exists() else 0,
            content_hash=digest,
            created_at=utcnow(),
        )
        sidecar.write_text(entry.model_dump_json())
        return entry

    # ------------------------------------------------------------ generation

    async def _generate(
        self, plan: ChatPlan, ids: list[int], prefix: str | None, prefix_tokens: int, max_tokens: int
    ) -> AsyncIterator[Any]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        extra = {"kv_transfer_params": {PREFIX_NAME: prefix, PREFIX_TOKENS: prefix_tokens}} if prefix else None
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=plan.temperature,
            seed=plan.seed,
            stop_token_ids=[self.eos],
            extra_args=extra,
        )
        prompt = TokensPrompt(prompt_token_ids=ids)
        if prefix is None:  # activation memory off: nothing of another chat's prompt is reused either
            prompt["cache_salt"] = uuid.uuid4().hex
        lora = self._loras.get(plan.adapter.adapter_id) if plan.adapter else None
        async for out in self.vllm.engine.generate(prompt, params, uuid.uuid4().hex, lora_request=lora):
            yield out

    async def _adopt(self, placement: Placement | None) -> float | None:
        adopt = placement.adopt if placement else None
        if adopt is None or self._file(adopt.entry.key) is not None:
            return None
        try:
            return await self.receive(adopt)
        except ray.exceptions.RayError:  # its owner died: the chat builds it again
            return None

    async def _run(
        self, plan: ChatPlan, placement: Placement | None, adapter: AdapterWeights | None
    ) -> AsyncIterator[tuple[str, ChatOutcome | None]]:
        prefix, suffix = self._prompt(plan)
        start = time.perf_counter()
        adapter_status, adapter_s = await self._ensure_adapter(plan.adapter, adapter)
        adopt_s = await self._adopt(placement) if plan.use_kv else None
        name = self._name(plan, prefix) if plan.use_kv else None
        had_file = name is not None and (self.vllm.kv_dir / name).exists()
        ttft, sent, out = 0.0, "", None
        async for out in self._generate(plan, prefix + suffix, name, len(prefix), plan.max_tokens):
            if not ttft and out.outputs[0].token_ids:
                ttft = time.perf_counter() - start
            text = out.outputs[0].text
            if len(text) > len(sent) and not text.endswith("\ufffd"):
                yield text[len(sent) :], None
                sent = text
        assert out is not None
        tokens = [t for t in out.outputs[0].token_ids if t != self.eos]
        cached = int(out.num_cached_tokens or 0)
        info = self._info(plan, prefix, name, had_file, cached, adopt_s, placement)
        prompt_tokens = len(prefix) + len(suffix)
        self.chats += 1
        self.prefills += 1
        self.prefill_tokens += prompt_tokens - cached
        _measured(info, ttft, adapter_status)
        yield (
            "",
            ChatOutcome(
                text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                token_ids=tokens,
                ttft_ms=ttft * 1000,
                total_ms=(time.perf_counter() - start) * 1000,
                prefill_tokens=prompt_tokens - cached,
                prompt_tokens=prompt_tokens,
                kv=info,
                adapter=plan.adapter.adapter_id if plan.adapter else None,
                adapter_status=adapter_status,
                adapter_ms=None if adapter_s is None else adapter_s * 1000,
            ),
        )

    def _info(
        self,
        plan: ChatPlan,
        prefix: list[int],
        name: str | None,
        had_file: bool,
        cached: int,
        adopt_s: float | None,
        placement: Placement | None,
    ) -> KVInfo:
        """What activation memory did: the prefix's blocks held by the engine (hit), brought by the Scheduler
        (moved), read from the activation store (loaded), or computed and saved by this chat (built)."""
        if name is None:
            return KVInfo(status="off", worker=self.index)
        path = self.vllm.kv_dir / name
        if not path.exists():  # shorter than a block, or not computed whole in its first step
            return KVInfo(status="off", worker=self.index)
        entry = self._entry(plan, prefix, name)
        status: KVStatus
        if cached < entry.tokens or not had_file:
            status = "built"
        elif adopt_s is not None:
            status = "moved"
        elif name in self._engine_has:
            status = "built" if placement is not None and placement.built else "hit"
        else:
            status = "loaded"
        self._engine_has.add(name)
        return KVInfo(
            status=status,
            key=entry.key,
            tokens=entry.tokens,
            worker=self.index,
            moved_bytes=entry.bytes if status == "moved" else 0,
            move_ms=None if adopt_s is None else adopt_s * 1000,
        )

    async def chat(
        self, plan: ChatPlan, placement: Placement | None = None, adapter: AdapterWeights | None = None
    ) -> ChatOutcome:
        async for _, outcome in self._run(plan, placement, adapter):
            if outcome is not None:
                return outcome
        raise RuntimeError("generation ended without an outcome")  # pragma: no cover

    @ray.method(num_returns="streaming")  # type: ignore[misc]
    async def chat_stream(
        self, plan: ChatPlan, placement: Placement | None = None, adapter: AdapterWeights | None = None
    ) -> AsyncIterator[str | ChatOutcome]:
        """Text pieces as they are decoded, then the outcome."""
        async for piece, outcome in self._run(plan, placement, adapter):
            yield outcome if outcome is not None else piece

    # ------------------------------------------------------------ caches

    async def build(self, plan: ChatPlan, adapter: AdapterWeights | None = None) -> KVHandle:
        """Make sure the prefix of ``plan`` is in the activation store: one step of the engine computes and
        the connector saves it (or it was there already)."""
        start = time.perf_counter()
        await self._ensure_adapter(plan.adapter, adapter)
        prefix, suffix = self._prompt(plan)
        name = self._name(plan, prefix)
        whole = len(prefix) >= self.vllm.block_size  # shorter than a block: nothing to keep, chats prefill it
        if whole and not (self.vllm.kv_dir / name).exists():
            async for _ in self._generate(plan, prefix + suffix, name, len(prefix), 1):
                pass
            self._engine_has.add(name)
        if whole and not (self.vllm.kv_dir / name).exists():
            raise Unavailable(f"worker {self.index} could not cache a prefix of {len(prefix)} tokens: retry")
        entry = self._entry(plan, prefix, name)
        return KVHandle(entry, self._publish(entry.key, self.vllm.kv_dir / name), time.perf_counter() - start)

    def _publish(self, key: str, path: Path) -> ray.ObjectRef:
        """The prefix file's bytes in the object store (none for a prefix shorter than one block)."""
        if key not in self._refs:
            data = path.read_bytes() if path.exists() else b""
            self._refs[key] = ray.put(np.frombuffer(data, dtype=np.uint8))
        return self._refs[key]

    async def export(self, key: str) -> KVHandle:
        path = self._file(key)
        if path is None:
            raise Unavailable(f"worker {self.index} has no KV cache {key}")
        entry = KVCacheEntry.model_validate_json(path.with_suffix(SIDECAR).read_text())
        if entry.tokens and not path.exists():
            raise Unavailable(f"worker {self.index} has no KV cache {key}")
        return KVHandle(entry, self._publish(key, path))

    async def receive(self, kv: KVHandle) -> float:
        """Adopt a prefix file from the object store (written to this worker's activation store)."""
        if kv.entry.model.key != self.vllm.identity.key:
            raise Conflict(
                f"KV cache {kv.entry.key} was computed by {kv.entry.model.key}; "
                f"this worker runs {self.vllm.identity.key}",
                {"key": kv.entry.key},
            )
        start = time.perf_counter()
        if kv.entry.tokens == 0:  # a prefix shorter than one block: known, nothing to write
            name = kv.entry.content_hash[:40] + SUFFIX  # its sidecar's place, never a file
            (self.vllm.kv_dir / name).with_suffix(SIDECAR).write_text(kv.entry.model_dump_json())
            return time.perf_counter() - start
        data: np.ndarray = await kv.ref  # type: ignore[misc]
        from safetensors import safe_open  # the bytes must be a safetensors file that names itself

        tmp = self.vllm.kv_dir / f".{uuid.uuid4().hex}.recv"
        tmp.write_bytes(data.tobytes())
        try:
            with safe_open(str(tmp), framework="numpy") as f:
                name = (f.metadata() or {}).get(FILE_KEY, "")
            if not valid_name(name):
                raise InvalidInput(f"KV cache {kv.entry.key} does not name its prefix file")
            path = self.vllm.kv_dir / name
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        path.with_suffix(SIDECAR).write_text(kv.entry.model_dump_json())
        self._refs[kv.entry.key] = kv.ref
        return time.perf_counter() - start

    async def drop(self, keys: list[str]) -> int:
        dropped = 0
        for key in keys:
            path = self._file(key)
            if path is not None:
                path.unlink(missing_ok=True)
                path.with_suffix(SIDECAR).unlink(missing_ok=True)
                self._engine_has.discard(path.name)
                dropped += 1
            self._refs.pop(key, None)
        if dropped:  # the engine's own prefix cache may still hold the blocks: a stale prefix is never served
            await self.vllm.engine.reset_prefix_cache()
            self._engine_has.clear()
        return dropped

    async def demote(self, keys: list[str]) -> int:
        """The engine's prefix cache cannot drop one prefix: its blocks go by the engine's own LRU. Files stay."""
        return 0

    async def drop_blocks(self, memory_ids: list[str]) -> int:
        return 0  # no composed blocks on this backend

    async def calibrate(self) -> tuple[int, list[dict[str, float]]]:
        """A prefix pays off from one whole block here: the connector saves whole blocks, and saving a prefix
        costs the step that computes it no more than a copy of its blocks."""
        self.calibrations += 1
        return self.vllm.block_size, []

    # ------------------------------------------------------------ adapters

    async def _ensure_adapter(
        self, ref: AdapterRef | None, weights: AdapterWeights | None
    ) -> tuple[AdapterStatus, float | None]:
        if ref is None:
            return "off", None
        if ref.adapter_id in self._loras:
            return "resident", 0.0
        if weights is None or weights.adapter.adapter_id != ref.adapter_id:
            raise Unavailable(f"worker {self.index} does not hold adapter {ref.adapter_id} and got no weights")
        return "loaded", await self.load_adapter(weights)

    async def load_adapter(self, weights: AdapterWeights) -> float:
        """Write the adapter's folder from the object store and load it into the engine; seconds taken."""
        from vllm.lora.request import LoRARequest

        from memos_ray.vllm.engine import write_adapter

        ref, mine = weights.adapter, self.vllm.identity
        if (ref.base_model.name, ref.base_model.file_sha256) != (mine.name, mine.file_sha256):
            raise Conflict(
                f"adapter {ref.adapter_id} was trained on {ref.base_model.key}; this worker runs {mine.key}",
                {"adapter_id": ref.adapter_id},
            )
        if ref.settings.rank > self.config.workers.vllm_max_lora_rank:
            raise InvalidInput(
                f"adapter {ref.adapter_id} has rank {ref.settings.rank}; this engine serves up to "
                f"workers.vllm_max_lora_rank {self.config.workers.vllm_max_lora_rank}"
            )
        start = time.perf_counter()
        state: dict[str, np.ndarray] = await weights.weights  # type: ignore[misc]
        folder = write_adapter(self.adapter_dir / ref.adapter_id, ref.settings, state)
        request = LoRARequest(ref.adapter_id, next(self._lora_ids), str(folder))
        await self.vllm.engine.add_lora(request)
        self._loras[ref.adapter_id] = request
        while len(self._loras) > self.config.workers.vllm_max_loras:  # the engine keeps max_loras: forget the oldest
            await self._remove_lora(next(iter(self._loras)))
        return time.perf_counter() - start

    async def _remove_lora(self, adapter_id: str) -> bool:
        request = self._loras.pop(adapter_id, None)
        if request is None:
            return False
        await self.vllm.engine.remove_lora(request.lora_int_id)
        shutil.rmtree(self.adapter_dir / adapter_id, ignore_errors=True)
        return True

    async def drop_adapters(self, adapter_ids: list[str]) -> int:
        dropped = 0
        for adapter_id in adapter_ids:
            dropped += await self._remove_lora(adapter_id)
        stale = [e.key for e in self._entries() if e.adapter in adapter_ids]
        await self.drop(stale)  # prefixes computed under a dropped adapter go with it
        return dropped

    async def adapters(self) -> list[str]:
        return list(self._loras)

    async def logits(self, token_ids: list[int], adapter_id: str | None) -> np.ndarray:
        raise InvalidInput("next-token logits need the transformers backend; this worker runs vllm")

    async def stats(self) -> dict[str, Any]:
        entries = self._entries()
        return {
            "worker": self.index,
            "backend": "vllm",
            "node": ray.get_runtime_context().get_node_id(),
            "model": self.vllm.identity.key,
            "resident": len(entries),
            "kv_bytes": sum(e.bytes for e in entries),
            "kv_budget": 0,
            "evictions": 0,
            "disk_loads": 0,
            "prefills": self.prefills,
            "prefill_tokens": self.prefill_tokens,
            "calibrations": self.calibrations,
            "chats": self.chats,
            "block_size": self.vllm.block_size,
            "adapters": {"resident": len(self._loras)},
            "adapter_ids": list(self._loras),
            "blocks": {},
            "block_keys": [],
        }


VLLMWorkerActor = actor_class(VLLMWorker, max_restarts=-1, max_task_retries=0)
"""The actor (each is its own process, its engine core another); ``VLLMWorker`` names its methods."""

__all__ = ["VLLMWorker", "VLLMWorkerActor"]
