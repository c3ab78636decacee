"""Identities, access rules, the audit log and redaction, without Ray."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from memos_ray.config import RedactionConfig, RedactionPattern
from memos_ray.errors import Conflict, CubeNotFound, Forbidden, InvalidInput, Unauthenticated
from memos_ray.governance.access import require, role_on
from memos_ray.governance.audit import AuditStore
from memos_ray.governance.identity import ADMIN, IdentityStore, hash_key
from memos_ray.governance.redact import Redactor
from memos_ray.types import (
    AuditEvent,
    AuditQuery,
    AuditRecord,
    CubeMeta,
    Grant,
    KeyCreate,
    MemoryCreate,
    PrincipalCreate,
    PrincipalUpdate,
    Role,
    utcnow,
)


@pytest.fixture()
def ids(tmp_path: Path, database_uri: str | None) -> IdentityStore:
    store = IdentityStore(tmp_path / "identity.db", database_uri)
    store.bootstrap(None, tmp_path / "admin.key")
    for req in (
        PrincipalCreate(id="ops", kind="team"),
        PrincipalCreate(id="alice", teams=["ops"]),
        PrincipalCreate(id="bob"),
        PrincipalCreate(id="alice-bot", kind="agent", parent="alice"),
    ):
        store.create_principal(req, ADMIN)
    return store


def test_bootstrap_writes_a_private_admin_key_once(tmp_path: Path, database_uri: str | None) -> None:
    store = IdentityStore(tmp_path / "identity.db", database_uri)
    key = store.bootstrap(None, tmp_path / "admin.key")
    assert key is not None and (tmp_path / "admin.key").read_text().strip() == key
    assert (tmp_path / "admin.key").stat().st_mode & 0o777 == 0o600
    assert store.authenticate(key).admin
    assert store.bootstrap(None, tmp_path / "admin.key") is None  # not again
    if database_uri is None:  # the database and its WAL
        raw = b"".join(f.read_bytes() for f in tmp_path.glob("identity.db*"))
    else:
        raw = str(store._db.execute("SELECT * FROM api_keys") + store._db.execute("SELECT * FROM principals")).encode()
    assert key.encode() not in raw and hash_key(key).encode() in raw  # stored hashed


def test_keys_authenticate_until_revoked_expired_or_disabled(
    ids: IdentityStore, tmp_path: Path, database_uri: str | None
) -> None:
    issued = ids.issue_key(KeyCreate(principal="alice-bot"), "alice")
    who = ids.authenticate(issued.key)
    assert who.principal == "alice-bot" and not who.admin
    assert who.subjects == ["alice-bot", "alice", "ops"]  # itself, its user, its user's team
    ids.update_principal("alice", PrincipalUpdate(disabled=True))
    with pytest.raises(Unauthenticated, match="disabled"):
        ids.authenticate(issued.key)  # an agent of a disabled user
    ids.update_principal("alice", PrincipalUpdate(disabled=False))
    ids.revoke_key(issued.info.key_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        ids.authenticate(issued.key)
    old = ids.issue_key(KeyCreate(principal="bob", expires_at=utcnow() - timedelta(seconds=1)), ADMIN)
    with pytest.raises(Unauthenticated, match="expired"):
        ids.authenticate(old.key)
    for bad in (None, "", "mrk_nothing", issued.key + "x"):
        with pytest.raises(Unauthenticated):
            ids.authenticate(bad)
    reopened = IdentityStore(tmp_path / "identity.db", database_uri)  # all of it durable
    with pytest.raises(Unauthenticated, match="revoked"):
        reopened.authenticate(issued.key)


def test_principal_rules(ids: IdentityStore) -> None:
    with pytest.raises(Conflict):
        ids.create_principal(PrincipalCreate(id="bob"), ADMIN)
    with pytest.raises(InvalidInput, match="parent"):
        ids.create_principal(PrincipalCreate(id="orphan", kind="agent"), ADMIN)
    with pytest.raises(InvalidInput, match="not to another agent"):
        ids.create_principal(PrincipalCreate(id="sub", kind="agent", parent="alice-bot"), ADMIN)
    with pytest.raises(InvalidInput, match="not a team"):
        ids.create_principal(PrincipalCreate(id="x", teams=["bob"]), ADMIN)
    with pytest.raises(InvalidInput, match="team"):
        ids.issue_key(KeyCreate(principal="ops"), ADMIN)
    with pytest.raises(InvalidInput, match="reserved"):  # the owner of cubes made before identities existed
        ids.create_principal(PrincipalCreate(id="local"), ADMIN)


def test_roles_owner_grants_teams_and_the_404_403_split(ids: IdentityStore) -> None:
    now = utcnow()
    meta = CubeMeta(
        id="c",
        owner="alice",
        grants=[Grant(principal="bob", role=Role.read), Grant(principal="ops", role=Role.write)],
        created_at=now,
        updated_at=now,
    )
    callers = {p: ids.authenticate(ids.issue_key(KeyCreate(principal=p), ADMIN).key) for p in ("alice", "bob")}
    callers["alice-bot"] = ids.authenticate(ids.issue_key(KeyCreate(principal="alice-bot"), ADMIN).key)
    assert role_on(meta, callers["alice"]) == Role.admin
    assert role_on(meta, callers["alice-bot"]) == Role.admin  # acts for its owner
    assert role_on(meta, callers["bob"]) == Role.read
    with pytest.raises(Forbidden, match="needs write"):
        require(meta, callers["bob"], Role.write)
    ids.create_principal(PrincipalCreate(id="erin", teams=["ops"]), ADMIN)
    erin = ids.authenticate(ids.issue_key(KeyCreate(principal="erin"), ADMIN).key)
    assert role_on(meta, erin) == Role.write  # through the team
    ids.create_principal(PrincipalCreate(id="mallory"), ADMIN)
    mallory = ids.authenticate(ids.issue_key(KeyCreate(principal="mallory"), ADMIN).key)
    with pytest.raises(CubeNotFound):  # no role at all: the cube does not exist for her
        require(meta, mallory, Role.read)


def test_audit_log_is_append_only_chained_and_durable(tmp_path: Path, database_uri: str | None) -> None:
    path = tmp_path / "audit.db"
    store = AuditStore(path, tmp_path / "audit.key", database_uri)
    store.append([AuditEvent(action="memory.add", cube_id="c", memory_id=f"m{i}", principal="alice") for i in range(3)])
    store.append([AuditEvent(action="access", result="denied", status=404, cube_id="c", principal="bob")])
    store.append([AuditEvent(action="cube.share", cube_id="d", principal="alice")])
    assert [r.seq for r in store.query(AuditQuery(cube_id="c")).records] == [1, 2, 3, 4]
    assert [r.principal for r in store.query(AuditQuery(result="denied")).records] == ["bob"]
    assert len(store.query(AuditQuery(action="memory.")).records) == 3
    page = store.query(AuditQuery(limit=2))
    assert page.next_after_seq == 2 and len(store.query(AuditQuery(after_seq=2)).records) == 3
    refused = ["UPDATE audit SET principal = 'eve'", "DELETE FROM audit"]
    for sql in [*refused, "TRUNCATE audit"] if database_uri else refused:
        with pytest.raises(Exception, match="append-only"):
            store._db.execute(sql)
    store.close()
    reopened = AuditStore(path, tmp_path / "audit.key", database_uri)
    assert reopened.verify().ok and reopened.verify().records == 5
    assert reopened.append([AuditEvent(action="x")])[0].seq == 6  # the chain continues
    # Someone edits the database behind the log's back: the chain shows where.
    tamper = "UPDATE audit SET doc = replace(doc, '\"bob\"', '\"eve\"') WHERE seq = 4"
    if database_uri is None:
        raw = sqlite3.connect(path)
        raw.execute("DROP TRIGGER audit_no_update")
        raw.execute(tamper)
        raw.commit()
    else:
        import psycopg

        with psycopg.connect(database_uri, autocommit=True) as conn:
            conn.execute("ALTER TABLE audit DISABLE TRIGGER audit_no_change")
            conn.execute(tamper)
    assert reopened.verify().first_bad_seq == 4


def test_a_chain_rebuilt_without_the_key_does_not_verify_and_an_unkeyed_past_still_does(tmp_path: Path) -> None:
    import hashlib

    from memos_ray.governance.audit import GENESIS, AuditKey

    path, key_file = tmp_path / "audit.db", tmp_path / "audit.key"
    legacy = AuditStore(path, key_file)  # as if an earlier version wrote two records with plain SHA-256
    legacy.key = AuditKey(key=legacy.key.key, unkeyed_until=10**9)
    legacy.append([AuditEvent(action="old", principal="alice"), AuditEvent(action="old", principal="bob")])
    legacy.close()
    key_file.unlink()
    store = AuditStore(path, key_file)  # this version: a key is made, the two records stay unkeyed
    assert AuditKey.model_validate_json(key_file.read_text()).unkeyed_until == 2
    assert (key_file.stat().st_mode & 0o777) == 0o600
    store.append([AuditEvent(action="memory.add", principal="alice", cube_id="c")])
    assert store.verify().ok and store.verify().records == 3
    store.close()

    # Someone who can write the database, not read the key, rewrites every record and recomputes the
    # chain the only way they can: the result does not verify from the first keyed record on.
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER audit_no_update")
    head = GENESIS
    for seq, doc in raw.execute("SELECT seq, doc FROM audit ORDER BY seq").fetchall():
        record = AuditRecord.model_validate_json(doc)
        if seq == 3:
            record = record.model_copy(update={"principal": "eve"})
        body = record.model_dump_json(include=set(AuditEvent.model_fields))
        digest = hashlib.sha256(f"{head}|{seq}|{body}".encode()).hexdigest()
        record = record.model_copy(update={"prev_hash": head, "hash": digest})
        raw.execute(
            "UPDATE audit SET doc = ?, principal = ? WHERE seq = ?", (record.model_dump_json(), record.principal, seq)
        )
        head = digest
    raw.commit()
    assert AuditStore(path, key_file).verify().first_bad_seq == 3


def test_redaction_masks_secrets_and_personal_data_but_not_ordinary_numbers() -> None:
    r = Redactor(RedactionConfig(patterns=[RedactionPattern(name="ticket", regex=r"TCK-\d{6}")]))
    item = MemoryCreate(
        text="Mail jane.doe@example.com or call +1 415-555-0132; my password is hunter2!! and the key is "
        "sk-ant-api03-abcdefghijklmnopqrstuvwx, card 4111 1111 1111 1111, ticket TCK-123456.",
        context="IBAN GB82 WEST 1234 5698 7654 32",
        metadata={"note": "AKIAIOSFODNN7EXAMPLE", "n": 3},
    )
    masked, found = r.apply(item)
    assert found == {"email": 1, "phone": 1, "password": 1, "api_key": 2, "credit_card": 1, "iban": 1, "ticket": 1}
    for secret in ("jane.doe", "555-0132", "hunter2", "sk-ant", "4111", "GB82", "AKIA", "123456"):
        assert secret not in masked.text + (masked.context or "") + str(masked.metadata)
    assert "my password is [REDACTED:password]" in masked.text  # the label stays, the value goes
    cut = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1x\n"  # no END line: still masked
    assert r.redact(cut)[0] == "[REDACTED:api_key]"
    plain = "On 2023-05-08 at 10:30 we met 12 people; 2019 2020 2021 were good years; I ran 5 km."
    assert r.redact(plain) == (plain, {})
    assert Redactor(RedactionConfig(enabled=False)).apply(item) == (item, {})
