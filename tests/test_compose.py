"""Composable activation memory on the real model (fp32): memory blocks built once after the shared head,
assembled in any order with their keys rotated, a share of their tokens recomputed."""

from __future__ import annotations

import pytest
import torch

from memos_ray.activation import compose
from memos_ray.activation import kvcache as kv
from memos_ray.llm import LoadedModel
from memos_ray.types import ChatMessage

pytestmark = pytest.mark.slow  # loads the real LLM

FACTS = [
    "- Dana owns the billing service.",
    "- [2023-05-08] Caroline: I went to a support group yesterday.",
    "- The staging database is called Heron.",
    "- Code freeze starts on December 15.",
    "- Eli prefers tea over coffee, and 12:30 lunches.",
]
ASK = [ChatMessage(content="What is the staging database called?")]


def greedy(llm: LoadedModel, prompt: compose.ComposedPrompt, tensors: kv.Tensors | None, n: int = 16) -> list[int]:
    ids = prompt.ids
    head = ids[: prompt.prefix_len]
    stream = kv.generate(llm.model, llm.tokenizer.eos_token_id, head, ids[prompt.prefix_len :], tensors, n)
    return [t for t, _ in stream]


def blocks_of(llm: LoadedModel, prompt: compose.ComposedPrompt) -> tuple[kv.Tensors, list[kv.Tensors]]:
    head = compose.build_head(llm.model, prompt.head)
    return head, [compose.build_block(llm.model, head, len(prompt.head), b) for b in prompt.blocks]


def test_the_pieces_are_the_whole_prompt(llm: LoadedModel) -> None:
    prompt = compose.compose_prompt(llm.tokenizer, FACTS, ASK)
    system = "\n".join([kv.SYSTEM_PREAMBLE, *FACTS])
    prefix, suffix = kv.split_prompt(llm.tokenizer, system, ASK)
    assert prompt.ids == prefix + suffix and len(prompt.blocks) == len(FACTS)


def test_full_recompute_equals_a_full_prefill_in_any_order(llm: LoadedModel) -> None:
    built = compose.compose_prompt(llm.tokenizer, FACTS, ASK)
    head, blocks = blocks_of(llm, built)  # built once, in one order
    order = [4, 2, 0, 3, 1]
    prompt = compose.compose_prompt(llm.tokenizer, [FACTS[i] for i in order], ASK)
    full = greedy(llm, prompt, None)
    whole = compose.assemble(llm.model, prompt, head, [blocks[i] for i in order], share=1.0)
    assert whole.recomputed_tokens == sum(len(b) for b in prompt.blocks) and whole.reused_tokens == 0
    assert greedy(llm, prompt, whole.tensors) == full and len(full) > 3
    # reused as built (no recompute): the same answer here, from blocks that never saw each other
    reused = compose.assemble(llm.model, prompt, head, [blocks[i] for i in order], share=0.0)
    assert reused.recomputed_tokens == 0 and reused.reused_tokens == whole.recomputed_tokens
    assert llm.tokenizer.decode(greedy(llm, prompt, reused.tensors)).startswith("The staging database is called Heron")


def test_one_block_at_the_start_is_the_prefix_path(llm: LoadedModel) -> None:
    prompt = compose.compose_prompt(llm.tokenizer, FACTS[2:3], ASK)
    head, blocks = blocks_of(llm, prompt)
    system = "\n".join([kv.SYSTEM_PREAMBLE, FACTS[2]])
    prefix, _ = kv.split_prompt(llm.tokenizer, system, ASK)
    assembled = compose.assemble(llm.model, prompt, head, blocks, share=0.0)
    cached = kv.prefill(llm.model, prefix)
    n = prompt.prefix_len
    for name, tensor in assembled.tensors.items():  # the same KV as the prefix built whole (its first n tokens)
        assert torch.allclose(tensor, cached[name][:, :, :n], atol=1e-5), name
    assert greedy(llm, prompt, assembled.tensors) == greedy(llm, prompt, None)


def test_rotation_moves_a_block_and_back(llm: LoadedModel) -> None:
    prompt = compose.compose_prompt(llm.tokenizer, FACTS[:2], ASK)
    head, blocks = blocks_of(llm, prompt)
    keys = blocks[1]["k.3"]
    there = compose.rotate_keys(llm.model, keys, 37)
    assert not torch.allclose(there, keys) and torch.allclose(
        compose.rotate_keys(llm.model, there, -37), keys, atol=1e-5
    )
    # a block built at the head's end and moved behind another equals that line's KV prefilled in place
    moved = compose.rotate_keys(llm.model, keys, len(prompt.blocks[0]))
    in_place = compose.assemble(llm.model, prompt, head, blocks, share=0.0).tensors["k.0"]
    start = len(prompt.head) + len(prompt.blocks[0])
    assert torch.allclose(
        compose.rotate_keys(llm.model, blocks[1]["k.0"], len(prompt.blocks[0])), in_place[:, :, start:]
    )
    assert moved.shape == keys.shape


def test_deviation_picks_block_tokens_and_a_full_share_is_exact(llm: LoadedModel) -> None:
    prompt = compose.compose_prompt(llm.tokenizer, FACTS, ASK)
    head, blocks = blocks_of(llm, prompt)
    layers = len(head) // 2
    keys = [torch.cat([head[f"k.{i}"], *(b[f"k.{i}"] for b in blocks)], dim=2) for i in range(layers)]
    values = [torch.cat([head[f"v.{i}"], *(b[f"v.{i}"] for b in blocks)], dim=2) for i in range(layers)]
    chosen = compose.deviating_positions(llm.model, prompt, keys, values, 0.2)
    block_tokens = prompt.prefix_len - len(prompt.head)
    assert len(chosen) == -(-block_tokens // 5) and min(chosen) >= len(prompt.head) and chosen == sorted(set(chosen))
    # the first block sits where it was built: its first token deviates not at all, a later block's do
    assert len(prompt.head) not in chosen
    every = compose.assemble(llm.model, prompt, head, blocks, share=1.0, select="deviation")
    assert greedy(llm, prompt, every.tensors) == greedy(llm, prompt, None)


def test_recompute_takes_the_first_tokens_of_each_block(llm: LoadedModel) -> None:
    prompt = compose.compose_prompt(llm.tokenizer, FACTS[:2], ASK)
    first, second = len(prompt.blocks[0]), len(prompt.blocks[1])
    chosen = compose.recompute_positions(prompt, 0.25)
    h = len(prompt.head)
    assert chosen[0] == h and h + first in chosen and len(chosen) == -(-first // 4) + -(-second // 4)
    assert compose.recompute_positions(prompt, 0.0) == []
