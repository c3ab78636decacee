"""Writing a bundle, and reading one back only once every byte of it is verified.

:func:`read_bundle` checks, before it returns anything: the size of the file and of what it unpacks to (a zip
bomb is refused from its directory, and each entry is read with a bound), the names (no paths that climb out,
no entry twice, none the manifest does not list), the manifest's signature (against the key it names, and the
caller's trusted keys when given), every entry's size and SHA-256, and that every entry parses. A bundle that
fails any of it raises a 4xx :class:`~memos_ray.errors.MemosError` whose message names the problem and whose
``details["problem"]`` is a short code; nothing of it is returned, so nothing of it can be written.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib

from pydantic import ValidationError

from memos_ray.bundles.format import (
    MANIFEST,
    MEMORIES,
    SIGNATURE,
    AdapterExport,
    BundleAdapter,
    BundleContents,
    BundleCounts,
    BundleEntry,
    BundleManifest,
    VerifiedAdapter,
    VerifiedBundle,
    adapter_paths,
    check_adapter_config,
)
from memos_ray.bundles.signing import BundleKey, key_id_of, verify
from memos_ray.errors import BadRequest, InvalidInput, PayloadTooLarge
from memos_ray.parametric.training import adapter_from_bytes
from memos_ray.types import AdapterInfo, MemoryItem, utcnow

_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # a fixed time on every entry: the same contents make the same file


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(contents: BundleContents, key: BundleKey) -> bytes:
    """The bundle file: a zip whose manifest lists every entry's hash, signed with ``key``."""
    cube_id = contents.cube.id
    memories = sorted(contents.memories, key=lambda m: (m.id, m.version))
    if any(m.cube_id != cube_id for m in memories):
        raise ValueError(f"every memory exported must be of cube {cube_id}")
    if len({(m.id, m.version) for m in memories}) != len(memories):
        raise ValueError("a memory version is given twice")
    files: dict[str, bytes] = {MEMORIES: b"".join(m.model_dump_json().encode() + b"\n" for m in memories)}
    adapters = []
    for a in contents.adapters:
        if a.info.cube_id != cube_id:
            raise ValueError(f"adapter {a.info.id} is not of cube {cube_id}")
        weights, config = adapter_paths(a.info.id)
        files[weights], files[config] = a.weights, a.info.model_dump_json().encode()
        adapters.append(
            BundleAdapter(
                id=a.info.id,
                version=a.info.version,
                base_model=a.info.base_model,
                weights=weights,
                config=config,
                active=a.active,
            )
        )
    manifest = BundleManifest(
        cube=contents.cube,
        exported_at=contents.exported_at or utcnow(),
        exported_by=contents.exported_by,
        exported_from=contents.exported_from,
        signer_public_key=key.public_key_hex,
        signer_key_id=key.key_id,
        model=contents.model,
        counts=BundleCounts(
            memories=len({m.id for m in memories}),
            versions=len(memories),
            adapters=len(adapters),
            kv_caches=len(contents.kv_caches),
        ),
        entries=[BundleEntry(path=p, sha256=_sha256(b), size=len(b)) for p, b in files.items()],
        kv_caches=list(contents.kv_caches),
        adapters=adapters,
    )
    raw = manifest.model_dump_json().encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in [(MANIFEST, raw), (SIGNATURE, key.sign(raw).encode()), *files.items()]:
            zf.writestr(zipfile.ZipInfo(name, _EPOCH), data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def manifest_digest(data: bytes) -> str:
    """The digest that names a bundle this server wrote (the SHA-256 of its manifest.json, as
    :attr:`VerifiedBundle.digest`); not a verification."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return _sha256(zf.read(MANIFEST))


def _refuse(message: str, problem: str, **details: object) -> InvalidInput:
    return InvalidInput(message, {"problem": problem, **details})


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"


def _unsafe(name: str) -> bool:
    parts = name.split("/")
    return name.startswith("/") or "\\" in name or ":" in name or any(p in ("", ".", "..") for p in parts)


def _listing(infos: list[zipfile.ZipInfo], max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    files: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if _unsafe(name):
            raise _refuse(f"bundle entry name {name!r} is not a safe path", "unsafe_path", entry=name)
        if name in files:
            raise _refuse(f"bundle entry {name} appears twice", "duplicate_entry", entry=name)
        if info.is_dir() or info.flag_bits & 0x1 or info.compress_type not in _COMPRESSIONS:
            raise _refuse(f"bundle entry {name} is a folder, encrypted or oddly compressed", "bad_entry", entry=name)
        files[name] = info
    unpacked = sum(i.file_size for i in infos)
    if unpacked > max_bytes:
        raise PayloadTooLarge(
            f"bundle unpacks to {unpacked} bytes, over the limit of {max_bytes}", {"problem": "too_large"}
        )
    for required in (MANIFEST, SIGNATURE):
        if required not in files:
            raise _refuse(f"bundle has no {required}", "missing_entry", entry=required)
    return files


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """An entry's bytes, never more than its directory says (+1, to see a lie)."""
    try:
        with zf.open(info) as f:
            data = f.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise _refuse(f"bundle entry {info.filename} is damaged: {exc}", "damaged_entry", entry=info.filename) from exc
    if len(data) != info.file_size:
        raise _refuse(f"bundle entry {info.filename}: size mismatch", "size_mismatch", entry=info.filename)
    return data


def _manifest(raw: bytes, signature: bytes, trusted_keys: set[str] | None) -> BundleManifest:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _refuse("bundle manifest is not JSON", "bad_manifest") from exc
    key = doc.get("signer_public_key") if isinstance(doc, dict) else None
    if not isinstance(key, str) or not verify(key, raw, signature.decode("ascii", "replace").strip()):
        raise _refuse("bundle signature does not verify", "bad_signature")
    key_id = key_id_of(key)
    if trusted_keys is not None and key not in trusted_keys and key_id not in trusted_keys:
        raise _refuse(f"bundle signer key {key_id} is not trusted", "untrusted_signer", key_id=key_id)
    try:
        manifest = BundleManifest.model_validate_json(raw)
    except ValidationError as exc:
        raise _refuse(f"bundle manifest does not parse: {_first_error(exc)}", "bad_manifest") from exc
    if manifest.signer_public_key != key or manifest.signer_key_id != key_id:
        raise _refuse("bundle manifest names its signer inconsistently", "bad_manifest")
    return manifest


def _memories(data: bytes, manifest: BundleManifest) -> list[MemoryItem]:
    items: list[MemoryItem] = []
    for n, line in enumerate(data.splitlines(), start=1):
        try:
            items.append(MemoryItem.model_validate_json(line))
        except ValidationError as exc:
            raise _refuse(
                f"bundle entry {MEMORIES} line {n} does not parse: {_first_error(exc)}", "bad_entry", entry=MEMORIES
            ) from exc
    cube_id = manifest.cube.id
    if any(m.cube_id != cube_id for m in items):
        raise _refuse(f"bundle entry {MEMORIES}: a memory is not of cube {cube_id}", "bad_entry", entry=MEMORIES)
    versions = {(m.id, m.version) for m in items}
    counts = manifest.counts
    if len(versions) != len(items) or counts.versions != len(items) or counts.memories != len({m.id for m in items}):
        raise _refuse(f"bundle entry {MEMORIES}: versions repeated or counts differ", "bad_entry", entry=MEMORIES)
    return items


def _adapter(meta: BundleAdapter, files: dict[str, bytes], cube_id: str) -> VerifiedAdapter:
    try:
        info = AdapterInfo.model_validate_json(files[meta.config])
        check_adapter_config(meta, info, cube_id)
    except ValidationError as exc:
        raise _refuse(
            f"bundle entry {meta.config} does not parse: {_first_error(exc)}", "bad_entry", entry=meta.config
        ) from exc
    except ValueError as exc:
        raise _refuse(f"bundle entry {meta.config}: {exc}", "bad_entry", entry=meta.config) from exc
    try:
        trained, _ = adapter_from_bytes(files[meta.weights])
    except Exception as exc:  # untrusted bytes: whatever safetensors or the header parse raises
        raise _refuse(f"bundle entry {meta.weights} is not adapter weights", "bad_entry", entry=meta.weights) from exc
    if trained.id != meta.id:
        raise _refuse(f"bundle entry {meta.weights} holds adapter {trained.id}", "bad_entry", entry=meta.weights)
    return VerifiedAdapter(meta=meta, info=info, weights=files[meta.weights])


def read_bundle(data: bytes, max_bytes: int, trusted_keys: set[str] | None = None) -> VerifiedBundle:
    """The bundle's contents, once all of it is verified (see the module docstring); ``max_bytes`` bounds the file
    and what it unpacks to; ``trusted_keys``: the signers accepted (public keys hex or key ids), None: any."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"bundle is {len(data)} bytes, over the limit of {max_bytes}", {"problem": "too_large"})
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise BadRequest("bundle is truncated or not a zip", {"problem": "not_a_zip"}) from exc
    with zf:
        listing = _listing(infos, max_bytes)
        raw = _read(zf, listing[MANIFEST])
        manifest = _manifest(raw, _read(zf, listing[SIGNATURE]), trusted_keys)
        listed = {e.path for e in manifest.entries}
        for name in sorted(set(listing) - listed - {MANIFEST, SIGNATURE}):
            raise _refuse(f"bundle entry {name} is not listed in the manifest", "unlisted_entry", entry=name)
        for name in sorted(listed - set(listing)):
            raise _refuse(f"bundle entry {name} is missing", "missing_entry", entry=name)
        files: dict[str, bytes] = {}
        for entry in manifest.entries:
            info = listing[entry.path]
            if info.file_size != entry.size:
                raise _refuse(f"bundle entry {entry.path}: size mismatch", "size_mismatch", entry=entry.path)
            files[entry.path] = _read(zf, info)
            if _sha256(files[entry.path]) != entry.sha256:
                raise _refuse(f"bundle entry {entry.path}: sha256 mismatch", "hash_mismatch", entry=entry.path)
    memories = _memories(files[MEMORIES], manifest)
    adapters = [_adapter(a, files, manifest.cube.id) for a in manifest.adapters]
    return VerifiedBundle(manifest=manifest, memories=memories, adapters=adapters, digest=_sha256(raw))


__all__ = [
    "AdapterExport",
    "BundleContents",
    "VerifiedAdapter",
    "VerifiedBundle",
    "manifest_digest",
    "read_bundle",
    "write_bundle",
]
