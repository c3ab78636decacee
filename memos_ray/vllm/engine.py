"""A vLLM engine on the model workers' LLM (the ``[vllm]`` extra; ``workers.backend: vllm``).

The same model folder the transformers backend loads (:func:`memos_ray.llm.resolve_model`: the packaged model
converted once, a Hugging Face folder, a GGUF converted once), the same tokenizer and chat template, so a chat's
prompt is the same token ids under either backend. The engine batches concurrent chats, keeps its own prefix
cache, serves several LoRA adapters at once (``LoRARequest``), and saves and loads memory prefixes through
:class:`memos_ray.vllm.connector.MemosKVConnector`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memos_ray.config import MemosConfig
from memos_ray.llm import model_name, resolve_model
from memos_ray.parametric.training import lora_config
from memos_ray.types import AdapterSettings, ModelIdentity

CONNECTOR_MODULE = "memos_ray.vllm.connector"


@dataclass
class VLLMEngine:
    engine: Any  # vllm.v1.engine.async_llm.AsyncLLM
    tokenizer: Any  # the model folder's Hugging Face tokenizer (the chat template's)
    identity: ModelIdentity
    kv_dir: Path  # the connector's files: this identity's memory prefixes
    block_size: int
    max_model_len: int


def kv_dir(config: MemosConfig, identity: ModelIdentity) -> Path:
    safe = identity.key.replace("/", "_").replace(":", "_").replace("@", "_")
    return config.storage.data_dir / "kv" / "vllm" / safe


def start_engine(config: MemosConfig) -> VLLMEngine:
    """Start an engine (30-60 s on CPU, ``enforce_eager``): the engine core runs in a process of its own."""
    from transformers import AutoTokenizer
    from vllm.config import KVTransferConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    llm, workers = config.llm, config.workers
    folder, sha = resolve_model(llm, llm.cache_dir or config.storage.data_dir / "models")
    identity = ModelIdentity(name=model_name(llm), file_sha256=sha, dtype=llm.dtype, backend="vllm")
    kv = kv_dir(config, identity)
    kv.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(workers.vllm_kv_cache_gb))
    os.environ.setdefault("VLLM_CACHE_ROOT", str(config.storage.data_dir / "vllm-cache"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.chat_template is None:
        raise ValueError(f"model {llm.model!r} has no chat template (memos-ray chats through the model's own)")
    args = AsyncEngineArgs(
        model=str(folder),
        dtype=llm.dtype,
        enforce_eager=True,
        seed=0,
        max_model_len=workers.vllm_max_model_len,
        max_num_batched_tokens=workers.vllm_max_model_len,  # a prefix is computed whole in one step: then saved
        block_size=workers.vllm_block_size,  # a prefix is saved and reused in whole blocks
        enable_prefix_caching=True,
        enable_lora=True,
        max_loras=workers.vllm_max_loras,
        max_lora_rank=workers.vllm_max_lora_rank,
        kv_transfer_config=KVTransferConfig(
            kv_connector="MemosKVConnector",
            kv_connector_module_path=CONNECTOR_MODULE,
            kv_role="kv_both",
            kv_connector_extra_config={"memos_kv_dir": str(kv)},
        ),
        disable_log_stats=True,
    )
    engine = AsyncLLM.from_engine_args(args)
    block_size = int(engine.vllm_config.cache_config.block_size)
    return VLLMEngine(engine, tokenizer, identity, kv, block_size, workers.vllm_max_model_len)


def write_adapter(folder: Path, settings: AdapterSettings, state: dict[str, np.ndarray]) -> Path:
    """A peft adapter folder (``adapter_config.json``, ``adapter_model.safetensors``) from a state dict, for
    ``LoRARequest``: written to a temporary name, then renamed."""
    from safetensors.numpy import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = lora_config(settings).to_dict()
    config["target_modules"] = sorted(config["target_modules"])  # a set in peft's dict
    (tmp / "adapter_config.json").write_text(json.dumps(config, default=str))
    save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}, tmp / "adapter_model.safetensors"
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


__all__ = ["VLLMEngine", "kv_dir", "start_engine", "write_adapter"]
