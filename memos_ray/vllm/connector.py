"""memos-ray's KV connector for vLLM: a chat's memory prefix, computed once, saved to the activation store and
loaded from it by any engine, after vLLM's example (shared-storage) connector.

A request opts in through ``SamplingParams.extra_args["kv_transfer_params"]``:
``{"memos_prefix_tokens": n, "memos_prefix": name}``, where ``n`` is the length of the prompt's memory prefix
(the system turn) and ``name`` the file the worker keys it by (:func:`prefix_file`: the model identity, the
adapter and the prefix's token ids). The prefix's whole blocks are the unit:

- **load**: when the engine's own prefix cache has fewer of those blocks than the file holds, the scheduler
  side reports them as external; the worker side reads the file once and writes each layer's keys and values
  into the request's paged blocks before the forward pass, so only the rest of the prompt is prefilled;
- **save**: a request whose prefix has no file yet, computed whole in its first step, has each layer's slice of
  the paged cache gathered as the layers run; the file is written once the step ends (to a temporary name,
  then renamed: a reader never sees half a file).

The file is one safetensors file of ``<layer name>`` tensors: data, never pickles, so it may be moved between
workers through the Ray object store as bytes (``actors/vllm_worker.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from memos_ray.vllm.prefixes import FILE_KEY, PREFIX_NAME, PREFIX_TOKENS, valid_name

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request


@dataclass
class _Transfer:
    path: str
    slots: torch.Tensor  # the paged-cache slot of each prefix token
    store: bool


@dataclass
class MemosConnectorMetadata(KVConnectorMetadata):  # type: ignore[misc]
    transfers: list[_Transfer] = field(default_factory=list)


def _slots(block_ids: list[int], block_size: int, tokens: int) -> torch.Tensor:
    blocks = torch.tensor(block_ids[: (tokens + block_size - 1) // block_size], dtype=torch.int64)
    offsets = torch.arange(block_size, dtype=torch.int64)
    return (blocks.reshape(-1, 1) * block_size + offsets.reshape(1, -1)).flatten()[:tokens]


class MemosKVConnector(KVConnectorBase_V1):  # type: ignore[misc]
    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self._block_size = int(vllm_config.cache_config.block_size)
        self._dir = Path(self._kv_transfer_config.get_from_extra_config("memos_kv_dir", "."))
        self._dir.mkdir(parents=True, exist_ok=True)
        self._wanted: dict[str, tuple[str, int]] = {}  # scheduler: request id -> (file, whole-block prefix tokens)
        self._loads: set[str] = set()  # scheduler: requests whose prefix is loaded in their first step
        self._saving: dict[str, dict[str, torch.Tensor]] = {}  # worker: file -> layer -> its prefix KV

    # ------------------------------------------------------------ scheduler side

    def _prefix(self, request: Request) -> tuple[str, int] | None:
        params = request.kv_transfer_params or {}
        name, tokens = params.get(PREFIX_NAME), int(params.get(PREFIX_TOKENS, 0))
        whole = tokens // self._block_size * self._block_size
        if not isinstance(name, str) or not valid_name(name) or whole <= 0:
            return None
        return name, whole

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int, bool]:
        prefix = self._prefix(request)
        if prefix is None:
            return 0, False
        self._wanted[request.request_id] = prefix
        name, whole = prefix
        if whole <= num_computed_tokens or not (self._dir / name).exists():
            return 0, False  # the engine's own cache has it, or nobody computed it yet
        return whole - num_computed_tokens, False

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        if num_external_tokens > 0:
            self._loads.add(request.request_id)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        meta = MemosConnectorMetadata()
        for new in scheduler_output.scheduled_new_reqs:
            prefix = self._wanted.get(new.req_id)
            if prefix is None:
                continue
            name, whole = prefix
            path = str(self._dir / name)
            slots = _slots(new.block_ids[0], self._block_size, whole)
            if new.req_id in self._loads:
                meta.transfers.append(_Transfer(path, slots, store=False))
                continue
            done = new.num_computed_tokens + scheduler_output.num_scheduled_tokens.get(new.req_id, 0)
            if done >= whole and not os.path.exists(path):  # computed whole in this step: saved as it runs
                meta.transfers.append(_Transfer(path, slots, store=True))
        self._loads.clear()
        return meta

    def request_finished(self, request: Request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        self._wanted.pop(request.request_id, None)
        return False, None

    # ------------------------------------------------------------ worker side

    def _meta(self) -> MemosConnectorMetadata:
        meta = self._get_connector_metadata()
        assert isinstance(meta, MemosConnectorMetadata)
        return meta

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        loads = [t for t in self._meta().transfers if not t.store]
        if not loads or forward_context.attn_metadata is None:
            return
        for transfer in loads:
            saved = safetensors.torch.load_file(transfer.path)
            blocks, offsets = transfer.slots // self._block_size, transfer.slots % self._block_size
            for name, layer in forward_context.no_compile_layers.items():
                paged = getattr(layer, "kv_cache", None)
                if paged is None or name not in saved:
                    continue
                paged[blocks, :, offsets] = saved[name].to(paged.device)  # [blocks, kv, block_size, ...] view

    def wait_for_layer_load(self, layer_name: str) -> None:
        return

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any) -> None:
        for transfer in self._meta().transfers:
            if transfer.store:
                blocks, offsets = transfer.slots // self._block_size, transfer.slots % self._block_size
                layers = self._saving.setdefault(transfer.path, {})
                layers[layer_name] = kv_layer[blocks, :, offsets].detach().cpu().contiguous()

    def wait_for_save(self) -> None:
        for path, layers in self._saving.items():
            tmp = f"{path}.{os.getpid()}.tmp"
            tokens = str(next(iter(layers.values())).shape[0])
            safetensors.torch.save_file(layers, tmp, metadata={"tokens": tokens, FILE_KEY: os.path.basename(path)})
            os.replace(tmp, path)
        self._saving.clear()


__all__ = ["MemosKVConnector"]
