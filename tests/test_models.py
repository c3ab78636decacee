from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from memos_ray import errors
from memos_ray.types import (
    CubeCreate,
    MemoryCreate,
    MemoryUpdate,
    MessagesCreate,
    SearchRequest,
    keyed_memory_ids,
    new_memory_id,
)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "a.b", "", "-x", "x" * 65, "a b", "..", "%2e%2e"])
def test_ids_that_look_like_paths_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        CubeCreate(id=bad)


def test_good_ids() -> None:
    assert CubeCreate(id="team-1_A").id == "team-1_A"


def test_memory_create_limits() -> None:
    with pytest.raises(ValidationError):
        MemoryCreate(text="   ")
    with pytest.raises(ValidationError):
        MemoryCreate(text="x" * 16_001)
    with pytest.raises(ValidationError):
        MemoryCreate(text="ok", unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        MemoryCreate(text="ok", tags=[""])


def test_naive_times_are_utc() -> None:
    m = MemoryCreate(text="x", said_at=datetime(2023, 5, 8, 13, 56))
    assert m.said_at == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    u = MemoryUpdate(said_at="2023-05-08T15:56:00+02:00")  # type: ignore[arg-type]
    assert u.said_at == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def test_update_state_only_active_or_archived() -> None:
    with pytest.raises(ValidationError):
        MemoryUpdate(state="deleted")  # type: ignore[arg-type]
    assert MemoryUpdate(state="archived").state == "archived"  # type: ignore[arg-type]


def test_search_request_needs_cubes() -> None:
    with pytest.raises(ValidationError):
        SearchRequest(query="x", cube_ids=[])
    with pytest.raises(ValidationError):
        MessagesCreate(messages=[])


def test_memory_ids_are_time_ordered_and_unique() -> None:
    ids = [new_memory_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)  # monotonic: a batch's ids sort in the order it was written
    assert all(len(i) == 23 for i in ids)
    keyed = keyed_memory_ids("scope|key", 1_700_000_000.0, 300)
    assert keyed == sorted(keyed) and keyed == keyed_memory_ids("scope|key", 1_700_000_000.0, 300)
    assert len(set(keyed)) == 300 and all(len(i) == 27 for i in keyed)


def test_error_tree() -> None:
    err = errors.VersionConflict("at 3", {"current_version": 3})
    assert isinstance(err, errors.Conflict) and isinstance(err, errors.MemosError)
    assert (err.code, err.message, err.details) == ("version_conflict", "at 3", {"current_version": 3})
    assert err.status_code == 409 and errors.status_of(errors.CubeNotFound) == 404
