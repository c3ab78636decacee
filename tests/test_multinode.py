"""Model workers on different Ray nodes (ray.cluster_utils.Cluster): a KV cache moved between them, and a
LoRA adapter loaded on both from the object store.

The cluster runs in a child process: this session's tests share one local Ray, and a
process can join only one cluster.
"""

from __future__ import annotations

import pytest

from tests.helpers import MODELS, run_check

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # a Ray cluster of its own, in a child process


def test_workers_on_two_nodes_move_a_cache_and_an_adapter_through_the_object_store() -> None:
    seen = run_check("tests.multinode_check", str(MODELS))
    nodes = seen["worker_nodes"]
    assert nodes[0] != nodes[1], "the two workers share a node"
    assert set(nodes) == set(seen["node_ids"]) and seen["head"] not in nodes  # pinned by custom resources
    first, second = seen["chats"]
    assert first["status"] == "built" and second["status"] == "moved" and second["moved_bytes"] > 0
    assert first["tokens"] == second["tokens"] and first["tokens"]
    assert second["move_ms"] is not None  # pulled from the other node's object store inside the chat call
    print(f"cross-node move: {second['moved_bytes'] / 1e6:.1f} MB in {second['move_ms']:.1f} ms")
    adapter = seen["adapter"]  # LoRA weights from the head's object store, loaded on both worker nodes
    assert adapter["identical"] and adapter["differs_from_base"], adapter
    print(f"adapter loads across nodes: {adapter['load_ms']} ms")
