"""MemCube bundles: write, verify, refuse what was tampered with, map ids on import. No Ray, no server."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from memos_ray.bundles import (
    AdapterExport,
    BundleContents,
    BundleKey,
    ImportOrigin,
    adapter_active_on_import,
    map_adapter,
    map_memories,
    read_bundle,
    should_activate,
    verify,
    write_bundle,
)
from memos_ray.errors import BadRequest, InvalidInput, MemosError, PayloadTooLarge
from memos_ray.parametric.training import adapter_bytes, adapter_from_bytes
from memos_ray.types import (
    CubeMeta,
    KVCacheEntry,
    MemoryItem,
    MemoryRef,
    ModelIdentity,
    Provenance,
    utcnow,
)
from tests.helpers import adapter_info

MODEL = ModelIdentity(name="qwen", file_sha256="a" * 64, dtype="float32")
OTHER = ModelIdentity(name="qwen", file_sha256="b" * 64, dtype="float32")
LIMIT = 10_000_000


def _memories() -> list[MemoryItem]:
    t = utcnow()
    old = dict(cube_id="c1", created_at=t, kind="fact")
    return [
        MemoryItem(id="m1", version=1, text="Ada lives in Paris", updated_at=t, **old),
        MemoryItem(
            id="m1", version=2, text="Ada lives in Lyon", updated_at=t + timedelta(seconds=1), supersedes=[], **old
        ),
        MemoryItem(
            id="m2",
            version=1,
            text="Ada moved",
            updated_at=t,
            provenance=Provenance(
                author="alice",
                derived_from=[MemoryRef(memory_id="m1", version=2), MemoryRef(memory_id="elsewhere", version=1)],
            ),
            supersedes=["m1"],
            **old,
        ),
    ]


def _adapter(base: ModelIdentity = MODEL) -> AdapterExport:
    state = {"lora_A": np.ones((2, 3), dtype=np.float32)}
    info = adapter_info("c1", base, [MemoryRef(memory_id="m1", version=2)], adapter_id="ad-1")
    return AdapterExport(info=info, weights=adapter_bytes(info, state), active=True)


def _contents(base: ModelIdentity = MODEL) -> BundleContents:
    now = utcnow()
    kv = KVCacheEntry(
        key="k1",
        model=MODEL,
        sources=[MemoryRef(memory_id="m1", version=2)],
        tokens=10,
        bytes=100,
        content_hash="h",
        created_at=now,
    )
    return BundleContents(
        cube=CubeMeta(id="c1", name="cube one", created_at=now, updated_at=now, memory_count=2),
        memories=_memories(),
        exported_by="alice",
        exported_from="https://a.example",
        model=MODEL,
        adapters=[_adapter(base)],
        kv_caches=[kv],
    )


@pytest.fixture()
def key(tmp_path: Path) -> BundleKey:
    return BundleKey.load(tmp_path / "data" / "bundle.key")


def _rezip(data: bytes, change: Callable[[dict[str, bytes]], None]) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    change(files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return out.getvalue()


def _refused(data: bytes, cls: type[MemosError] = InvalidInput, **kw: object) -> MemosError:
    with pytest.raises(cls) as info:
        read_bundle(data, LIMIT, **kw)  # type: ignore[arg-type]
    assert 400 <= info.value.status_code < 500
    return info.value


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "data" / "bundle.key"
    key = BundleKey.load(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = BundleKey.load(path)
    assert again.public_key_hex == key.public_key_hex and len(key.key_id) == 16
    assert key.private_key not in repr(key)
    sig = key.sign(b"hello")
    assert verify(key.public_key_hex, b"hello", sig)
    assert not verify(key.public_key_hex, b"hellO", sig)
    assert not verify("zz", b"hello", sig) and not verify(key.public_key_hex, b"hello", "00")


def test_round_trip(key: BundleKey) -> None:
    data = write_bundle(_contents(), key)
    bundle = read_bundle(data, LIMIT, trusted_keys={key.key_id})
    m = bundle.manifest
    assert m.format == "memos-ray.bundle/1" and m.cube.id == "c1" and m.exported_by == "alice"
    assert m.signer_public_key == key.public_key_hex and m.signer_key_id == key.key_id
    assert (m.counts.memories, m.counts.versions, m.counts.adapters, m.counts.kv_caches) == (2, 3, 1, 1)
    assert [(x.id, x.version) for x in bundle.memories] == [("m1", 1), ("m1", 2), ("m2", 1)]
    assert bundle.memories[2].provenance.author == "alice"
    (adapter,) = bundle.adapters
    assert adapter.info.id == "ad-1" and adapter.meta.active and adapter.meta.base_model == MODEL
    assert adapter_from_bytes(adapter.weights)[1]["lora_A"].shape == (2, 3)
    assert m.kv_caches[0].key == "k1"
    assert read_bundle(data, LIMIT, trusted_keys={key.public_key_hex}).digest == bundle.digest
    assert write_bundle(_contents(), key) != b""  # deterministic layout, fresh times: still a valid file


def test_tampered_memories_names_the_entry(key: BundleKey) -> None:
    data = write_bundle(_contents(), key)

    def edit(files: dict[str, bytes]) -> None:
        files["memories.jsonl"] = files["memories.jsonl"].replace(b"Paris", b"Rome!")

    err = _refused(_rezip(data, edit))
    assert "memories.jsonl" in err.message and "sha256 mismatch" in err.message
    # a byte flipped inside the compressed file: damaged, and the message says which entry
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo("memories.jsonl")
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 5
    flipped = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    assert "memories.jsonl" in _refused(flipped).message


def test_tampered_manifest_fails_the_signature(key: BundleKey) -> None:
    def edit(files: dict[str, bytes]) -> None:
        files["manifest.json"] = files["manifest.json"].replace(b'"alice"', b'"mallory"', 1)

    err = _refused(_rezip(write_bundle(_contents(), key), edit))
    assert err.message == "bundle signature does not verify"


def test_truncated_is_refused(key: BundleKey) -> None:
    data = write_bundle(_contents(), key)
    for cut in (len(data) // 2, len(data) - 10, 3):
        err = _refused(data[:cut], BadRequest)
        assert err.status_code == 400 and "truncated" in err.message


def test_unlisted_entry_is_refused(key: BundleKey) -> None:
    def edit(files: dict[str, bytes]) -> None:
        files["extra.txt"] = b"surprise"

    err = _refused(_rezip(write_bundle(_contents(), key), edit))
    assert "extra.txt" in err.message and "not listed" in err.message


def test_path_traversal_is_refused(key: BundleKey) -> None:
    def edit(files: dict[str, bytes]) -> None:
        files["../evil.json"] = b"{}"

    err = _refused(_rezip(write_bundle(_contents(), key), edit))
    assert "not a safe path" in err.message and err.details["problem"] == "unsafe_path"


def test_untrusted_signer_is_refused(key: BundleKey, tmp_path: Path) -> None:
    other = BundleKey.load(tmp_path / "other.key")
    data = write_bundle(_contents(), other)
    err = _refused(data, trusted_keys={key.key_id})
    assert "not trusted" in err.message and other.key_id in err.message
    assert read_bundle(data, LIMIT).manifest.signer_key_id == other.key_id  # no trusted set: any valid signer


def test_size_bounds(key: BundleKey) -> None:
    data = write_bundle(_contents(), key)
    with pytest.raises(PayloadTooLarge):
        read_bundle(data, len(data) - 1)
    bomb = _rezip(data, lambda files: files.__setitem__("zeros", b"\0" * 2_000_000))
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge):
        read_bundle(bomb, 1_000_000)


def test_mapping_keeps_versions_and_rewrites_refs(key: BundleKey) -> None:
    bundle = read_bundle(write_bundle(_contents(), key), LIMIT)
    mapped = map_memories(bundle, "c2", imported_by="bob")
    ids = mapped.id_map
    assert set(ids) == {"m1", "m2"} and len(set(ids.values())) == 2
    assert all(new.startswith("m") and len(new) == 23 for new in ids.values())
    assert [(x.id, x.version) for x in mapped.items] == sorted([(ids["m1"], 1), (ids["m1"], 2), (ids["m2"], 1)])
    m2 = next(x for x in mapped.items if x.id == ids["m2"])
    assert m2.cube_id == "c2" and m2.supersedes == [ids["m1"]]
    assert m2.provenance.derived_from == [MemoryRef(memory_id=ids["m1"], version=2)]
    assert m2.provenance.author == "alice" and mapped.dropped_refs == 1
    meta = m2.metadata
    assert meta["imported_from"] == "https://a.example" and meta["imported_from_id"] == "m2"
    assert meta["imported_from_cube"] == "c1" and meta["imported_by"] == "bob"
    assert meta["imported_key_id"] == key.key_id
    assert map_memories(bundle, "c2", imported_by="bob").id_map == ids  # the same import: the same ids
    assert map_memories(bundle, "c3", imported_by="bob").id_map != ids
    assert ImportOrigin.of(bundle, "bob").digest == bundle.digest
    info = map_adapter(bundle.adapters[0].info, target_cube_id="c2", new_id="ad-9", version=3, id_map=ids)
    assert (info.id, info.cube_id, info.version) == ("ad-9", "c2", 3)
    assert info.sources == [MemoryRef(memory_id=ids["m1"], version=2)]


def test_adapter_on_another_base_model_is_inactive(key: BundleKey) -> None:
    assert adapter_active_on_import(MODEL, MODEL)
    assert not adapter_active_on_import(MODEL, OTHER)
    assert not adapter_active_on_import(MODEL, MODEL.model_copy(update={"dtype": "bfloat16"}))
    bundle = read_bundle(write_bundle(_contents(base=OTHER), key), LIMIT)
    (adapter,) = bundle.adapters
    assert adapter.meta.active and not should_activate(adapter, MODEL)
    same = read_bundle(write_bundle(_contents(base=MODEL), key), LIMIT).adapters[0]
    assert should_activate(same, MODEL)


def test_manifest_listing_a_missing_entry(key: BundleKey) -> None:
    def edit(files: dict[str, bytes]) -> None:
        del files["adapters/ad-1.json"]

    err = _refused(_rezip(write_bundle(_contents(), key), edit))
    assert "adapters/ad-1.json" in err.message and "missing" in err.message


def test_manifest_is_signed_json(key: BundleKey) -> None:
    with zipfile.ZipFile(io.BytesIO(write_bundle(_contents(), key))) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert verify(manifest["signer_public_key"], zf.read("manifest.json"), zf.read("manifest.sig").decode())
    assert {e["path"] for e in manifest["entries"]} == {
        "memories.jsonl",
        "adapters/ad-1.safetensors",
        "adapters/ad-1.json",
    }
