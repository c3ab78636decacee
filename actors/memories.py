"""Writing memories, for every entry point: redaction on ingest (before anything is embedded or
stored), the MemReader for chat messages, the embedding, and the cube's durable write. The HTTP routes
(and later MCP or a batch import) call this and audit what it reports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from actors.cube import CubeHost
from actors.cubes import Cubes
from memos_ray.governance.redact import Redactor
from memos_ray.plaintext.reader import read_messages
from memos_ray.plaintext.text import index_text
from memos_ray.types import Caller, MemoryCreate, MemoryItem, MemoryUpdate, MessagesCreate, Role, keyed_memory_ids


@dataclass(frozen=True)
class Written:
    """What an add stored, and what redaction masked in each memory (detector -> count)."""

    items: list[MemoryItem]
    redacted: list[dict[str, int]]
    messages_redacted: list[dict[str, int]] = field(default_factory=list)  # per message, for add_messages
    duplicates: list[int] = field(default_factory=list)  # items that ingest dedup matched to an existing memory


class MemoryService:
    def __init__(self, cubes: Cubes, redactor: Redactor, embed: Callable[[list[str]], Awaitable[np.ndarray]]) -> None:
        self.cubes = cubes
        self.redactor = redactor
        self.embed = embed

    async def add(
        self, who: Caller, cube_id: str, items: list[MemoryCreate], key: tuple[str, float] | None = None
    ) -> Written:
        """``key``: the request's idempotency seed and first time; its memories get ids made from it, so a
        retry of an add that was committed finds them instead of adding them again."""
        cube = await self.cubes.open(cube_id, who, Role.write)  # 404/403 before spending an embedding
        masked = [self.redactor.apply(m) for m in items]
        items = [m for m, _ in masked]
        found = [f for _, f in masked]
        vecs = await self.embed([index_text(m.text, m.source.speaker) for m in items])
        ids = keyed_memory_ids(key[0], key[1], len(items)) if key is not None else None
        added = await cube.call(CubeHost.add, items, vecs, who.principal, found, ids)
        return Written(added.items, found, duplicates=added.duplicates)

    async def add_messages(
        self, who: Caller, cube_id: str, req: MessagesCreate, key: tuple[str, float] | None = None
    ) -> Written:
        """Messages are masked whole before the MemReader splits them: no secret straddles two chunks."""
        req, per_message = self.redactor.messages(req)
        written = await self.add(who, cube_id, read_messages(req), key)
        return Written(written.items, written.redacted, per_message, written.duplicates)

    async def update(
        self, who: Caller, cube_id: str, memory_id: str, patch: MemoryUpdate
    ) -> tuple[MemoryItem, dict[str, int]]:
        patch, found = self.redactor.apply(patch)
        cube = await self.cubes.open(cube_id, who, Role.write)
        vec = None
        if patch.text is not None:
            cur = await cube.call(CubeHost.get, memory_id, None)
            vec = (await self.embed([index_text(patch.text, cur.provenance.speaker)]))[0]
        item = await cube.call(CubeHost.update, memory_id, patch, vec, who.principal, found)
        return item, found


__all__ = ["MemoryService", "Written"]
