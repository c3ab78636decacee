"""What a failure becomes over HTTP (no Ray started): ours as itself, a lost part of the cluster a 503 to retry,
anything else a 500."""

from __future__ import annotations

from ray.exceptions import ActorDiedError, NodeDiedError, ObjectLostError

from memos_ray import errors as e
from serve.errors import as_memos_error


def test_a_lost_actor_object_or_node_is_a_503_and_the_rest_a_500() -> None:
    lost = [ActorDiedError(), ObjectLostError("ab" * 14, None, ""), NodeDiedError("node 1 died")]
    for exc in lost:
        answer = as_memos_error(exc)
        assert isinstance(answer, e.Unavailable) and answer.status_code == 503, exc
    assert isinstance(as_memos_error(e.CubeNotFound("cube x not found")), e.CubeNotFound)
    assert as_memos_error(ValueError("boom")).status_code == 500
