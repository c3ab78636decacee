"""The lifecycle of plaintext memory on a real milvus-lite cube and the real MiniLM encoder, without Ray:
expiry, archiving, near-duplicate merge, supersession with validity, ingest dedup, restore, stable ids
across every move and a reload, and a purge that leaves no file holding the erased text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from memos_ray.config import SearchConfig, StorageConfig
from memos_ray.errors import Conflict, InvalidInput, MemoryNotFound
from memos_ray.plaintext.cube import MemCube
from memos_ray.plaintext.embedding import SentenceEncoder
from memos_ray.plaintext.storage import CubeStore
from memos_ray.plaintext.text import index_text
from memos_ray.types import (
    CubeMeta,
    LifecyclePolicy,
    LifecycleState,
    MemoryCreate,
    MemoryItem,
    MemoryKind,
    MemoryRef,
    MemoryUpdate,
    SearchFilter,
    SearchQuery,
    SourceIn,
    utcnow,
)
from tests.helpers import crash_mid_purge, traces

DAY = 86_400.0


def open_cube(storage: StorageConfig, policy: LifecyclePolicy | None = None) -> MemCube:
    now = utcnow()
    return MemCube(CubeMeta(id="life", created_at=now, updated_at=now, lifecycle=policy), storage, SearchConfig(), 384)


def add(cube: MemCube, encoder: SentenceEncoder, items: list[MemoryCreate]) -> list[MemoryItem]:
    vecs = encoder.encode([index_text(m.text, m.source.speaker) for m in items])
    return cube.add(items, vecs, "tester").items


def said(text: str, speaker: str, kind: MemoryKind = MemoryKind.dialogue, **more: object) -> MemoryCreate:
    return MemoryCreate(text=text, kind=kind, source=SourceIn(speaker=speaker), **more)  # type: ignore[arg-type]


def search(cube: MemCube, encoder: SentenceEncoder, query: str, mode: str = "hybrid", **filters: object) -> list[str]:
    q = SearchQuery(query=query, top_k=10, mode=mode, filter=SearchFilter(**filters))  # type: ignore[arg-type]
    return [h.memory.id for h in cube.search(q, encoder.encode([query])[0])]


def test_expire_archive_and_merge_move_memories_and_keep_every_id(
    storage: StorageConfig, encoder: SentenceEncoder
) -> None:
    policy = LifecyclePolicy(ttl_s={MemoryKind.event: 2 * DAY}, archive_after_s=30 * DAY, merge_threshold=0.93)
    cube = open_cube(storage, policy)
    first, dup, other_speaker, used, event, unrelated = add(
        cube,
        encoder,
        [
            said("I adopted a puppy named Biscuit last week.", "Caroline"),
            said("I adopted a puppy named Biscuit last week!", "Caroline"),
            said("I adopted a puppy named Biscuit last week.", "Melanie"),  # another speaker: not a duplicate
            said("My sister runs a bakery in Lyon.", "Caroline"),
            said("The quarterly review is on Friday.", "Caroline", MemoryKind.event),
            said("We repainted the kitchen yellow.", "Caroline"),
        ],
    )
    now = utcnow().timestamp()
    soon = cube.sweep_lifecycle({}, now, 0, "pinned", "memscheduler")
    assert soon.merged == {dup.id: first.id} and not soon.expired and not soon.archived
    assert soon.checked == 6 and soon.next_due == pytest.approx(event.updated_at.timestamp() + 2 * DAY, abs=1)
    survivor, merged = cube.get(first.id), cube.get(dup.id)
    assert merged.state == LifecycleState.merged and merged.merged_into == first.id
    assert survivor.merged_from == [dup.ref] and survivor.state == LifecycleState.active
    assert merged.provenance.author == "memscheduler" and cube.versions(dup.id)[0].text == dup.text  # kept
    hits = search(cube, encoder, "puppy named Biscuit")
    assert first.id in hits and other_speaker.id in hits and dup.id not in hits

    again = cube.sweep_lifecycle({}, now, soon.merge_seq, "pinned", "memscheduler")
    assert again.checked == 0 and not again.moved  # nothing new: nothing compared

    # restoring a merged memory takes it out of the survivor (still active); the policy never merges it again
    restored = cube.update(dup.id, MemoryUpdate(state=LifecycleState.active), None, "alice")
    assert restored.state == LifecycleState.active and restored.merged_into is None
    assert cube.get(first.id).merged_from == [] and cube.get(first.id).state == LifecycleState.active
    assert cube.sweep_lifecycle({}, now, 0, "pinned", "memscheduler").merged == {}

    # forty days on: the event expired; what was not used is archived; what was used stays
    later = now + 40 * DAY
    swept = cube.sweep_lifecycle({used.id: later - DAY}, later, again.merge_seq, "pinned", "memscheduler")
    # the policy's own versions renew no clock: archived at +40 days, it expires by its last write, not then
    assert cube.get(first.id).provenance.author == "memscheduler"
    assert swept.expired == [event.id]
    assert set(swept.archived) == {first.id, dup.id, other_speaker.id, unrelated.id}
    assert cube.get(used.id).state == LifecycleState.active
    assert not {first.id, other_speaker.id, dup.id} & set(search(cube, encoder, "puppy named Biscuit"))
    assert first.id in search(cube, encoder, "puppy named Biscuit", states=[LifecycleState.archived])

    with pytest.raises(Conflict):  # only an active memory is archived by hand
        cube.update(event.id, MemoryUpdate(state=LifecycleState.archived), None, "alice")

    # every id still answers after a reload, in the state it was moved to
    states = {m: cube.get(m).state for m in (first.id, dup.id, event.id, used.id)}
    cube.close()
    reloaded = open_cube(storage, policy)
    assert {m: reloaded.get(m).state for m in states} == states
    reloaded.close()


def test_a_salience_bar_archives_small_talk_and_keeps_unused_facts(
    storage: StorageConfig, encoder: SentenceEncoder
) -> None:
    policy = LifecyclePolicy(archive_after_s=30 * DAY, archive_below_salience=2.5)
    cube = open_cube(storage, policy)
    talk = add(cube, encoder, [said(t, "Caroline") for t in ("Thanks, that's great!", "Great, thanks!")])
    facts = add(
        cube,
        encoder,
        [
            said("My sister runs a bakery in Lyon.", "Caroline"),
            said("The staging server is called Orion-5G.", "Caroline"),
            said("Biscuit the puppy turns two in March.", "Caroline"),
            said("Great news: the dentist moved my appointment to Tuesday, thanks!", "Caroline"),
        ],
    )
    saliences = {m.text: cube.index.salience(m) for m in [*talk, *facts]}
    assert max(saliences[m.text] for m in talk) < 2.5 <= min(saliences[m.text] for m in facts), saliences
    later = utcnow().timestamp() + 40 * DAY  # nothing used for forty days
    swept = cube.sweep_lifecycle({}, later, 0, "pinned", "memscheduler")
    assert sorted(swept.archived) == sorted(m.id for m in talk)
    assert all(cube.get(m.id).state == LifecycleState.active for m in facts)
    assert swept.next_due is None  # what says enough is never due for archiving
    # without the bar, the same month archives everything unused
    cube.meta = cube.meta.model_copy(update={"lifecycle": LifecyclePolicy(archive_after_s=30 * DAY)})
    assert sorted(cube.sweep_lifecycle({}, later, 0, "pinned", "memscheduler").archived) == sorted(m.id for m in facts)


def test_supersession_closes_validity_and_search_can_ask_as_of(
    storage: StorageConfig, encoder: SentenceEncoder
) -> None:
    cube = open_cube(storage)
    y2020, y2023 = datetime(2020, 1, 1, tzinfo=UTC), datetime(2023, 6, 1, tzinfo=UTC)
    (old,) = add(cube, encoder, [MemoryCreate(text="Dana lives in Boston.", valid_from=y2020)])
    (new,) = add(cube, encoder, [MemoryCreate(text="Dana lives in Denver.", valid_from=y2023, supersedes=[old.id])])
    closed = cube.get(old.id)
    assert closed.state == LifecycleState.superseded and closed.superseded_by == new.id and closed.valid_to == y2023
    assert new.supersedes == [old.id] and cube.versions(old.id)[0].valid_to is None  # the old version stays
    assert search(cube, encoder, "where does Dana live?") == [new.id]
    assert search(cube, encoder, "where does Dana live?", as_of=y2020 + timedelta(days=400)) == [old.id]
    assert search(cube, encoder, "where does Dana live?", as_of=y2023 + timedelta(days=1)) == [new.id]

    with pytest.raises(InvalidInput):  # named ids must be in the cube: nothing is written otherwise
        add(cube, encoder, [MemoryCreate(text="Dana moved again.", supersedes=["m-nowhere"])])
    with pytest.raises(InvalidInput):
        cube.update(new.id, MemoryUpdate(supersedes=[new.id]), None, "alice")
    with pytest.raises(InvalidInput):
        cube.update(new.id, MemoryUpdate(valid_to=y2020), None, "alice")
    assert len(cube.latest) == 2

    back = cube.update(old.id, MemoryUpdate(state=LifecycleState.active), None, "alice")
    assert back.valid_to is None and back.superseded_by is None and cube.get(new.id).supersedes == []

    # a fact valid only from the future, superseded now: its validity closes empty, and it stays editable
    (planned,) = add(
        cube, encoder, [MemoryCreate(text="Dana will move to Oslo.", valid_from=datetime(2031, 1, 1, tzinfo=UTC))]
    )
    add(cube, encoder, [MemoryCreate(text="Dana stays in Denver.", supersedes=[planned.id])])
    closed = cube.get(planned.id)
    assert closed.valid_to == closed.valid_from and closed.state == LifecycleState.superseded
    assert cube.update(planned.id, MemoryUpdate(tags=["plans"]), None, "alice").tags == ["plans"]
    assert cube.update(planned.id, MemoryUpdate(state=LifecycleState.active), None, "alice").valid_to is None


def test_ingest_dedup_returns_the_existing_memory(storage: StorageConfig, encoder: SentenceEncoder) -> None:
    cube = open_cube(storage, LifecyclePolicy(dedup_threshold=0.95))
    (kept,) = add(cube, encoder, [said("Remember to water the ferns on Sunday.", "Ana")])
    texts = ["Remember to water the ferns on Sunday!", "Buy oat milk.", "Buy oat milk!"]
    items = [said(t, "Ana") for t in texts]
    added = cube.add(items, encoder.encode([index_text(t, "Ana") for t in texts]), "tester")
    assert added.duplicates == [0, 2] and added.items[0].id == kept.id and added.items[2].id == added.items[1].id
    assert len(cube.latest) == 2
    other = said("Remember to water the ferns on Sunday.", "Ben")  # another speaker's words are stored
    assert cube.add([other], encoder.encode([index_text(other.text, "Ben")]), "t").duplicates == []


def test_a_purge_reaches_duplicates_derived_memories_and_quoting_contexts_and_leaves_no_file_with_the_text(
    storage: StorageConfig, encoder: SentenceEncoder
) -> None:
    cube = open_cube(storage, LifecyclePolicy(merge_threshold=0.93))
    secret = "My locker code is zebracorn-4417."
    first, copy, kept = add(
        cube,
        encoder,
        [said(secret, "Quinn"), said(secret + " ", "Quinn"), said("I like green tea.", "Quinn")],
    )
    cube.store.flush()  # sealed into segments, not only the write-ahead log
    answer = MemoryCreate(
        text="Your locker code is zebracorn-4417.",
        context=f"Quinn: {secret}",
        source=SourceIn(speaker="assistant", derived_from=[MemoryRef(memory_id=first.id, version=1)]),
    )
    reply = MemoryCreate(text="Thanks, noted.", context=f"Quinn: {secret}", source=SourceIn(speaker="Ana"))
    echo = MemoryCreate(text="Thanks, noted!", context=f"Quinn: {secret}", source=SourceIn(speaker="Ana"))
    derived, thanks, echoed = add(cube, encoder, [answer, reply, echo])
    cube.sweep_lifecycle({}, utcnow().timestamp(), 0, "pinned", "t")
    assert cube.get(copy.id).merged_into == first.id and cube.get(echoed.id).merged_into == thanks.id
    folder = storage.data_dir  # the cube's shard, its checkpoint: every file
    assert traces(folder, "zebracorn")  # it is on disk now

    purged = cube.purge(copy.id)  # a near-duplicate: its group and what was made from it go too
    assert set(purged.memory_ids) == {copy.id, first.id, derived.id}
    assert set(purged.scrubbed) == {thanks.id, echoed.id}
    # the survivor was searched by its duplicate's context too: not any more
    assert search(cube, encoder, "zebracorn-4417 locker code", mode="bm25") == []
    assert cube.get(thanks.id).context is None and cube.get(kept.id).text == "I like green tea."
    for memory_id in purged.memory_ids:
        with pytest.raises(MemoryNotFound):
            cube.get(memory_id)
    assert all("zebracorn" not in (e.memory.model_dump_json() if e.memory else "") for e in cube.changes)
    assert traces(folder, "zebracorn") == []
    cube.close()
    reloaded = open_cube(storage)
    assert set(reloaded.latest) == {kept.id, thanks.id, echoed.id} and traces(folder, "zebracorn") == []
    reloaded.close()


def test_a_purge_that_died_before_its_rewrite_is_finished_on_open(
    storage: StorageConfig, encoder: SentenceEncoder
) -> None:
    cube = open_cube(storage)
    assert isinstance(cube.store, CubeStore)
    _, kept, quoting = crash_mid_purge(cube, encoder)  # recorded what to leave out, removed nothing yet
    store = CubeStore.local(storage, "life", 384)
    assert store.state.generation == 1 and not store.state.rewrite_pending and store.state.erase == []
    assert set(store.client.list_collections()) == {"memos_counters", store._name(1)}
    store.close()
    reloaded = open_cube(storage)
    assert set(reloaded.latest) == {kept.id, quoting.id} and reloaded.get(quoting.id).context is None
    assert traces(storage.data_dir, "quokka") == []
    reloaded.close()
