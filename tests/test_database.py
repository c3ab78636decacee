"""The relational stores' one database layer, against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from memos_ray.config import StorageConfig
from memos_ray.database import Schema, open_database, upsert
from memos_ray.errors import Unavailable
from memos_ray.governance.audit import AuditStore
from memos_ray.governance.identity import ADMIN, IdentityStore
from memos_ray.parametric.jobs import INTERRUPTED, JobStore
from memos_ray.plaintext.catalog import CatalogStore
from memos_ray.scheduling.marks import LifecycleMarks, Mark
from memos_ray.types import AuditEvent, CubeMeta, PrincipalCreate, TrainingJob, utcnow
from tests.postgres import fresh_database

SCHEMA = Schema("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, n INTEGER NOT NULL, at REAL, doc TEXT);")


def test_one_sql_runs_on_both_upserts_transactions_and_full_precision(tmp_path: Path, database_uri: str | None) -> None:
    db = open_database(tmp_path / "t.db", SCHEMA, database_uri)
    assert db.dialect == ("sqlite" if database_uri is None else "postgres")
    put = upsert("t", ["k", "n", "at", "doc"], ["k"])
    at = 1_764_620_000.123456  # a timestamp: PostgreSQL's 4-byte REAL would keep ~7 digits of it
    db.executemany(put, [("a", 1, at, "x"), ("b", 2**40, None, "y")])
    db.execute(put, ("a", 3, at, "z"))  # the upsert replaces
    assert db.execute("SELECT k, n, at, doc FROM t ORDER BY k") == [("a", 3, at, "z"), ("b", 2**40, None, "y")]
    with pytest.raises(RuntimeError), db.transaction():  # a failed block leaves nothing
        db.execute(put, ("c", 4, None, None))
        raise RuntimeError("half-way")
    assert db.execute("SELECT count(*) FROM t") == [(2,)]
    db.close()
    again = open_database(tmp_path / "t.db", SCHEMA, database_uri)  # the schema is created only once
    assert again.execute("SELECT n FROM t WHERE k = ?", ("b",)) == [(2**40,)]


def test_lifecycle_marks_survive_a_restart(tmp_path: Path, database_uri: str | None) -> None:
    marks = LifecycleMarks(tmp_path / "m.db", database_uri)
    marks.put("c", Mark(merge_seq=3, seq=7, next_due=None, swept_at=1_764_620_000.5))
    marks.put("d", Mark(merge_seq=1, seq=1, next_due=1_764_700_000.25, swept_at=1.0))
    marks.put("c", Mark(merge_seq=4, seq=9, next_due=2.5, swept_at=3.5))
    marks.forget("d")
    marks.close()
    assert LifecycleMarks(tmp_path / "m.db", database_uri).marks == {"c": Mark(4, 9, 2.5, 3.5)}


def test_a_postgres_store_reconnects_when_its_connection_is_cut_and_a_dead_server_is_unavailable(
    tmp_path: Path, postgres: str
) -> None:
    import psycopg

    uri = fresh_database(postgres)
    store = IdentityStore(tmp_path / "identity.db", uri)
    audit = AuditStore(tmp_path / "audit.db", tmp_path / "audit.key", uri)
    store.create_principal(PrincipalCreate(id="before"), ADMIN)
    audit.append([AuditEvent(action="x")])
    with psycopg.connect(uri, autocommit=True) as conn:  # the server drops every connection of the stores
        cut = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
        conn.execute(f"{cut} AND pid <> pg_backend_pid()")
    store.create_principal(PrincipalCreate(id="after"), ADMIN)  # reconnects, and the write lands
    assert {"before", "after"} <= set(IdentityStore(tmp_path / "identity.db", uri).principals)
    assert audit.append([AuditEvent(action="y")])[0].seq == 2  # a transaction checks its connection first
    assert AuditStore(tmp_path / "audit.db", tmp_path / "audit.key", uri).verify().records == 2
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Unavailable, match=f"127.0.0.1:{port}/memos does not answer"):
        IdentityStore(tmp_path / "other.db", f"postgresql://memos@127.0.0.1:{port}/memos")


def _cube(cube_id: str) -> CubeMeta:
    now = utcnow()
    return CubeMeta(id=cube_id, created_at=now, updated_at=now, owner="alice")


def test_the_catalog_keeps_cubes_on_both_and_imports_an_earlier_versions_milvus_lite_catalog(
    tmp_path: Path, database_uri: str | None
) -> None:
    from memos_ray.plaintext.storage import _PLACEHOLDER_DIM, _PLACEHOLDER_VEC, MilvusTable, _close_client, _open_client

    legacy = str(tmp_path / "catalog.db")  # how an earlier version kept it: a milvus-lite collection
    client = _open_client(legacy, 15.0)
    old = MilvusTable(client, "memos_catalog", _PLACEHOLDER_DIM)
    old.upsert(
        [{"pk": m.id, "seq": 3, "vec": _PLACEHOLDER_VEC, "doc": m.model_dump(mode="json")} for m in map(_cube, "ab")]
    )
    old.flush()
    _close_client(client, legacy, True)

    storage = StorageConfig(data_dir=tmp_path, database_uri=database_uri)
    catalog = CatalogStore(storage)
    assert set(catalog.load()) == {"a", "b"}
    assert catalog.load()["a"].owner == "alice" and not (tmp_path / "catalog.db").exists()
    catalog.put(_cube("c"))
    catalog.put(catalog.load()["b"].model_copy(update={"seq": 9}))
    catalog.delete("a")
    catalog.close()
    again = CatalogStore(storage)  # durable, and the import is not repeated
    assert set(again.load()) == {"b", "c"} and again.load()["b"].seq == 9


def test_training_jobs_survive_a_restart_and_one_that_was_running_is_failed_saying_why(
    tmp_path: Path, database_uri: str | None
) -> None:
    jobs = JobStore(tmp_path / "jobs.db", kept=10, uri=database_uri)
    made = [
        TrainingJob(id=f"j{i}", cube_id="c", steps=4, memories=3, created_by="alice", created_at=utcnow())
        for i in range(5)
    ]
    for job in made[:4]:
        jobs.put(job)
    jobs.put(made[0].model_copy(update={"state": "succeeded", "adapter_id": "ad-1", "finished_at": utcnow()}))
    jobs.put(made[1].model_copy(update={"state": "running", "step": 2}))
    jobs.close()
    again = JobStore(tmp_path / "jobs.db", kept=2, uri=database_uri)
    assert again["j0"].state == "succeeded" and again["j0"].adapter_id == "ad-1"
    assert again["j1"].state == "failed" and again["j1"].error == INTERRUPTED  # its task died with its owner
    assert again["j3"].state == "failed"  # so did a queued one's
    forgotten = again.put(made[4])  # five jobs, two kept: the oldest finished ones go, never an unfinished one
    assert forgotten == ["j0", "j1", "j2"] and list(again.jobs) == ["j3", "j4"]
    again.close()
    assert list(JobStore(tmp_path / "jobs.db", kept=2, uri=database_uri).jobs) == ["j3", "j4"]
