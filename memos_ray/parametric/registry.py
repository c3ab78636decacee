"""A cube's adapters (metadata and weights) in the relational store, and the types the adapter API speaks.

Two tables in a SQLite file under ``data_dir`` (``adapters.sqlite``) or the PostgreSQL database
``storage.database_uri`` names: ``adapter_cubes`` (per cube: the active adapter, the next version number)
and ``adapters`` (per version: its :class:`AdapterInfo` and its weights, one safetensors blob with the info
as trained in its metadata). A change is one transaction, so a crash leaves the old state or the new; with
PostgreSQL no adapter lives on any node's disk. One process (the Adapters actor) owns the registry and
serialises each cube's changes.

An earlier version kept ``<data_dir>/adapters/<cube>/index.json`` and one ``.safetensors`` file per adapter:
those are imported on open, then removed.
"""

from __future__ import annotations

import logging
import secrets
import shutil
from pathlib import Path

import numpy as np
from pydantic import Field

from memos_ray.database import Schema, open_database, upsert
from memos_ray.errors import NotFound
from memos_ray.parametric.training import adapter_bytes, adapter_from_bytes
from memos_ray.types import AdapterInfo, AdapterList, AdapterRef, Strict

log = logging.getLogger(__name__)

_SCHEMA = Schema("""
CREATE TABLE IF NOT EXISTS adapter_cubes (
    cube_id TEXT PRIMARY KEY, active TEXT, next_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS adapters (
    cube_id TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, info TEXT NOT NULL,
    weights BLOB NOT NULL, PRIMARY KEY (cube_id, id)
);
""")
_PUT_CUBE = upsert("adapter_cubes", ["cube_id", "active", "next_version"], ["cube_id"])
_PUT_ADAPTER = upsert("adapters", ["cube_id", "id", "version", "info", "weights"], ["cube_id", "id"])


def new_adapter_id() -> str:
    return f"ad-{secrets.token_hex(6)}"


class _Index(Strict):
    """What an earlier version's ``index.json`` held (read once, to import it)."""

    active: str | None = None
    adapters: list[AdapterInfo] = Field(default_factory=list)
    next_version: int = 1


class AdapterRegistry:
    def __init__(self, path: Path, uri: str | None = None, legacy: Path | None = None) -> None:
        """``path``: the SQLite file; ``uri``: a PostgreSQL database instead; ``legacy``: the folder of an
        earlier version's adapter files, imported then removed."""
        self._db = open_database(path, _SCHEMA, uri)
        if legacy is not None and legacy.is_dir():
            self._import(legacy)

    def _cube(self, cube_id: str) -> tuple[str | None, int]:
        rows = self._db.execute("SELECT active, next_version FROM adapter_cubes WHERE cube_id = ?", (cube_id,))
        return (rows[0][0], int(rows[0][1])) if rows else (None, 1)

    def _infos(self, cube_id: str) -> list[AdapterInfo]:
        rows = self._db.execute("SELECT info FROM adapters WHERE cube_id = ? ORDER BY version", (cube_id,))
        return [AdapterInfo.model_validate_json(info) for (info,) in rows]

    def listing(self, cube_id: str) -> AdapterList:
        return AdapterList(adapters=self._infos(cube_id), active=self._cube(cube_id)[0])

    def get(self, cube_id: str, adapter_id: str) -> AdapterInfo:
        rows = self._db.execute("SELECT info FROM adapters WHERE cube_id = ? AND id = ?", (cube_id, adapter_id))
        if not rows:
            raise NotFound(
                f"cube {cube_id} has no adapter {adapter_id}", {"cube_id": cube_id, "adapter_id": adapter_id}
            )
        return AdapterInfo.model_validate_json(rows[0][0])

    def take_version(self, cube_id: str) -> int:
        """The next version number, reserved (the caller holds the cube's lock)."""
        with self._db.transaction():
            active, version = self._cube(cube_id)
            self._db.execute(_PUT_CUBE, (cube_id, active, version + 1))
        return version

    def add(self, info: AdapterInfo, state: dict[str, np.ndarray], activate: bool) -> AdapterList:
        blob = adapter_bytes(info, state)
        with self._db.transaction():
            active, version = self._cube(info.cube_id)
            self._db.execute(_PUT_ADAPTER, (info.cube_id, info.id, info.version, info.model_dump_json(), blob))
            self._db.execute(_PUT_CUBE, (info.cube_id, info.id if activate else active, max(version, info.version + 1)))
        return self.listing(info.cube_id)

    def add_weights(self, info: AdapterInfo, weights: bytes, activate: bool) -> AdapterList:
        """An adapter whose weights come as a safetensors blob (a bundle's): decoded (a damaged blob raises
        here, before anything is stored) and stored with ``info`` as its own, like a trained one."""
        return self.add(info, adapter_from_bytes(weights)[1], activate)

    def weights(self, cube_id: str, adapter_id: str) -> bytes:
        """The adapter's blob as stored: safetensors, the info as trained (or imported) in its metadata."""
        self.get(cube_id, adapter_id)
        rows = self._db.execute("SELECT weights FROM adapters WHERE cube_id = ? AND id = ?", (cube_id, adapter_id))
        return bytes(rows[0][0])

    def set_active(self, cube_id: str, adapter_id: str | None) -> AdapterList:
        if adapter_id is not None:
            self.get(cube_id, adapter_id)
        with self._db.transaction():
            self._db.execute(_PUT_CUBE, (cube_id, adapter_id, self._cube(cube_id)[1]))
        return self.listing(cube_id)

    def state(self, cube_id: str, adapter_id: str) -> tuple[AdapterInfo, dict[str, np.ndarray]]:
        """The registry's info (stale marks live there; the blob keeps the info as trained) and the weights."""
        info = self.get(cube_id, adapter_id)
        rows = self._db.execute("SELECT weights FROM adapters WHERE cube_id = ? AND id = ?", (cube_id, adapter_id))
        return info, adapter_from_bytes(bytes(rows[0][0]))[1]

    def mark_stale(self, cube_id: str, memory_ids: set[str], reason: str) -> list[str]:
        """Adapters of the cube that learned from any of these memories: marked stale (and returned)."""
        marked = [
            info.model_copy(update={"stale": True, "stale_reason": reason})
            for info in self._infos(cube_id)
            if not info.stale and any(s.memory_id in memory_ids for s in info.sources)
        ]
        if marked:
            self._db.executemany(
                "UPDATE adapters SET info = ? WHERE cube_id = ? AND id = ?",
                [(info.model_dump_json(), cube_id, info.id) for info in marked],
            )
        return [info.id for info in marked]

    def remove(self, cube_id: str, adapter_id: str) -> AdapterList:
        self.get(cube_id, adapter_id)
        with self._db.transaction():
            active, version = self._cube(cube_id)
            self._db.execute("DELETE FROM adapters WHERE cube_id = ? AND id = ?", (cube_id, adapter_id))
            self._db.execute(_PUT_CUBE, (cube_id, None if active == adapter_id else active, version))
        return self.listing(cube_id)

    def drop_cube(self, cube_id: str) -> list[str]:
        ids = [info.id for info in self._infos(cube_id)]
        with self._db.transaction():
            self._db.execute("DELETE FROM adapters WHERE cube_id = ?", (cube_id,))
            self._db.execute("DELETE FROM adapter_cubes WHERE cube_id = ?", (cube_id,))
        return ids

    def close(self) -> None:
        self._db.close()

    def _import(self, legacy: Path) -> None:
        """Each cube folder of the file layout, in one transaction per cube, then the folder removed."""
        for folder in sorted(p for p in legacy.iterdir() if p.is_dir()):
            index_file = folder / "index.json"
            index = _Index.model_validate_json(index_file.read_text()) if index_file.exists() else _Index()
            imported: set[str] = set()
            with self._db.transaction():
                for info in index.adapters:
                    weights = folder / f"{info.id}.safetensors"
                    if not weights.exists():
                        log.warning("adapter %s of cube %s has no weights file: not imported", info.id, folder.name)
                        continue
                    blob = weights.read_bytes()
                    adapter_from_bytes(blob)  # a damaged file fails the import here, before anything is removed
                    self._db.execute(_PUT_ADAPTER, (folder.name, info.id, info.version, info.model_dump_json(), blob))
                    imported.add(info.id)
                next_version = max(index.next_version, 1 + max((a.version for a in index.adapters), default=0))
                active = index.active if index.active in imported else None
                self._db.execute(_PUT_CUBE, (folder.name, active, next_version))
            shutil.rmtree(folder)
        shutil.rmtree(legacy, ignore_errors=True)


def ref_of(info: AdapterInfo) -> AdapterRef:
    return AdapterRef(
        adapter_id=info.id,
        cube_id=info.cube_id,
        version=info.version,
        base_model=info.base_model,
        settings=info.settings,
        bytes=info.bytes,
    )


__all__ = ["AdapterRegistry", "new_adapter_id", "ref_of"]
