"""A passivated cube's checkpoint: its versions, vectors and BM25 terms in two files, read back in two calls.

Reading a cube back row by row from Milvus costs far more than its activation budget, so a passivating
cube writes every version as one JSON document (validated back in one ``model_validate_json`` call, in
Rust), and its vectors and each memory's BM25 terms (compressed rows: see ``TermRows``) as arrays in one
safetensors file, both stamped with the cube's ``seq``. Activation reads the checkpoint and then asks its
storage only for the rows written after it; a cube that crashed since its checkpoint simply has a longer
tail. A purge drops the checkpoint first (it would bring the rows back). Nothing is pickled. Only with
milvus-lite: a server's cube may move between machines.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from memos_ray.plaintext.index import TermRows
from memos_ray.types import MemoryItem, Strict

log = logging.getLogger(__name__)


class Checkpoint(Strict):
    seq: int
    items: list[MemoryItem]
    index_key: str = ""  # how the terms were made (the index's tokenizer and weights)


@dataclass(frozen=True)
class Saved:
    """A checkpoint read back: row r of ``vectors`` and of ``terms`` is memory ``ids[r]``."""

    checkpoint: Checkpoint
    ids: list[str]
    vectors: np.ndarray
    terms: TermRows | None  # None: made under another index key (tokenized again)


class CheckpointFiles:
    """``<data_dir>/cubes/<cube>/checkpoint``: written whole into a temporary folder, then renamed."""

    def __init__(self, folder: Path | None, cube_id: str) -> None:
        self.folder = folder  # None: no checkpoints (a Milvus server)
        self.cube_id = cube_id

    def save(
        self,
        seq: int,
        items: list[MemoryItem],
        vecs: dict[str, np.ndarray],
        dim: int,
        terms: dict[str, dict[str, float]],
        index_key: str,
    ) -> None:
        if self.folder is None:
            return
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.folder.with_name("checkpoint.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        ids = list(vecs)
        matrix = np.stack([vecs[i] for i in ids]) if ids else np.zeros((0, dim), dtype=np.float32)
        rows = TermRows.of([terms.get(i, {}) for i in ids])
        save_file(
            {"vectors": matrix.astype(np.float32), "term_ptr": rows.ptr, "term_ids": rows.ids, "term_tf": rows.tf},
            str(tmp / "vectors.safetensors"),
            metadata={"seq": str(seq), "ids": json.dumps(ids), "vocab": json.dumps(rows.vocab)},
        )
        ckpt = Checkpoint(seq=seq, items=items, index_key=index_key)
        (tmp / "items.json").write_text(ckpt.model_dump_json())
        self.drop()
        tmp.rename(self.folder)

    def drop(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def read(self, index_key: str) -> Saved | None:
        """The checkpoint; its terms only if made under ``index_key``."""
        if self.folder is None or not self.folder.is_dir():
            return None
        try:
            with safe_open(str(self.folder / "vectors.safetensors"), framework="np") as f:
                meta = f.metadata()
                matrix = f.get_tensor("vectors")
                rows = TermRows(
                    json.loads(meta["vocab"]), *(f.get_tensor(k) for k in ("term_ptr", "term_ids", "term_tf"))
                )
            ids = json.loads(meta["ids"])
            ckpt = Checkpoint.model_validate_json((self.folder / "items.json").read_bytes())
            if int(meta["seq"]) != ckpt.seq or not len(ids) == len(matrix) == len(rows):
                raise ValueError("checkpoint files disagree")
            ptr_ok = rows.ptr[0] == 0 and not np.any(np.diff(rows.ptr) < 0) and rows.ptr[-1] == len(rows.ids)
            ids_ok = len(rows.tf) == len(rows.ids) and not np.any((rows.ids < 0) | (rows.ids >= len(rows.vocab)))
            if not (ptr_ok and ids_ok):
                raise ValueError("checkpoint terms are damaged")
        except Exception as exc:  # a damaged checkpoint is only a slower start
            log.warning("ignoring checkpoint of cube %s: %s", self.cube_id, exc)
            return None
        return Saved(ckpt, ids, matrix, rows if ckpt.index_key == index_key else None)
