"""Run by test_multinode.py in its own process: a real multi-node Ray cluster on this machine.

Two worker nodes carry custom resources ``worker_0`` / ``worker_1``; the Scheduler pins one
model worker to each, builds a KV cache on the first node and moves it to the second
through the object store. Then a LoRA adapter's weights, put in the object store by this
driver on the head node, are loaded by both workers (no shared filesystem). Prints one JSON
line with what it saw.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ray
from ray.cluster_utils import Cluster

from actors.scheduler import SchedulerActor
from memos_ray.activation import kvcache
from memos_ray.config import LLMConfig, MemosConfig, StorageConfig, WorkersConfig
from memos_ray.types import ChatMessage, ChatPlan, MemoryItem, utcnow


def main(models: Path) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = [cluster.add_node(num_cpus=1, resources={f"worker_{i}": 1}) for i in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="memos_multinode", log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as data:
            config = MemosConfig(
                namespace="memos_multinode",
                storage=StorageConfig(data_dir=Path(data)),
                llm=LLMConfig(dtype="float32", cache_dir=models),
                workers=WorkersConfig(count=2, num_cpus=0.25, resources=[{"worker_0": 0.5}, {"worker_1": 0.5}]),
            )
            scheduler = SchedulerActor.remote(config)
            ray.get(scheduler.ready.remote())
            workers = [ray.get_actor(f"memos_worker:{i}", namespace=config.namespace) for i in range(2)]
            now = utcnow()
            mems = [
                MemoryItem(id=f"m{i}", cube_id="c", version=1, created_at=now, updated_at=now, text=f"Fact {i}: x{i}.")
                for i in range(20)
            ]
            plan = ChatPlan(
                prefix_text=kvcache.render_memories(mems),
                sources=[m.ref for m in mems],
                messages=[ChatMessage(content="What is fact 3?")],
                max_tokens=8,
                temperature=0,
                seed=0,
                use_kv=True,
            )
            seen = []
            for w in (0, 1):
                placement = ray.get(scheduler.place.remote(plan, w))
                outcome = ray.get(placement.handle.chat.remote(plan, placement))
                scheduler.release.remote(placement.worker, placement.key, outcome.kv, outcome.adapter)
                info = outcome.kv
                seen.append(
                    {
                        "status": info.status,
                        "moved_bytes": info.moved_bytes,
                        "move_ms": info.move_ms,
                        "tokens": outcome.token_ids,
                    }
                )
            adapter = _adapter_on_both(workers, models)
            stats = [ray.get(w.stats.remote()) for w in workers]
            print(
                json.dumps(
                    {
                        "worker_nodes": [s["node"] for s in stats],
                        "node_ids": [n.node_id for n in nodes],
                        "head": cluster.head_node.node_id,
                        "chats": seen,
                        "adapter": adapter,
                    }
                )
            )
    finally:
        ray.shutdown()
        cluster.shutdown()


def _adapter_on_both(workers: list[ray.actor.ActorHandle], models: Path) -> dict[str, object]:
    """Random non-zero LoRA weights from the head node's object store, loaded on each worker node."""
    import copy

    import numpy as np
    from peft import get_peft_model, get_peft_model_state_dict

    from memos_ray.llm import load_model
    from memos_ray.parametric.training import lora_config, state_nbytes
    from memos_ray.types import AdapterRef, AdapterSettings

    settings = AdapterSettings(rank=4)
    lm = load_model(LLMConfig(dtype="float32", cache_dir=models), models)
    wrapped = get_peft_model(copy.deepcopy(lm.model), lora_config(settings, init_lora_weights=False))
    state = {k: v.detach().float().numpy().copy() for k, v in get_peft_model_state_dict(wrapped).items()}
    ref = AdapterRef(
        adapter_id="ad-cross",
        cube_id="c",
        version=1,
        base_model=ray.get(workers[0].identity.remote()),
        settings=settings,
        bytes=state_nbytes(state),
    )
    from actors.handoff import AdapterWeights

    weights = AdapterWeights(ref, ray.put(state))
    load_ms = [ray.get(w.load_adapter.remote(weights)) * 1000 for w in workers]
    ids = [1, 504, 3, 9218, 314]
    logits = [ray.get(w.logits.remote(ids, ref.adapter_id)) for w in workers]
    base = ray.get(workers[1].logits.remote(ids, None))
    return {
        "load_ms": load_ms,
        "identical": bool(np.array_equal(logits[0], logits[1])),
        "differs_from_base": not bool(np.allclose(logits[1], base)),
    }


if __name__ == "__main__":
    main(Path(sys.argv[1]))
