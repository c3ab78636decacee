"""A cube's adapters on disk, and the types the adapter API speaks.

Layout under ``<data_dir>/adapters/<cube_id>/``: one ``<adapter_id>.safetensors`` per adapter
version (weights, with its :class:`AdapterInfo` as metadata) and ``index.json``, which lists the
versions and names the active one. The file is written before the index names it, and the index
is replaced atomically, so a crash leaves either the old index or the new one. One process (the
Adapters actor) owns the registry and serialises each cube's changes.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import numpy as np
from pydantic import Field

from memos_ray.errors import NotFound
from memos_ray.parametric.training import load_adapter, save_adapter
from memos_ray.types import AdapterInfo, AdapterList, AdapterRef, Strict


def new_adapter_id() -> str:
    return f"ad-{secrets.token_hex(6)}"


class _Index(Strict):
    active: str | None = None
    adapters: list[AdapterInfo] = Field(default_factory=list)
    next_version: int = Field(1, description="versions are never reused, even after a delete")


class AdapterRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _dir(self, cube_id: str) -> Path:
        return self.root / cube_id

    def _index(self, cube_id: str) -> _Index:
        path = self._dir(cube_id) / "index.json"
        return _Index.model_validate_json(path.read_text()) if path.exists() else _Index()

    def _write(self, cube_id: str, index: _Index) -> None:
        folder = self._dir(cube_id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".index.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(index.model_dump_json())
        tmp.replace(folder / "index.json")

    def listing(self, cube_id: str) -> AdapterList:
        index = self._index(cube_id)
        return AdapterList(adapters=index.adapters, active=index.active)

    def get(self, cube_id: str, adapter_id: str) -> AdapterInfo:
        for info in self._index(cube_id).adapters:
            if info.id == adapter_id:
                return info
        raise NotFound(f"cube {cube_id} has no adapter {adapter_id}", {"cube_id": cube_id, "adapter_id": adapter_id})

    def take_version(self, cube_id: str) -> int:
        """The next version number, reserved (the caller holds the cube's lock)."""
        index = self._index(cube_id)
        version = max(index.next_version, 1 + max((a.version for a in index.adapters), default=0))
        self._write(cube_id, index.model_copy(update={"next_version": version + 1}))
        return version

    def add(self, info: AdapterInfo, state: dict[str, np.ndarray], activate: bool) -> AdapterList:
        save_adapter(self._dir(info.cube_id) / f"{info.id}.safetensors", info, state)  # the file first
        index = self._index(info.cube_id)
        index.adapters.append(info)
        if activate:
            index.active = info.id
        self._write(info.cube_id, index)
        return AdapterList(adapters=index.adapters, active=index.active)

    def set_active(self, cube_id: str, adapter_id: str | None) -> AdapterList:
        if adapter_id is not None:
            self.get(cube_id, adapter_id)
        index = self._index(cube_id)
        index.active = adapter_id
        self._write(cube_id, index)
        return AdapterList(adapters=index.adapters, active=index.active)

    def state(self, cube_id: str, adapter_id: str) -> tuple[AdapterInfo, dict[str, np.ndarray]]:
        """The index's info (stale marks live there; the file keeps the info as trained) and the weights."""
        info = self.get(cube_id, adapter_id)
        return info, load_adapter(self._dir(cube_id) / f"{adapter_id}.safetensors")[1]

    def mark_stale(self, cube_id: str, memory_ids: set[str], reason: str) -> list[str]:
        """Adapters of the cube that learned from any of these memories: marked stale (and returned)."""
        index = self._index(cube_id)
        marked = []
        for i, info in enumerate(index.adapters):
            if not info.stale and any(s.memory_id in memory_ids for s in info.sources):
                index.adapters[i] = info.model_copy(update={"stale": True, "stale_reason": reason})
                marked.append(info.id)
        if marked:
            self._write(cube_id, index)
        return marked

    def remove(self, cube_id: str, adapter_id: str) -> AdapterList:
        self.get(cube_id, adapter_id)
        index = self._index(cube_id)
        index.adapters = [a for a in index.adapters if a.id != adapter_id]
        if index.active == adapter_id:
            index.active = None
        self._write(cube_id, index)  # the index first: a crash leaves an orphan file, not a dangling entry
        (self._dir(cube_id) / f"{adapter_id}.safetensors").unlink(missing_ok=True)
        return AdapterList(adapters=index.adapters, active=index.active)

    def drop_cube(self, cube_id: str) -> list[str]:
        ids = [a.id for a in self._index(cube_id).adapters]
        shutil.rmtree(self._dir(cube_id), ignore_errors=True)
        return ids


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
