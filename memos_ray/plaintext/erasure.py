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
    """The ids a purge of ``memory_id`` erases, itself first. A merge link counts only while both ends agree
    (a memory restored from a merge is no longer its survivor's, even if the survivor could not be told)."""

    def merged(dup: str, survivor: str) -> bool:
        d, s = latest.get(dup), latest.get(survivor)
        return (
            d is not None
            and s is not None
            and d.merged_into == survivor
            and any(r.memory_id == dup for r in s.merged_from)
        )

    derived: dict[str, list[str]] = {}
    for m in latest.values():
        for ref in m.provenance.derived_from:
            derived.setdefault(ref.memory_id, []).append(m.id)
    seen = [memory_id]
    todo = [memory_id]
    while todo:
        current = latest[todo.pop()]
        linked = [
            *derived.get(current.id, []),
            *(r.memory_id for r in current.merged_from if merged(r.memory_id, current.id)),
        ]
        if current.merged_into is not None and merged(current.id, current.merged_into):
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
