"""The MemReader: turns chat messages into memory items.

Each message becomes one memory (or several, when it is longer than ``max_chunk_chars``:
split on sentence ends, each chunk recording its place). The speaker (or the role when no
speaker is named) and the message time are kept on every item, and the preceding message
becomes its ``context``: a reply is often found by the words of what it replies to.
"""

from __future__ import annotations

from memos_ray.plaintext.text import index_text, split_text
from memos_ray.types import MAX_CONTEXT_CHARS, ChatMessage, MemoryCreate, MessagesCreate, SourceIn, SourceType


def context_of(msg: ChatMessage) -> str:
    """What a message gives the one after it as context (also for a client sending a conversation in parts)."""
    return index_text(msg.content, msg.speaker or msg.role)[:MAX_CONTEXT_CHARS]


def read_messages(req: MessagesCreate) -> list[MemoryCreate]:
    items: list[MemoryCreate] = []
    previous = req.context
    for msg in req.messages:
        chunks = split_text(msg.content, req.max_chunk_chars)
        for index, chunk in enumerate(chunks):
            metadata: dict[str, str | int | float | bool | None] = {}
            if len(chunks) > 1:
                metadata = {"chunk_index": index, "chunk_count": len(chunks)}
            items.append(
                MemoryCreate(
                    text=chunk,
                    context=previous,
                    kind=req.kind,
                    tags=req.tags,
                    metadata=metadata,
                    said_at=msg.timestamp,
                    source=SourceIn(
                        source_type=SourceType.message,
                        source_id=msg.id,
                        conversation_id=req.conversation_id,
                        speaker=msg.speaker or msg.role,
                        role=msg.role,
                    ),
                )
            )
        # The next message is read in the light of this one (an answer after its question).
        previous = context_of(msg)
    return items
