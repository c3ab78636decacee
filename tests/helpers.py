"""What tests share besides fixtures: the suite's administrator key, the model cache, small waits.

Test modules import these from here (``from tests.helpers import bearer``), never from conftest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The suite's administrator key (registered by hash, as MEMOS_RAY_ADMIN_KEY would be).
ADMIN_KEY = "mrk_000000000000_the-test-suites-administrator-key"

# The LLM is converted from its GGUF once per checkout (~15 s), then loads in under a second.
MODELS = Path(__file__).resolve().parents[1] / ".memos-ray" / "models"


def wait_for_condition(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def alive_actors(class_name: str) -> dict[str, int]:
    """Live actors of ``class_name``: actor id -> pid (from the GCS actor table; no dashboard needed)."""
    from ray._private.state import actors

    table = actors(actor_state_name="ALIVE")
    return {aid: int(a["Pid"]) for aid, a in table.items() if a.get("ActorClassName", "").endswith(class_name)}


def crash_mid_purge(cube: Any, encoder: Any) -> tuple[Any, Any, Any]:
    """Three memories of ``cube`` (a MemCube): a secret, one to keep, one quoting the secret in its context.
    Then the state a purge of the secret leaves when it dies right after recording what to erase: nothing
    removed yet, the store closed without a checkpoint. Returns (secret, kept, quoting)."""
    from memos_ray.plaintext.storage import CubeStore
    from memos_ray.plaintext.text import index_text
    from memos_ray.types import MemoryCreate

    items = [
        MemoryCreate(text="The alarm code is quokka-5521."),
        MemoryCreate(text="Keep me."),
        MemoryCreate(text="Got it.", context="The alarm code is quokka-5521."),
    ]
    secret, kept, quoting = cube.add(items, encoder.encode([index_text(i.text, None) for i in items]), "t").items
    cube.store.flush()  # sealed into segments, not only the write-ahead log
    cube.store._save_counters(
        rewrite_pending=True, erase=[CubeStore.pk(secret.id, 1)], scrub=[CubeStore.pk(quoting.id, 1)]
    )
    cube.store.shard.counters.flush()
    cube.store.close()  # not cube.close(): a crash leaves no checkpoint
    return secret, kept, quoting


def run_check(module: str, *args: str, timeout: float = 270) -> Any:
    """Run ``python -m <module> <args>`` (a check with a Ray cluster of its own) from the repository root; the
    JSON line it printed last. It must end inside the test's own limit (pytest-timeout, 300 s): a check that
    hangs fails with what it printed, not with pytest's bare timeout."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", module, *args], cwd=root, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        out, err = (s.decode(errors="replace") if isinstance(s, bytes) else s or "" for s in (exc.stdout, exc.stderr))
        raise AssertionError(f"{module} ran past {timeout} s\nstdout: {out[-3000:]}\nstderr: {err[-3000:]}") from None
    assert proc.returncode == 0, proc.stderr[-12000:]
    return last_json(proc.stdout)


def last_json(stdout: str) -> Any:
    """The JSON line a child-process check printed last (Ray's own messages may follow it)."""
    import json

    return json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith("{")))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def traces(root: Path, token: str) -> list[Path]:
    """Every file under ``root`` that holds ``token``: as raw bytes, or inside a parquet or Arrow file (their
    pages may be compressed, so they are decoded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    needle = token.encode()
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hit = needle in data
        if not hit and path.suffix in (".parquet", ".arrow"):
            try:
                if path.suffix == ".parquet":
                    table = pq.read_table(path)
                else:
                    with pa.memory_map(str(path)) as source:
                        try:
                            table = pa.ipc.open_file(source).read_all()
                        except pa.ArrowInvalid:
                            table = pa.ipc.open_stream(source).read_all()
                hit = token in str(table.to_pylist())
            except Exception:  # not decodable: the raw bytes said what they could
                pass
        if hit:
            found.append(path)
    return found


class Leased:
    """A cube actor as tests call it directly: ``leased.add.remote(...)`` passes the activation's lease."""

    def __init__(self, activation: Any) -> None:
        self.activation = activation
        self.handle = activation.handle

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.handle, name)
        lease = self.activation.lease

        class _Bound:
            @staticmethod
            def remote(*args: Any, **kwargs: Any) -> Any:
                return method.remote(lease, *args, **kwargs)

        return _Bound


def user_key(base_url: str, principal: str) -> str:
    """A key of a new user ``principal`` (made by the suite's administrator)."""
    import httpx

    with httpx.Client(base_url=base_url, headers=bearer(ADMIN_KEY), timeout=60) as admin:
        r = admin.post("/v1/principals", json={"id": principal, "kind": "user"})
        assert r.status_code == 201, r.text
        r = admin.post("/v1/keys", json={"principal": principal})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])


def adapter_info(cube_id: str, base: Any, sources: list[Any], adapter_id: str = "ad-000000000001") -> Any:
    """The record of a tiny adapter (no training: for the stores and bundles that carry one)."""
    from memos_ray.types import AdapterInfo, AdapterSettings, TrainingMetrics, utcnow

    metrics = {name: 1 for name, field in TrainingMetrics.model_fields.items() if field.is_required()}
    return AdapterInfo(
        id=adapter_id,
        cube_id=cube_id,
        version=1,
        base_model=base,
        settings=AdapterSettings(rank=4),
        sources=sources,
        metrics=TrainingMetrics.model_validate(metrics),
        created_at=utcnow(),
        created_by="alice",
        bytes=24,
    )
