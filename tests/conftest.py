"""Shared fixtures, after Ray's own: one Ray (and one Serve app) for the whole session.

Unit tests of ``memos_ray`` need none of it. Starting Ray costs seconds on 2 cores, so the
Ray fixtures are session-scoped and everything Ray-based shares them; tests that need a
differently configured Directory create their own actor inside the shared Ray.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private test cluster on loopback
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from memos_ray.config import DirectoryConfig, GovernanceConfig, LLMConfig, MemosConfig, StorageConfig, WorkersConfig
from memos_ray.governance.identity import hash_key
from tests.helpers import ADMIN_KEY, MODELS, bearer

if TYPE_CHECKING:
    from tests.milvus_server import MilvusProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that stands on the shared Ray session ``ray``: ``make test-fast`` deselects them
    by marker (``-m "not ray and not slow"``), with no hand-kept list of files."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


def _free_port() -> int:
    """A free port below Ray's ranges: Ray binds workers in 10002-19999 and its servers on ephemeral ports
    (32768+), so a port taken from either could be grabbed between this check and Serve binding it."""
    for port in range(8700, 9700):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 8700-9699")


@pytest.fixture()
def storage(tmp_path: Path) -> StorageConfig:
    return StorageConfig(data_dir=tmp_path / "data")


@pytest.fixture(scope="session")
def llm():  # type: ignore[no-untyped-def]
    """The real LLM in fp32, in this process (exact equality is tested)."""
    from memos_ray.config import LLMConfig
    from memos_ray.llm import load_model

    return load_model(LLMConfig(dtype="float32"), MODELS)


@pytest.fixture(scope="session")
def encoder():  # type: ignore[no-untyped-def]
    from memos_ray.plaintext.embedding import SentenceEncoder

    return SentenceEncoder(MemosConfig().embedder)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server for this session, started on first use (see tests/postgres.py)."""
    from tests.postgres import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def milvus() -> Iterator[MilvusProcess]:
    """A Milvus server for this session, started on first use (see tests/milvus_server.py)."""
    from tests.milvus_server import milvus_server

    with milvus_server() as server:
        yield server


@pytest.fixture(params=["lite", "server"])
def any_storage(request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    """Run a cube's test on both row stores: milvus-lite shard files, then a fresh database on a Milvus server."""
    if request.param == "lite":
        return StorageConfig(data_dir=tmp_path / "data")
    from tests.milvus_server import fresh_database

    return StorageConfig(data_dir=tmp_path / "data", milvus_uri=fresh_database(request.getfixturevalue("milvus").uri))


@pytest.fixture(params=["sqlite", "postgres"])
def database_uri(request: pytest.FixtureRequest) -> str | None:
    """Run a store's test against both of its databases: None (a SQLite file), then a fresh PostgreSQL one."""
    if request.param == "sqlite":
        return None
    from tests.postgres import fresh_database

    return fresh_database(request.getfixturevalue("postgres"))


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        namespace="memos_tests",
        log_to_driver=False,
        _metrics_export_port=_free_port(),  # tests/test_metrics.py scrapes it
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def config(tmp_path_factory: pytest.TempPathFactory) -> MemosConfig:
    data = tmp_path_factory.mktemp("memos-data")
    return MemosConfig(
        namespace="memos_tests",
        storage=StorageConfig(data_dir=data),
        directory=DirectoryConfig(max_live_cubes=8, warm_actors=2),  # 2 cores: no more processes than needed
        serve={"port": _free_port()},  # type: ignore[arg-type]
        llm=LLMConfig(dtype="float32", cache_dir=MODELS),  # fp32: exact equality is tested
        workers=WorkersConfig(count=2, num_cpus=0.25),
        governance=GovernanceConfig(admin_key_sha256=hash_key(ADMIN_KEY)),
        # off: deterministic prefixes elsewhere (tests/test_memscheduler.py turns it on); caches go cold in 8 s
        # parametric promotion off too (tests/test_parametric.py turns it on), and eager once on: 3 facts used once
        scheduler={  # type: ignore[arg-type]
            "enabled": False,
            "kv_idle_s": 8,
            "train_policy": False,
            "train_min_facts": 3,
            "train_stable_s": 0,
            "train_min_uses": 1,
            "train_settings": {"rank": 4, "alpha": 8, "steps": 4, "learning_rate": 0.01, "batch_size": 4},
        },
    )


@pytest.fixture(scope="session")
def runtime(ray_session: None, config: MemosConfig):  # type: ignore[no-untyped-def]
    from actors.runtime import ensure_runtime, shutdown_runtime

    rt = ensure_runtime(config)
    yield rt
    shutdown_runtime(config)


@pytest.fixture(scope="session")
def base_url(runtime, config: MemosConfig) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from ray import serve

    from serve.app import start

    url = start(config)
    yield url
    serve.shutdown()


@pytest.fixture(scope="session")
def admin_key(base_url: str) -> str:
    return ADMIN_KEY


@pytest.fixture(scope="session")
def api_key(base_url: str) -> str:
    """A key of the ordinary user ``tester``, which the HTTP tests act as."""
    import httpx

    with httpx.Client(base_url=base_url, headers=bearer(ADMIN_KEY), timeout=60) as admin:
        r = admin.post("/v1/principals", json={"id": "tester", "kind": "user"})
        assert r.status_code == 201, r.text
        r = admin.post("/v1/keys", json={"principal": "tester", "label": "test suite"})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])
