"""A cube's changes whose consequences outside the cube are not all done yet (the cascade outbox).

A purge, edit or delete is durable in the cube first; what it must then reach elsewhere (the KV
caches built from the memory, the adapters that learned it) is written here before it is
attempted and removed only once it is done, so a failure is retried, never forgotten.

The outbox lives with the cube's rows, in its counters (:class:`~memos_ray.plaintext.rows.Counters`), not
on a node's disk: on a cluster whose rows are on a Milvus server, a cube that died mid-cascade on one node is
finished by whichever node runs it next. Its owner is the cube's actor, which saves it through ``save``.
Earlier versions kept it in ``<data_dir>/cascades/<cube>.json``: such a file is taken into the rows when the
cube opens on the node that has it (:func:`legacy_items`), then removed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import TypeAdapter

from memos_ray.types import PendingCascade

_LIST = TypeAdapter(list[PendingCascade])


class CascadeOutbox:
    def __init__(self, items: list[PendingCascade], save: Callable[[list[PendingCascade]], None]) -> None:
        self.items = list(items)
        self._save = save

    def add(self, item: PendingCascade) -> None:
        self.items.append(item)
        self._save(self.items)

    def update(self, old: PendingCascade, new: PendingCascade | None) -> None:
        """Replace ``old`` (by identity) with ``new``; None: it is done."""
        kept = [i for i in self.items if i is not old]
        self.items = kept if new is None else [new if i is old else i for i in self.items]
        self._save(self.items)


def _legacy_path(data_dir: Path, cube_id: str) -> Path:
    return data_dir / "cascades" / f"{cube_id}.json"


def legacy_items(data_dir: Path, cube_id: str) -> list[PendingCascade]:
    """What an earlier version's outbox file on this node holds for the cube (nothing when there is none)."""
    path = _legacy_path(data_dir, cube_id)
    return _LIST.validate_json(path.read_bytes()) if path.exists() else []


def legacy_cubes(data_dir: Path) -> list[str]:
    """The cubes with an earlier version's outbox file on this node."""
    return sorted(p.stem for p in (data_dir / "cascades").glob("*.json"))


def remove_legacy(data_dir: Path, cube_id: str) -> None:
    _legacy_path(data_dir, cube_id).unlink(missing_ok=True)


__all__ = ["CascadeOutbox", "legacy_cubes", "legacy_items", "remove_legacy"]
