"""Activation memory: the model's identity, KV cache entries, and what a chat asks and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from memos_ray.types.base import (
    Id,
    KVMode,
    MemoryRef,
    Strict,
)
from memos_ray.types.memory import (
    ChatMessage,
)
from memos_ray.types.model import ModelIdentity
from memos_ray.types.parametric import AdapterRef


class KVCacheEntry(Strict):
    key: str
    model: ModelIdentity
    adapter: str | None = None
    sources: list[MemoryRef]
    tokens: int
    bytes: int
    content_hash: str
    created_at: datetime


KVStatus = Literal["hit", "moved", "loaded", "built", "composed", "off"]


AdapterStatus = Literal["off", "resident", "loaded"]


class ChatRequest(Strict):
    cube_ids: list[Id] = Field(min_length=1, max_length=8)
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    use_activation_memory: bool = Field(True, description="inject the KV cache of the cubes' pinned memories")
    max_tokens: int = Field(64, ge=1, le=512)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy")
    seed: int = 0
    top_k: int = Field(5, ge=0, le=20, description="memories retrieved for the question, besides the pinned ones")
    prefix: Literal["pinned", "retrieved"] = Field(
        "pinned", description="what the cached prefix holds: the pinned memories, or pinned + retrieved"
    )
    layout: Literal["quoted", "system"] | None = Field(
        None,
        description="where retrieved memories go: quoted in the last user turn around the question, or in a "
        "system message before the conversation; None: the server's default (llm.layout)",
    )
    quote_top: int | None = Field(
        None,
        ge=0,
        le=20,
        description="quoted layout: how many of the best hits are quoted next to the question even when the cached "
        "prefix holds them (the others are quoted only when it does not); None: the server's default",
    )
    use_parametric_memory: bool = Field(
        True,
        description="run under a cube's active LoRA adapter, when it has one: over several cubes, the adapter of "
        "the cube whose best retrieved memory is closest to the question (the first cube without retrieval)",
    )
    stream: bool = Field(False, description="server-sent events: token events, then one done event")
    remember: bool = Field(
        False,
        description="write the user's turn and the answer back to the cube as dialogue memories (write role), "
        "with the chat id, model, adapter and the memories used as provenance; a chat over one cube only, so "
        "that a purge of any memory the answer used reaches the answer",
    )
    worker: int | None = Field(None, ge=0, description="run on this model worker (placement tests, benchmarks)")
    kv_mode: KVMode | None = Field(
        None,
        description="how activation memory serves this chat: prefix (a cached prefix of pinned memories or a "
        "working set), compose (the system turn holds the pinned and retrieved memories in retrieval order, each "
        "memory's KV block computed once and reused in any order), off (no KV); None: the server's llm.kv_mode. "
        "With compose, use_activation_memory=false prefills the same prompt whole (the comparison)",
    )
    recompute: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="compose: the share of each block's tokens recomputed against what precedes it (1: equals a "
        "full prefill); None: the server's llm.compose_recompute",
    )

    @model_validator(mode="after")
    def _remember_one_cube(self) -> ChatRequest:
        if self.remember and len(self.cube_ids) > 1:
            raise ValueError(
                "remember needs a chat over one cube: an answer stored in one cube could not be reached by a purge "
                "of the memories it used in another"
            )
        return self


class ComposeBlock(Strict):
    """One memory line of a composed system turn: its block is keyed by the memory's version and the line."""

    ref: MemoryRef
    line: str


class ChatPlan(Strict):
    """A prompt split for activation memory: the prefix (cached) and the rest (prefilled)."""

    cube_ids: list[str] = Field(default_factory=list, description="the cubes the prefix's memories come from")
    prefix_text: str
    sources: list[MemoryRef]
    messages: list[ChatMessage]
    max_tokens: int
    temperature: float
    seed: int
    use_kv: bool
    adapter: AdapterRef | None = Field(None, description="the adapter to run under (None: the base model)")
    blocks: list[ComposeBlock] | None = Field(
        None, description="compose: the system turn's memory lines, each a KV block (None: a prefix plan)"
    )
    recompute: float = 0.0


class KVInfo(Strict):
    """What activation memory did for one chat, as the worker that ran it saw it."""

    status: KVStatus = Field(
        description="hit (held here), moved (adopted from another worker through the object store), loaded "
        "(from disk), built (computed for this chat), off"
    )
    key: str | None = None
    tokens: int = Field(0, description="tokens in the cached prefix")
    worker: int
    moved_bytes: int = 0
    move_ms: float | None = Field(None, description="what the move added to this request (adopting the cache)")
    reused_tokens: int = Field(0, description="compose: prompt tokens whose KV came from memory blocks as they were")
    recomputed_tokens: int = Field(0, description="compose: block tokens recomputed against what precedes them")
    blocks_built: int = Field(0, description="compose: memory blocks this chat built (the others were reused)")


class ChatOutcome(Strict):
    """What a model worker answers for one chat."""

    text: str
    token_ids: list[int]
    ttft_ms: float
    total_ms: float
    prefill_tokens: int
    prompt_tokens: int
    kv: KVInfo
    adapter: str | None = None
    adapter_status: AdapterStatus = "off"
    adapter_ms: float | None = Field(None, description="loading the adapter (loaded) or switching to it (resident)")


class ChatResponse(Strict):
    agent: str = Field(description="the principal that asked (from its API key)")
    chat_id: str = Field("", description="names this exchange (the conversation id of its remembered memories)")
    remembered: list[MemoryRef] = Field(
        default_factory=list, description="remember: the user's turn and the answer, as stored"
    )
    text: str
    memories_used: list[MemoryRef]
    kv: KVInfo
    ttft_ms: float
    total_ms: float
    tokens_generated: int
    prefill_tokens: int
    prompt_tokens: int
    adapter: str | None = Field(None, description="the LoRA adapter the answer ran under (parametric memory)")
    adapter_status: AdapterStatus = "off"
    adapter_ms: float | None = None
