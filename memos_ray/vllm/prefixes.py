"""How memos-ray names a memory prefix to vLLM (the request's ``kv_transfer_params``) and in the activation
store: shared by the worker, which asks, and the KV connector, which saves and loads (no vLLM import here)."""

from __future__ import annotations

import hashlib

import numpy as np

PREFIX_TOKENS = "memos_prefix_tokens"  # kv_transfer_params: the prompt's memory prefix, in tokens
PREFIX_NAME = "memos_prefix"  # kv_transfer_params: the file its whole blocks are kept in
FILE_KEY = "memos_file"  # in each file's metadata: its own name, so a copy moved elsewhere is filed the same
SUFFIX = ".safetensors"


def prefix_file(model_key: str, adapter: str | None, token_ids: list[int]) -> str:
    """The file name of a prefix's KV: the same tokens under another model or adapter are another file."""
    digest = hashlib.sha256(f"{model_key}|{adapter or '-'}|".encode())
    digest.update(np.asarray(token_ids, dtype=np.int64).tobytes())
    return digest.hexdigest()[:40] + SUFFIX


def valid_name(name: str) -> bool:
    """A file name made by :func:`prefix_file` (never a path: requests and moved files name it)."""
    stem = name[: -len(SUFFIX)]
    return name.endswith(SUFFIX) and len(stem) == 40 and all(c in "0123456789abcdef" for c in stem)


__all__ = ["FILE_KEY", "PREFIX_NAME", "PREFIX_TOKENS", "SUFFIX", "prefix_file", "valid_name"]
