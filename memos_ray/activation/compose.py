"""Composable activation memory: each memory's KV block computed once, assembled in any order at chat time.

A prompt in the *system* layout is the system turn's head (the preamble), one line per memory, then the rest (the
end of the system turn, the conversation, the generation prompt). Tokenised piece by piece
(:func:`compose_prompt`), the pieces concatenate to the very ids a full prefill sees.

- **A block** is one memory line's KV, computed once *after the head* (:func:`build_block`), at the positions right
  after it. Computing a block in the context of the shared head, not alone, is what keeps reuse faithful: the head
  holds the tokens every later one attends to most (the first tokens act as attention sinks), so a block computed
  alone at position 0 makes its first token a second sink and answers drift, while one computed after the head
  sees the same sink as in the full prompt (measured in ``benchmarks/compose.py``). A block depends on the model,
  the adapter, the head and the memory's rendered line, never on the other memories or their order.
- **Assembly** (:func:`assemble`): the head's cache, then each block with its keys rotated from where it was built
  to where it now sits (RoPE: a rotation by the position difference; values do not move), then a chosen share of
  each block's tokens recomputed against everything before them (its first tokens: the ones the missing
  cross-memory attention affects most, after EPIC), so that at a share of 1 the cache equals a full prefill's.
  Generation then prefills only the rest.

Tensors stay plain: ``k.<layer>`` / ``v.<layer>`` of shape (1, kv heads, tokens, head dim), as in
:mod:`memos_ray.activation.kvcache`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from memos_ray.activation.kvcache import SYSTEM_PREAMBLE, prefill, to_cache
from memos_ray.types import ChatMessage

Tensors = dict[str, Any]


@dataclass(frozen=True)
class ComposedPrompt:
    """A system-layout prompt as token pieces: ``head + blocks[0] + ... + tail`` is the full prompt's ids."""

    head: list[int]
    blocks: list[list[int]]
    tail: list[int]

    @property
    def ids(self) -> list[int]:
        return [*self.head, *(t for b in self.blocks for t in b), *self.tail]

    @property
    def prefix_len(self) -> int:
        return len(self.head) + sum(len(b) for b in self.blocks)


@dataclass(frozen=True)
class Assembly:
    """What building a chat's cache from blocks took: tokens reused, recomputed."""

    tensors: Tensors
    reused_tokens: int
    recomputed_tokens: int


def compose_prompt(tokenizer: Any, lines: Sequence[str], messages: Sequence[ChatMessage]) -> ComposedPrompt:
    """The prompt whose system turn is the preamble and ``lines`` (one per memory), tokenised in pieces. Raises
    ValueError when the pieces do not tokenise to the whole prompt's ids (a tokenizer that merges across lines)."""
    content = "\n".join([SYSTEM_PREAMBLE, *lines])
    turns = [{"role": "system", "content": content}, *({"role": m.role, "content": m.content} for m in messages)]
    full = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    cut = full.index(SYSTEM_PREAMBLE) + len(SYSTEM_PREAMBLE)
    pieces = ["\n" + line for line in lines]
    tail = full[cut + sum(len(p) for p in pieces) :]

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    composed = ComposedPrompt(encode(full[:cut]), [encode(p) for p in pieces], encode(tail))
    if composed.ids != encode(full):
        raise ValueError("this tokenizer merges tokens across memory lines: blocks cannot be composed")
    return composed


def build_head(model: Any, head: Sequence[int]) -> Tensors:
    return prefill(model, head)


def build_block(model: Any, head_kv: Tensors, head_len: int, block: Sequence[int]) -> Tensors:
    """One memory line's KV, computed after the head (at positions ``head_len...``), without the head's part."""
    import torch

    cache = to_cache(head_kv)
    with torch.inference_mode():
        positions = torch.arange(head_len, head_len + len(block)).unsqueeze(0)
        model(input_ids=torch.tensor([list(block)]), past_key_values=cache, use_cache=True, position_ids=positions)
    return {
        f"{kind}.{i}": getattr(layer, "keys" if kind == "k" else "values")[:, :, head_len:].contiguous()
        for i, layer in enumerate(cache.layers)
        for kind in ("k", "v")
    }


def rotate_keys(model: Any, keys: Any, delta: int) -> Any:
    """Keys rotated by ``delta`` positions (RoPE composes by adding angles), so a block built at one offset can
    sit at another."""
    import torch

    if delta == 0:
        return keys
    positions = torch.full((1, keys.shape[2]), delta, dtype=torch.long)
    cos, sin = decoder_of(model).rotary_emb(keys, positions)
    cos, sin = cos.unsqueeze(1).to(keys.dtype), sin.unsqueeze(1).to(keys.dtype)
    half = keys.shape[-1] // 2
    rotated_half = torch.cat((-keys[..., half:], keys[..., :half]), dim=-1)
    return keys * cos + rotated_half * sin


def decoder_of(model: Any) -> Any:
    """The decoder stack (embeddings, rotary embedding, layers) of a causal LM, or of one wrapped by peft."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def recompute_positions(prompt: ComposedPrompt, share: float) -> list[int]:
    """``select="first"``: the first ``share`` of each block's tokens (EPIC's rule: a block's first tokens miss
    the most when the memories before it were never seen)."""
    positions: list[int] = []
    offset = len(prompt.head)
    for block in prompt.blocks:
        n = min(len(block), math.ceil(share * len(block))) if share > 0 else 0
        positions.extend(range(offset, offset + n))
        offset += len(block)
    return positions


def deviating_positions(
    model: Any, prompt: ComposedPrompt, keys: list[Any], values: list[Any], share: float
) -> list[int]:
    """``select="deviation"`` (CacheBlend's rule): the ``share`` of block tokens whose reused KV deviates most from
    the true one at the second layer, found by running the whole prefix through the first two layers (about
    2/L of a prefill); at the first layer a token's KV depends on the token and its position only."""
    import torch
    from transformers import DynamicCache
    from transformers.masking_utils import create_causal_mask

    head_len, n = len(prompt.head), prompt.prefix_len
    want = min(n - head_len, math.ceil(share * (n - head_len))) if share > 0 else 0
    if want == 0:
        return []
    decoder = decoder_of(model)
    cache = DynamicCache()
    with torch.inference_mode():
        hidden = decoder.embed_tokens(torch.tensor([prompt.ids[:n]]))
        positions = torch.arange(n).unsqueeze(0)
        mask = create_causal_mask(
            config=decoder.config,
            inputs_embeds=hidden,
            attention_mask=None,
            past_key_values=cache,
            position_ids=positions,
        )
        embeddings = decoder.rotary_emb(hidden, position_ids=positions)
        for layer in decoder.layers[:2]:
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_embeddings=embeddings,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
    second: Any = cache.layers[1]
    true_k, true_v = second.keys, second.values
    deviation = ((true_k - keys[1]).float() ** 2).sum(dim=(0, 1, 3)) + ((true_v - values[1]).float() ** 2).sum(
        dim=(0, 1, 3)
    )
    deviation[:head_len] = -1.0  # the head is exact
    return sorted(int(i) for i in torch.topk(deviation, want).indices)


def assemble(
    model: Any,
    prompt: ComposedPrompt,
    head_kv: Tensors,
    blocks: Sequence[Tensors],
    share: float,
    select: Literal["first", "deviation"] = "deviation",
) -> Assembly:
    """The prefix cache (head + memory lines) of ``prompt``, from the head's cache and each line's block.

    ``blocks[i]`` was built by :func:`build_block` after the same head. Recomputing: the chosen tokens run once
    more at their own positions, each attending to the head, to the reused KV before it and to the fresh KV of the
    chosen tokens before it (a custom mask), and their fresh KV replaces the reused one, layer by layer."""
    import torch

    layers = len(head_kv) // 2
    head_len = len(prompt.head)
    keys = [[head_kv[f"k.{i}"]] for i in range(layers)]
    values = [[head_kv[f"v.{i}"]] for i in range(layers)]
    offset = head_len
    for ids, block in zip(prompt.blocks, blocks, strict=True):
        if block["k.0"].shape[2] != len(ids):
            raise ValueError(f"a block of {block['k.0'].shape[2]} tokens for a line of {len(ids)}")
        for i in range(layers):
            keys[i].append(rotate_keys(model, block[f"k.{i}"], offset - head_len))
            values[i].append(block[f"v.{i}"])
        offset += len(ids)
    k_all = [torch.cat(k, dim=2) for k in keys]
    v_all = [torch.cat(v, dim=2) for v in values]
    if select == "first":
        chosen = recompute_positions(prompt, share)
    else:
        chosen = deviating_positions(model, prompt, k_all, v_all, share)
    if chosen:
        _recompute(model, prompt, k_all, v_all, chosen)
    tensors = {f"{kind}.{i}": t[i] for kind, t in (("k", k_all), ("v", v_all)) for i in range(layers)}
    return Assembly(tensors, reused_tokens=prompt.prefix_len - head_len - len(chosen), recomputed_tokens=len(chosen))


def _recompute(model: Any, prompt: ComposedPrompt, keys: list[Any], values: list[Any], chosen: list[int]) -> None:
    import torch

    n, q = keys[0].shape[2], len(chosen)
    stale = torch.zeros(n, dtype=torch.bool)
    stale[chosen] = True
    pos = torch.tensor(chosen)
    sees_reused = (torch.arange(n).unsqueeze(0) < pos.unsqueeze(1)) & ~stale.unsqueeze(0)  # (q, n)
    sees_fresh = torch.ones(q, q, dtype=torch.bool).tril()  # the chosen tokens before it, and itself
    allowed = torch.cat([sees_reused, sees_fresh], dim=1)
    dtype = keys[0].dtype
    mask = torch.zeros(1, 1, q, n + q, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    cache = to_cache({f"{kind}.{i}": t[i] for kind, t in (("k", keys), ("v", values)) for i in range(len(keys))})
    ids = prompt.ids
    with torch.inference_mode():
        model(
            input_ids=torch.tensor([[ids[p] for p in chosen]]),
            past_key_values=cache,
            use_cache=True,
            position_ids=pos.unsqueeze(0),
            attention_mask=mask,
        )
    for i, layer in enumerate(cache.layers):
        keys[i] = keys[i].clone()
        values[i] = values[i].clone()
        keys[i][:, :, chosen] = layer.keys[:, :, n:]
        values[i][:, :, chosen] = layer.values[:, :, n:]


__all__ = [
    "Assembly",
    "ComposedPrompt",
    "assemble",
    "build_block",
    "build_head",
    "compose_prompt",
    "decoder_of",
    "deviating_positions",
    "recompute_positions",
    "rotate_keys",
]
