"""A cube's changes whose consequences outside the cube are not all done yet (the cascade outbox).

A purge, edit or delete is durable in the cube first; what it must then reach elsewhere (the KV
caches built from the memory, the adapters that learned it) is written here before it is
attempted and removed only once it is done, so a failure is retried, never forgotten. One JSON
file per cube, replaced atomically; its owner is the cube's actor.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import TypeAdapter

from memos_ray.types import PendingCascade

_LIST = TypeAdapter(list[PendingCascade])


class CascadeOutbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[PendingCascade] = _LIST.validate_json(path.read_bytes()) if path.exists() else []

    @classmethod
    def of(cls, data_dir: Path, cube_id: str) -> CascadeOutbox:
        return cls(data_dir / "cascades" / f"{cube_id}.json")

    @staticmethod
    def pending_cubes(data_dir: Path) -> list[str]:
        """The cubes whose outbox holds something: each must be started again to finish it."""
        return sorted(p.stem for p in (data_dir / "cascades").glob("*.json"))

    def _save(self) -> None:
        if not self.items:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(_LIST.dump_json(self.items))
        tmp.replace(self.path)

    def add(self, item: PendingCascade) -> None:
        self.items.append(item)
        self._save()

    def update(self, old: PendingCascade, new: PendingCascade | None) -> None:
        """Replace ``old`` (by identity) with ``new``; None: it is done."""
        kept = [i for i in self.items if i is not old]
        self.items = kept if new is None else [new if i is old else i for i in self.items]
        self._save()

    def destroy(self) -> None:
        self.items = []
        self.path.unlink(missing_ok=True)
