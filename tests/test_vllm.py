"""The vLLM backend on the real model (``make test-vllm``: the ``[vllm]`` extra in its own environment).

Two engines, each with its own activation store, stand for two workers on two nodes: a prefix saved by one
reaches the other only through the Ray object store. Engine 0 is the one the Scheduler uses (same name), so
the HTTP chat at the end runs on an engine already started.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

vllm = pytest.importorskip("vllm", reason="the vllm extra (make test-vllm)")

import httpx  # noqa: E402
import ray  # noqa: E402

from actors.handoff import AdapterWeights, Placement  # noqa: E402
from actors.vllm_worker import VLLMWorkerActor  # noqa: E402
from actors.worker import worker_name  # noqa: E402
from memos_ray.activation import kvcache  # noqa: E402
from memos_ray.config import LLMConfig, MemosConfig, StorageConfig, WorkersConfig  # noqa: E402
from memos_ray.types import AdapterRef, AdapterSettings, ChatMessage, ChatPlan, MemoryItem, utcnow  # noqa: E402
from tests.helpers import MODELS, bearer  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(600)]

VLLM_WORKERS = {"backend": "vllm", "count": 1, "num_cpus": 0.25, "vllm_kv_cache_gb": 1, "vllm_max_model_len": 2048}


@pytest.fixture(scope="session")
def config(config: MemosConfig) -> MemosConfig:  # the suite's config, on vLLM workers
    return config.model_copy(update={"workers": WorkersConfig(**VLLM_WORKERS)})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engines(ray_session: None, config: MemosConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    other = config.model_copy(update={"storage": StorageConfig(data_dir=tmp_path_factory.mktemp("other-node"))})
    handles = [
        VLLMWorkerActor.options(  # type: ignore[attr-defined]
            name=worker_name(0), namespace=config.namespace, lifetime="detached", get_if_exists=True, num_cpus=0.25
        ).remote(0, config),
        VLLMWorkerActor.options(num_cpus=0.25).remote(1, other),  # type: ignore[attr-defined]
    ]
    ray.get([h.identity.remote() for h in handles])
    yield handles
    ray.kill(handles[1])  # engine 0 is the Scheduler's, ended with the session


def _plan(facts: int = 40, question: str = "What is fact 3?", **kw: Any) -> ChatPlan:
    now = utcnow()
    mems = [
        MemoryItem(
            id=f"m{i}", cube_id="c", version=1, created_at=now, updated_at=now, text=f"Fact {i}: x{i} is {i * 7}."
        )
        for i in range(facts)
    ]
    fields = {"max_tokens": 24, "temperature": 0.0, "seed": 0, "use_kv": True} | kw
    return ChatPlan(
        cube_ids=["c"],
        prefix_text=kvcache.render_memories(mems),
        sources=[m.ref for m in mems],
        messages=[ChatMessage(content=question)],
        **fields,
    )


def test_greedy_output_through_the_connector_equals_a_full_prefill(engines: list[Any]) -> None:
    w = engines[0]
    plan = _plan()
    full = ray.get(w.chat.remote(plan.model_copy(update={"use_kv": False})))
    built = ray.get(w.chat.remote(plan))
    hit = ray.get(w.chat.remote(plan))
    assert full.kv.status == "off" and full.prefill_tokens == full.prompt_tokens
    assert built.kv.status == "built" and hit.kv.status == "hit"
    assert built.kv.tokens > 0 and hit.prefill_tokens <= hit.prompt_tokens - hit.kv.tokens
    assert full.token_ids == built.token_ids == hit.token_ids
    assert full.text.strip()


def test_a_fresh_engine_starts_with_the_prefix_moved_through_the_object_store(engines: list[Any]) -> None:
    first, second = engines
    plan = _plan(question="Which fact mentions x7?")
    handle = ray.get(first.build.remote(plan))
    assert handle.entry.tokens > 0 and ray.get(second.resident.remote()) == []
    full = ray.get(second.chat.remote(plan.model_copy(update={"use_kv": False})))
    placement = Placement(worker=1, handle=second, key=handle.entry.key, adopt=handle)
    moved = ray.get(second.chat.remote(plan, placement))
    assert moved.kv.status == "moved" and moved.kv.moved_bytes == handle.entry.bytes
    assert moved.prefill_tokens <= moved.prompt_tokens - handle.entry.tokens
    assert moved.token_ids == full.token_ids
    # received without a chat, the file is loaded into the engine by the connector on the next chat
    other = _plan(facts=30, question="What is fact 9?")
    kv = ray.get(first.build.remote(other))
    ray.get(second.receive.remote(kv))
    loaded = ray.get(second.chat.remote(other))
    assert loaded.kv.status == "loaded"
    assert loaded.token_ids == ray.get(first.chat.remote(other)).token_ids


def test_a_moved_cache_from_another_model_is_refused(engines: list[Any]) -> None:
    plan = _plan(facts=12)
    kv = ray.get(engines[0].build.remote(plan))
    foreign = kv.entry.model_copy(update={"model": kv.entry.model.model_copy(update={"backend": "transformers"})})
    with pytest.raises(ray.exceptions.RayTaskError, match="computed by"):
        ray.get(engines[1].receive.remote(type(kv)(foreign, kv.ref)))


def _adapter(identity: Any, name: str, seed: int) -> AdapterWeights:
    import torch
    from peft import get_peft_model, get_peft_model_state_dict

    from memos_ray.llm import load_model
    from memos_ray.parametric.training import lora_config, state_nbytes

    settings = AdapterSettings(rank=8)
    lm = load_model(LLMConfig(dtype="float32", cache_dir=MODELS), MODELS)
    torch.manual_seed(seed)
    wrapped = get_peft_model(copy.deepcopy(lm.model), lora_config(settings, init_lora_weights=False))
    state = {k: v.detach().float().numpy().copy() for k, v in get_peft_model_state_dict(wrapped).items()}
    ref = AdapterRef(
        adapter_id=name, cube_id="c", version=1, base_model=identity, settings=settings, bytes=state_nbytes(state)
    )
    return AdapterWeights(ref, ray.put(state))


def test_adapters_change_the_output_and_leave_the_base_alone(engines: list[Any]) -> None:
    w = engines[0]
    identity = ray.get(w.identity.remote())
    plan = _plan(facts=20, question="Say something about fact 2.")
    base = ray.get(w.chat.remote(plan))
    a, b = _adapter(identity, "ad-a", 1), _adapter(identity, "ad-b", 2)
    first = ray.get(w.chat.remote(plan.model_copy(update={"adapter": a.adapter}), None, a))
    assert first.adapter_status == "loaded" and first.adapter_ms is not None
    ray.get(w.load_adapter.remote(b))
    assert sorted(ray.get(w.adapters.remote())) == ["ad-a", "ad-b"]  # both resident
    again = ray.get(w.chat.remote(plan.model_copy(update={"adapter": a.adapter})))
    other = ray.get(w.chat.remote(plan.model_copy(update={"adapter": b.adapter})))
    after = ray.get(w.chat.remote(plan))
    assert again.adapter_status == "resident" and again.token_ids == first.token_ids
    assert first.token_ids != base.token_ids and other.token_ids != first.token_ids
    assert after.token_ids == base.token_ids
    # a prefix computed under an adapter is its own file: never served to the base model
    assert first.kv.key != base.kv.key
    assert ray.get(w.drop_adapters.remote(["ad-a", "ad-b"])) == 2
    assert ray.get(w.chat.remote(plan)).token_ids == base.token_ids


def test_concurrent_chats_run_in_one_engine_and_stream(engines: list[Any]) -> None:
    w = engines[0]
    plans = [_plan(facts=10 + i, question=f"What is fact {i}?", max_tokens=16) for i in range(8)]
    alone = [ray.get(w.chat.remote(p.model_copy(update={"use_kv": False}))).token_ids for p in plans[:2]]
    outs = ray.get([w.chat.remote(p.model_copy(update={"use_kv": False})) for p in plans])
    assert [o.token_ids for o in outs[:2]] == alone  # batched with six others, the same greedy answer
    pieces = [ray.get(r) for r in w.chat_stream.remote(plans[0])]
    outcome = pieces[-1]
    assert "".join(pieces[:-1]) == outcome.text and len(pieces) > 2


def test_compose_and_logits_need_the_transformers_backend(engines: list[Any]) -> None:
    plan = _plan(facts=4).model_copy(update={"blocks": []})
    with pytest.raises(ray.exceptions.RayTaskError, match="transformers backend"):
        ray.get(engines[0].chat.remote(plan))


def test_a_chat_through_http_runs_on_vllm(engines: list[Any], base_url: str, api_key: str) -> None:
    with httpx.Client(base_url=base_url, headers=bearer(api_key), timeout=300) as c:
        assert c.post("/v1/cubes", json={"id": "vllm-cube"}).status_code == 201
        facts = [f"Alice's pet number {i} is a parrot named Kiwi{i}." for i in range(6)]
        r = c.post(
            "/v1/cubes/vllm-cube/memories/batch", json={"items": [{"text": t, "tags": ["pinned"]} for t in facts]}
        )
        assert r.status_code in (200, 201), r.text
        body = {
            "cube_ids": ["vllm-cube"],
            "messages": [{"role": "user", "content": "Name Alice's pets."}],
            "max_tokens": 16,
        }
        first, second = (c.post("/v1/chat", json=body) for _ in range(2))
        assert first.status_code == 200 and second.status_code == 200, first.text
        assert first.json()["text"] == second.json()["text"] and first.json()["text"].strip()
        assert first.json()["kv"]["status"] in ("built", "hit") and second.json()["kv"]["status"] == "hit"


def test_engine_identity_names_the_backend(engines: list[Any]) -> None:
    ident = ray.get(engines[0].identity.remote())
    assert ident.backend == "vllm" and ident.key.endswith(":vllm")
