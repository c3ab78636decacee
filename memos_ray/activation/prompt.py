"""What goes into a chat's KV-cached prefix: the rule of activation memory, below every entry point.

The cached prefix is the cubes' pinned memories (tag ``pinned``), and the retrieved memories ride
in the prompt after it as a system message; with ``prefix="retrieved"`` the retrieval result
itself (with the pinned ones) becomes the cached prefix, in a stable order so that equal sets
share one cache. The adapter is the first cube's active one.
"""

from __future__ import annotations

from collections.abc import Sequence

from memos_ray.activation.kvcache import render_memories
from memos_ray.types import AdapterRef, ChatMessage, ChatPlan, ChatRequest, MemoryItem, SearchHit

PINNED_TAG = "pinned"


def question_of(messages: Sequence[ChatMessage]) -> str:
    """What retrieval searches for: the last user message (or the last message)."""
    return next((m.content for m in reversed(messages) if m.role == "user"), messages[-1].content)


def retrieved_memories(pinned: Sequence[MemoryItem], hits: Sequence[SearchHit], top_k: int) -> list[MemoryItem]:
    """The best ``top_k`` hits over every cube, less those already pinned."""
    pinned_ids = {m.id for m in pinned}
    best = sorted(hits, key=lambda h: h.score, reverse=True)[:top_k]
    return [h.memory for h in best if h.memory.id not in pinned_ids]


def plan_chat(
    req: ChatRequest, pinned: Sequence[MemoryItem], retrieved: Sequence[MemoryItem], adapter: AdapterRef | None
) -> tuple[ChatPlan, list[MemoryItem]]:
    """The prompt split for activation memory, and the memories it uses (pinned first)."""
    messages = list(req.messages)
    if req.prefix == "retrieved":
        prefix = sorted([*pinned, *retrieved], key=lambda m: (m.created_at, m.id))
    else:
        prefix = list(pinned)
        if retrieved:
            context = "Relevant memories:\n" + "\n".join(f"- {m.text}" for m in retrieved)
            messages.insert(0, ChatMessage(role="system", content=context))
    plan = ChatPlan(
        adapter=adapter,
        prefix_text=render_memories(prefix),
        sources=[m.ref for m in prefix],
        messages=messages,
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        seed=req.seed,
        use_kv=req.use_activation_memory,
    )
    return plan, [*pinned, *retrieved]
