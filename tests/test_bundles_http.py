"""Portable MemCube bundles end to end: export a cube, import it into another, through the real Serve app (and,
for adapters, the import service on real cubes and a real registry without Ray: no training needed)."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

from memos_ray.config import MemosConfig, StorageConfig
from memos_ray.errors import Conflict, CubeNotFound, InvalidInput
from memos_ray.governance.redact import Redactor
from memos_ray.types import (
    BUNDLE_MEDIA_TYPE,
    Caller,
    CubeMeta,
    KVCacheEntry,
    MemoryCreate,
    MemoryRef,
    MemoryUpdate,
    ModelIdentity,
    SearchQuery,
    utcnow,
)
from tests.helpers import adapter_info, bearer, user_key

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SRC, DST = "bundle-src", "bundle-dst"


def _rezip(data: bytes, change: Any) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    change(files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return out.getvalue()


def _flip(data: bytes, entry: str) -> bytes:
    """One byte of ``entry``'s compressed bytes flipped, inside the zip as it is."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(entry)
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 5
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


# ---------------------------------------------------------------- over HTTP (Ray, Serve)


@pytest.fixture(scope="module")
def http(base_url: str, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120, headers=bearer(api_key)) as client:
        yield client


@pytest.fixture(scope="module")
def source(http: httpx.Client) -> dict[str, str]:
    """A cube of two memories: one updated to v2, one deleted (v2, state deleted)."""
    for cube in (SRC, DST):
        assert http.post("/v1/cubes", json={"id": cube}).status_code == 201
    lives = http.post(f"/v1/cubes/{SRC}/memories", json={"text": "Ada lives in Paris", "tags": ["home"]}).json()
    r = http.patch(f"/v1/cubes/{SRC}/memories/{lives['id']}", json={"text": "Ada moved to Lyon in 2021"})
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    window = http.post(f"/v1/cubes/{SRC}/memories", json={"text": "The deploy window is Thursday"}).json()
    assert http.delete(f"/v1/cubes/{SRC}/memories/{window['id']}").json()["state"] == "deleted"
    return {"lives": lives["id"], "window": window["id"]}


@pytest.fixture(scope="module")
def bundle(http: httpx.Client, source: dict[str, str]) -> bytes:
    r = http.get(f"/v1/cubes/{SRC}/bundle")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == BUNDLE_MEDIA_TYPE
    assert r.headers["content-disposition"] == f'attachment; filename="{SRC}.memcube"'
    return r.content


def _state(http: httpx.Client, cube: str) -> tuple[int, int]:
    meta = http.get(f"/v1/cubes/{cube}").json()
    return meta["seq"], meta["memory_count"]


def _audit(http: httpx.Client, cube: str, **params: Any) -> list[dict[str, Any]]:
    r = http.get(f"/v1/cubes/{cube}/audit", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return list(r.json()["records"])


def test_export_then_import_keeps_every_version_state_and_provenance(
    http: httpx.Client, source: dict[str, str], bundle: bytes
) -> None:
    key = http.get("/v1/bundles/key").json()
    r = http.post(f"/v1/cubes/{DST}/bundle", content=bundle, headers={"Content-Type": BUNDLE_MEDIA_TYPE})
    assert r.status_code == 201, r.text
    done = r.json()
    assert (done["memories"], done["versions"], done["adapters"], done["dropped_refs"]) == (2, 4, [], 0)
    assert done["signer_key_id"] == key["key_id"] and done["exported_by"] == "tester" and done["from_cube"] == SRC
    ids = done["id_map"]
    assert set(ids) == set(source.values()) and not set(ids.values()) & set(ids)  # new ids

    lives = http.get(f"/v1/cubes/{DST}/memories/{ids[source['lives']]}/history").json()
    assert [(v["version"], v["text"], v["state"]) for v in lives] == [
        (1, "Ada lives in Paris", "active"),
        (2, "Ada moved to Lyon in 2021", "active"),
    ]
    window = http.get(f"/v1/cubes/{DST}/memories/{ids[source['window']]}/history").json()
    assert [(v["version"], v["state"]) for v in window] == [(1, "active"), (2, "deleted")]
    for v in (*lives, *window):  # the author stays; the import is recorded beside it
        assert v["cube_id"] == DST and v["provenance"]["author"] == "tester"
        meta = v["metadata"]
        assert meta["imported_from_cube"] == SRC and meta["imported_by"] == "tester"
        assert meta["imported_key_id"] == key["key_id"] and meta["imported_from_id"] in source.values()
    assert lives[0]["tags"] == ["home"]
    assert _state(http, DST)[1] == 1  # the deleted one is held, not counted

    hits = http.post(f"/v1/cubes/{DST}/search", json={"query": "Which city does Ada live in?", "top_k": 3}).json()
    assert hits["hits"][0]["memory"]["id"] == ids[source["lives"]]

    again = http.post(f"/v1/cubes/{DST}/bundle", content=bundle, headers={"Content-Type": BUNDLE_MEDIA_TYPE})
    assert again.status_code == 409 and "already" in again.json()["error"]["message"], again.text
    assert [v["version"] for v in http.get(f"/v1/cubes/{DST}/memories/{ids[source['lives']]}/history").json()] == [1, 2]

    exports = _audit(http, SRC, action="bundle.export")
    assert exports and exports[-1]["details"]["versions"] == 4 and exports[-1]["principal"] == "tester"
    imports = _audit(http, DST, action="bundle.import", result="ok")
    summary = next(i for i in imports if i["memory_id"] is None)
    assert summary["details"]["signer_key_id"] == key["key_id"] and summary["details"]["digest"] == done["digest"]
    assert {i["memory_id"] for i in imports if i["memory_id"]} == set(ids.values())
    assert any(i["result"] == "error" for i in _audit(http, DST, action="bundle.import"))  # the 409


@pytest.mark.parametrize("how", ["edited", "flipped", "truncated", "not_a_bundle"])
def test_a_tampered_bundle_is_refused_naming_the_problem(http: httpx.Client, bundle: bytes, how: str) -> None:
    cube = f"bundle-t-{how.replace('_', '-')}"
    assert http.post("/v1/cubes", json={"id": cube}).status_code == 201
    before = _state(http, cube)

    def edit(files: dict[str, bytes]) -> None:
        files["memories.jsonl"] = files["memories.jsonl"].replace(b"Paris", b"Rome!")

    data = {
        "edited": lambda: _rezip(bundle, edit),
        "flipped": lambda: _flip(bundle, "memories.jsonl"),
        "truncated": lambda: bundle[: len(bundle) // 2],
        "not_a_bundle": lambda: b"hello",
    }[how]()
    r = http.post(f"/v1/cubes/{cube}/bundle", content=data, headers={"Content-Type": "application/octet-stream"})
    assert 400 <= r.status_code < 500, r.text
    message = r.json()["error"]["message"]
    expected = {"edited": "sha256 mismatch", "flipped": "memories.jsonl", "truncated": "truncated"}
    assert expected.get(how, "not a zip") in message, message
    assert _state(http, cube) == before  # nothing written
    assert _audit(http, cube, action="bundle.import", result="error")


def test_a_reader_may_export_but_not_import_and_the_denial_is_audited(
    base_url: str, http: httpx.Client, bundle: bytes
) -> None:
    reader = user_key(base_url, "bundle-reader")
    assert http.put(f"/v1/cubes/{DST}/grants/bundle-reader", json={"role": "read"}).status_code == 200
    before = _state(http, DST)
    with httpx.Client(base_url=base_url, timeout=120, headers=bearer(reader)) as client:
        r = client.post(f"/v1/cubes/{DST}/bundle", content=bundle, headers={"Content-Type": BUNDLE_MEDIA_TYPE})
        assert r.status_code == 403, r.text
        assert client.get(f"/v1/cubes/{DST}/bundle").status_code == 200  # read role exports
        assert client.get("/v1/bundles/key").status_code == 200
        wrong = client.post(f"/v1/cubes/{DST}/bundle", content=b"{}", headers={"Content-Type": "application/json"})
        assert wrong.status_code == 400 and "octet-stream" in wrong.json()["error"]["message"]
    assert _state(http, DST) == before
    denied = _audit(http, DST, action="bundle.import", result="denied")
    assert any(d["principal"] == "bundle-reader" and d["status"] == 403 for d in denied)


def test_sdk_and_cli_export_and_import(base_url: str, api_key: str, source: dict[str, str], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from memos_ray.client import MemosClient
    from serve import cli

    with MemosClient(base_url, api_key=api_key, timeout=120) as mc:
        data = mc.export_cube(SRC)
        mc.create_cube("bundle-sdk")
        done = mc.import_bundle("bundle-sdk", data)
        assert (done.memories, done.versions) == (2, 4) and done.signer_key_id == mc.bundle_key().key_id
        with pytest.raises(Conflict):
            mc.import_bundle("bundle-sdk", data)
        mc.create_cube("bundle-cli")
    env = {"COLUMNS": "200", "MEMOS_RAY_URL": base_url, "MEMOS_RAY_API_KEY": api_key}
    path = tmp_path / "src.memcube"
    shown = CliRunner().invoke(cli.app, ["export", SRC, "-o", str(path)], env=env)
    assert shown.exit_code == 0 and path.stat().st_size > 0, shown.output
    shown = CliRunner().invoke(cli.app, ["import-bundle", "bundle-cli", str(path)], env=env)
    assert shown.exit_code == 0 and "imported 2 memories (4 versions)" in shown.output, shown.output
    shown = CliRunner().invoke(cli.app, ["import-bundle", "bundle-cli", str(path)], env=env)
    assert shown.exit_code == 1 and "409" in shown.output


# ---------------------------------------------------------------- the import service, without Ray

MODEL = ModelIdentity(name="smollm2", file_sha256="a" * 64, dtype="float32")
OTHER = ModelIdentity(name="smollm2", file_sha256="b" * 64, dtype="bfloat16")
WHO = Caller(principal="alice", kind="user", subjects=["alice"], key_id="k1")


class _Ref:
    """A CubeRef over a MemCube in this process: ``call(CubeHost.x, ...)`` runs the cube's own ``x``."""

    def __init__(self, cube: Any) -> None:
        self.cube = cube

    async def call(self, method: Any, *args: Any) -> Any:
        return self.cube.live_meta() if method.__name__ == "meta" else getattr(self.cube, method.__name__)(*args)


class _Cubes:
    def __init__(self, cubes: dict[str, Any]) -> None:
        self.cubes = cubes

    async def open(self, cube_id: str, who: Caller | None, need: Any) -> _Ref:
        if cube_id not in self.cubes:
            raise CubeNotFound(f"cube {cube_id} not found")
        return _Ref(self.cubes[cube_id])


class _Handle:
    """An actor handle over a plain object: ``call(handle, Cls.method, ...)`` awaits ``obj.method(...)``."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __getattr__(self, name: str) -> Any:
        return SimpleNamespace(remote=getattr(self.obj, name))


class _Scheduler:
    def __init__(self, model: ModelIdentity) -> None:
        self.model = model

    async def ready(self) -> ModelIdentity:
        return self.model


def _kv_file(path: Path, sources: list[MemoryRef]) -> None:
    """A cache file as a model worker writes it: safetensors, its KVCacheEntry in the header's metadata."""
    from safetensors.numpy import save

    entry = KVCacheEntry(
        key=path.stem, model=MODEL, sources=sources, tokens=4, bytes=16, content_hash="h", created_at=utcnow()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(save({"k.0": np.zeros((1, 4), np.float32)}, metadata={"entry": entry.model_dump_json()}))


def test_import_service_keeps_an_adapter_of_another_base_model_inactive(tmp_path: Path, encoder: Any) -> None:
    from actors.adapters import Adapters
    from actors.bundles import BundleService
    from memos_ray.config import SearchConfig
    from memos_ray.plaintext.cube import MemCube
    from memos_ray.plaintext.text import index_text

    config = MemosConfig(storage=StorageConfig(data_dir=tmp_path / "data"))
    now = utcnow()
    cubes = {
        c: MemCube(CubeMeta(id=c, created_at=now, updated_at=now), config.storage, SearchConfig(), 384)
        for c in ("u-src", "u-dst", "u-same")
    }
    src = cubes["u-src"]
    texts = ["Zorblat the cat lives in Kyoto", "Mirelle's password is hunter2, mail mirelle@example.com"]
    items = [MemoryCreate(text=t) for t in texts]
    cat, other = src.add(items, encoder.encode([index_text(t, None) for t in texts]), "alice", None).items
    src.update(cat.id, MemoryUpdate(tags=["pets"]), None, "bob")
    adapters = Adapters(config)
    adapters.registry.add(
        adapter_info("u-src", OTHER, [MemoryRef(memory_id=cat.id, version=1)]),
        {"lora_A": np.ones((2, 3), np.float32)},
        True,
    )
    _kv_file(config.storage.data_dir / "kv" / "mine.safetensors", [MemoryRef(memory_id=cat.id, version=2)])
    _kv_file(config.storage.data_dir / "kv" / "shared.safetensors", [MemoryRef(memory_id="elsewhere", version=1)])
    (config.storage.data_dir / "kv" / "torn.safetensors").write_bytes(b"\xff" * 12)

    async def embed(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts)

    def service(model: ModelIdentity) -> BundleService:
        fakes: list[Any] = [_Cubes(cubes), _Handle(adapters), _Handle(_Scheduler(model))]
        redactor = Redactor(config.governance.redaction)
        return BundleService(config, fakes[0], fakes[1], embed, redactor, lambda: fakes[2])

    async def run() -> None:
        exported = await service(MODEL).export(WHO, "u-src")
        assert (exported.memories, exported.versions, exported.adapters, exported.kv_caches) == (2, 3, 1, 1)
        done = await service(MODEL).import_bundle(WHO, "u-dst", exported.data)
        (adapter,) = done.adapters
        assert not adapter.active and "trained on base model" in adapter.reason and done.adapters_inactive == 1
        assert done.kv_caches == 1  # described, not imported
        assert adapter.from_id == "ad-000000000001" and adapter.id != adapter.from_id
        listing = await adapters.listing("u-dst")
        assert listing.active is None and listing.adapters[0].base_model == OTHER
        assert listing.adapters[0].sources == [MemoryRef(memory_id=done.id_map[cat.id], version=1)]
        assert done.redacted == 1  # an ingest here masks what the exporter did not
        masked = cubes["u-dst"].get(done.id_map[other.id])
        assert "mirelle@example.com" not in masked.text and masked.provenance.redactions["email"] == 1
        history = cubes["u-dst"].versions(done.id_map[cat.id])
        assert [(v.version, v.provenance.author, v.tags) for v in history] == [(1, "alice", []), (2, "bob", ["pets"])]
        q = SearchQuery(query="Where does the cat live?", top_k=1)
        hit = cubes["u-dst"].search(q, encoder.encode([q.query])[0])[0]
        assert hit.memory.id == done.id_map[cat.id]
        with pytest.raises(Conflict):
            await service(MODEL).import_bundle(WHO, "u-dst", exported.data)
        assert len(cubes["u-dst"].all_versions()) == 3 and len((await adapters.listing("u-dst")).adapters) == 1
        same = await service(OTHER).import_bundle(WHO, "u-same", exported.data)  # the adapter's own base model
        assert same.adapters[0].active and (await adapters.listing("u-same")).active == same.adapters[0].id
        with pytest.raises(InvalidInput):
            await service(MODEL).import_bundle(WHO, "u-same", _flip(exported.data, "memories.jsonl"))

    try:
        asyncio.run(run())
    finally:
        for cube in cubes.values():
            cube.close()
