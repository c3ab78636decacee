"""Bring your own model: ``llm.model`` as a local Hugging Face folder or a GGUF file, loaded with its own chat
template, under an identity of its own (name, weights' hash, dtype) that keys every cache, without Ray.

The user's model here is the packaged SmolLM2's converted folder, loaded *by path*: the same weights, so the
same answers, but another identity, so nothing computed under one is used under the other."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from memos_ray.activation import kvcache as kv
from memos_ray.config import PACKAGED_MODEL, LLMConfig
from memos_ray.llm import LoadedModel, converted_model, gguf_path, load_model, model_name, resolve_model
from memos_ray.types import ChatMessage
from tests.helpers import MODELS

pytestmark = pytest.mark.slow  # loads the real LLM


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)


def _packaged_folder() -> Path:
    return converted_model(MODELS, PACKAGED_MODEL)[0]


def test_a_folder_by_path_loads_as_its_own_model(llm: LoadedModel, tmp_path: Path) -> None:
    folder = tmp_path / "my-smollm"
    shutil.copytree(_packaged_folder(), folder, copy_function=_link_or_copy)  # never written below
    config = LLMConfig(model=str(folder), dtype="float32", cache_dir=tmp_path / "cache")
    own = load_model(config, tmp_path / "unused")
    assert own.identity.name == "my-smollm" == model_name(config) and own.identity.dtype == "float32"
    assert own.identity.file_sha256 != llm.identity.file_sha256  # its safetensors' hash, not the GGUF's
    assert own.identity.key != llm.identity.key
    # the model's own chat template, the same weights: the same greedy answer as the packaged model
    prefix, suffix = kv.split_prompt(own.tokenizer, kv.SYSTEM_PREAMBLE, [ChatMessage(role="user", content="Hi!")])
    eos = int(own.tokenizer.eos_token_id)
    mine = [t for t, _ in kv.generate(own.model, eos, prefix, suffix, None, 8)]
    packaged = [t for t, _ in kv.generate(llm.model, eos, prefix, suffix, None, 8)]
    assert mine == packaged
    # a prefix cached under one model is keyed apart from the same text under the other
    assert kv.cache_key(own.identity, None, "x")[0] != kv.cache_key(llm.identity, None, "x")[0]

    # the hash is remembered by the files' names, sizes and mtimes; changed weights are hashed again
    memo = list((tmp_path / "cache" / "hashes").iterdir())
    assert len(memo) == 1 and memo[0].read_text() == own.identity.file_sha256
    assert resolve_model(config, tmp_path / "cache") == (folder, own.identity.file_sha256)
    (folder / "extra.safetensors").write_bytes(b"\0" * 16)
    assert resolve_model(config, tmp_path / "cache")[1] != own.identity.file_sha256


def test_a_gguf_file_by_path_is_converted_once_under_its_own_name(tmp_path: Path) -> None:
    source = gguf_path()
    cache = tmp_path / "cache"
    _, sha = converted_model(MODELS, PACKAGED_MODEL)
    # the conversion this path would make, already made: link the packaged one where it would go
    cache.mkdir()
    (cache / f"{source.stem}-{sha[:12]}").symlink_to(_packaged_folder())
    config = LLMConfig(model=str(source))
    assert resolve_model(config, cache) == (cache / f"{source.stem}-{sha[:12]}", sha)
    assert model_name(config) == source.stem


def test_a_model_that_is_not_there_or_not_a_model_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nor a path that exists"):
        resolve_model(LLMConfig(model=str(tmp_path / "nowhere")), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"config\.json"):
        resolve_model(LLMConfig(model=str(tmp_path / "empty")), tmp_path)
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"no \*\.safetensors"):
        resolve_model(LLMConfig(model=str(tmp_path / "empty")), tmp_path)
