"""What goes into a chat's KV-cached prefix and what rides after it: the rule of activation memory, below
every entry point (REST, the OpenAI-compatible route, MCP, the MemScheduler's builds ahead of need).

The cached prefix is the system turn: the cubes' pinned memories (tag ``pinned``, an explicit override),
then their working sets (chosen by the MemScheduler from usage) when the chat's retrieval falls in one.
With ``prefix="retrieved"`` the retrieval result itself (with the pinned ones) becomes the prefix, in a
stable order so that equal sets share one cache.

After the prefix, the layout (``LLMConfig.layout``, measured by ``benchmarks/grounding.py``) decides where
the retrieved memories go. Every retrieved memory reaches the prompt: in the cached prefix, or prefilled after
it. A small model grounds on evidence that sits right before the question, while a reusable prefix must come
first; ``quoted`` keeps both: inside the last user turn, between the question and the question repeated, it
quotes (numbered, best first) the best ``quote_top`` hits, even when the prefix holds them (each costs its
tokens in prefill); the other hits the prefix lacks go in a system message before the conversation, so a chat
whose memories were only retrieved has the shape of one whose memories are cached (a list of five quoted hits
made the model start a list instead of answering). ``system`` is the wave-1 layout: every hit the prefix lacks
goes in that system message, and none is repeated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from memos_ray.activation.kvcache import memory_line, render_memories
from memos_ray.types import (
    AdapterRef,
    ChatMessage,
    ChatPlan,
    ChatRequest,
    ComposeBlock,
    KVMode,
    MemoryItem,
    Recall,
    SearchHit,
)

PINNED_TAG = "pinned"

Layout = Literal["quoted", "system"]


@dataclass(frozen=True)
class PlannedChat:
    """A chat's prompt split, and which memories went where (what the MemScheduler counts as use)."""

    plan: ChatPlan
    in_prefix: list[MemoryItem]
    in_prompt: list[MemoryItem]
    retrieved: list[MemoryItem]

    @property
    def used(self) -> list[MemoryItem]:
        """Every memory the answer could draw on, prefix first, once each."""
        seen: dict[str, MemoryItem] = {}
        for m in [*self.in_prefix, *self.in_prompt]:
            seen.setdefault(m.id, m)
        return list(seen.values())


def question_of(messages: Sequence[ChatMessage]) -> str:
    """What retrieval searches for: the last user message (or the last message)."""
    return next((m.content for m in reversed(messages) if m.role == "user"), messages[-1].content)


def best_hits(hits: Sequence[SearchHit], top_k: int) -> list[MemoryItem]:
    """The best ``top_k`` hits over every cube, best first."""
    return [h.memory for h in sorted(hits, key=lambda h: h.score, reverse=True)[:top_k]]


def prefix_plan(
    cube_ids: Sequence[str], prefix: Sequence[MemoryItem], adapter: AdapterRef | None, use_kv: bool = True
) -> ChatPlan:
    """The plan of a prefix alone (what the MemScheduler builds ahead of need): the same rendering and key
    as a chat on it."""
    return ChatPlan(
        cube_ids=list(cube_ids),
        adapter=adapter,
        prefix_text=render_memories(prefix),
        sources=[m.ref for m in prefix],
        messages=[ChatMessage(role="user", content="(prefix only)")],  # a build tokenizes the prefix alone
        max_tokens=1,
        temperature=0.0,
        seed=0,
        use_kv=use_kv,
    )


def _quoted(question: str, hits: Sequence[MemoryItem]) -> str:
    lines = "\n".join(f"{i}. {m.text}" for i, m in enumerate(hits, 1))
    return (
        f"Question: {question}\n\nRelevant memories:\n{lines}\n\n"
        f"Using the memories above, answer the question: {question}"
    )


def compose_plan(
    req: ChatRequest,
    pinned: Sequence[MemoryItem],
    retrieved: Sequence[MemoryItem],
    adapter: AdapterRef | None,
    recompute: float,
) -> PlannedChat:
    """``kv_mode="compose"``: the system turn holds the pinned memories, then the retrieved ones in retrieval
    order (each once), one line each, and each line is a KV block the worker reuses wherever it sits
    (:mod:`memos_ray.activation.compose`); the conversation follows as it is."""
    lines = list({m.id: m for m in [*pinned, *retrieved]}.values())
    plan = ChatPlan(
        cube_ids=list(req.cube_ids),
        adapter=adapter,
        prefix_text=render_memories(lines),
        sources=[m.ref for m in lines],
        messages=list(req.messages),
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        seed=req.seed,
        use_kv=req.use_activation_memory,
        blocks=[ComposeBlock(ref=m.ref, line=memory_line(m)) for m in lines],
        recompute=recompute,
    )
    return PlannedChat(plan=plan, in_prefix=lines, in_prompt=[], retrieved=list(retrieved))


def cubes_kv_mode(recalls: Sequence[Recall]) -> KVMode | None:
    """The KV mode the chat's cubes ask for when they agree (each cube's ``kv_mode``); None: the server's."""
    modes = {r.kv_mode for r in recalls}
    return modes.pop() if len(modes) == 1 else None


def plan_chat(
    req: ChatRequest,
    pinned: Sequence[MemoryItem],
    working: Sequence[MemoryItem],
    hits: Sequence[SearchHit],
    adapter: AdapterRef | None,
    layout: Layout = "quoted",
    quote_top: int = 1,
    kv_mode: KVMode = "prefix",
    recompute: float = 0.1,
) -> PlannedChat:
    """The prompt split for activation memory (``pinned`` and ``working`` in the cubes' order). ``kv_mode`` (the
    cubes' default, else the server's) and ``recompute`` (the server's) are defaults; the request's own win."""
    retrieved = best_hits(hits, req.top_k) if req.top_k else []
    mode = req.kv_mode or kv_mode
    if mode == "compose":
        return compose_plan(req, pinned, retrieved, adapter, recompute if req.recompute is None else req.recompute)
    if mode == "off":
        req = req.model_copy(update={"use_activation_memory": False})
    pinned_ids = {m.id for m in pinned}
    working_ids = {m.id for m in working}
    if req.prefix == "retrieved":
        prefix = sorted({m.id: m for m in [*pinned, *retrieved]}.values(), key=lambda m: (m.created_at, m.id))
    elif any(m.id in working_ids for m in retrieved):  # the retrieval falls in a working set: it is the prefix
        prefix = [*pinned, *(m for m in working if m.id not in pinned_ids)]
    else:
        prefix = list(pinned)
    messages = list(req.messages)
    in_prefix_ids = {m.id for m in prefix}
    quoted = retrieved[:quote_top] if layout == "quoted" else []
    background = [m for m in retrieved[len(quoted) :] if m.id not in in_prefix_ids]
    if background:  # the hits the prefix lacks, in a system message before the conversation
        context = "Relevant memories:\n" + "\n".join(f"- {m.text}" for m in background)
        messages.insert(0, ChatMessage(role="system", content=context))
    if quoted:
        users = [i for i, m in enumerate(messages) if m.role == "user"]
        last = users[-1] if users else len(messages) - 1
        messages[last] = ChatMessage(role=messages[last].role, content=_quoted(messages[last].content, quoted))
    in_prompt = [*quoted, *background]
    plan = ChatPlan(
        cube_ids=list(req.cube_ids),
        adapter=adapter,
        prefix_text=render_memories(prefix),
        sources=[m.ref for m in prefix],
        messages=messages,
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        seed=req.seed,
        use_kv=req.use_activation_memory,
    )
    return PlannedChat(plan=plan, in_prefix=prefix, in_prompt=in_prompt, retrieved=retrieved)
