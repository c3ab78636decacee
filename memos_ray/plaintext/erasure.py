"""What a purge must reach inside its cube, so that the erased text is found nowhere afterwards.

- the memory itself, every version;
- its merge group: the near-duplicates merged into it, or the memory it was merged into and that one's
  other near-duplicates (they carry the same text);
- the memories made from any of these (``provenance.derived_from``: a remembered chat answer that used it),
  transitively;
- and, without erasing them, the *context* of other memories that quoted an erased text (a reply's context
  is the message before it): that context is cleared in every version.

Outside the cube the cascade takes it further (KV caches, adapters, usage); the store rewrites its table so
no file keeps the rows (:meth:`memos_ray.plaintext.storage.CubeStore.erase`).
"""

from __future__ import annotations

from collections.abc import Iterable

from memos_ray.types import MemoryItem

_SHORT = 12  # a text this short is matched only as a whole context (it would be found inside many others)


def reach(latest: dict[str, MemoryItem], memory_id: str) -> list[str]:
    """The ids a purge of ``memory_id`` erases, itself first."""
    merged_into: dict[str, list[str]] = {}
    derived: dict[str, list[str]] = {}
    for m in latest.values():
        if m.merged_into is not None:
            merged_into.setdefault(m.merged_into, []).append(m.id)
        for ref in m.provenance.derived_from:
            derived.setdefault(ref.memory_id, []).append(m.id)
    seen = [memory_id]
    todo = [memory_id]
    while todo:
        current = latest[todo.pop()]
        linked = [
            *merged_into.get(current.id, []),
            *derived.get(current.id, []),
            *(r.memory_id for r in current.merged_from),
        ]
        if current.merged_into is not None:
            linked.append(current.merged_into)
        for other in linked:
            if other in latest and other not in seen:
                seen.append(other)
                todo.append(other)
    return seen


def quotes(context: str | None, texts: Iterable[str]) -> bool:
    """Whether a context holds one of the erased texts (a short text only as the whole context, after its
    speaker: it would be found inside many others)."""
    if not context:
        return False
    context = context.strip()
    for text in (t.strip() for t in texts):
        if len(text) >= _SHORT and (text in context or text[:200] in context):
            return True
        if text and (context == text or context.endswith(f": {text}")):
            return True
    return False


__all__ = ["quotes", "reach"]
