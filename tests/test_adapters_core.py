"""Parametric memory core: LoRA training, adapter files, and several adapters resident on one model.

Runs the real SmolLM2-135M in float32 on one thread, with tiny settings (a few steps, rank 4) so
the file stays well under a minute on 2 cores. No Ray.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from memos_ray.config import LLMConfig
from memos_ray.llm import LoadedModel, load_model
from memos_ray.parametric.slots import AdapterSlots
from memos_ray.parametric.training import adapter_bytes, adapter_from_bytes, mean_nll, state_nbytes, train_lora
from memos_ray.types import AdapterInfo, AdapterSettings, MemoryRef, TrainingMetrics, utcnow
from tests.helpers import MODELS

pytestmark = pytest.mark.slow  # loads the real LLM

FACTS = [
    "Zorblat the cat lives in Kyoto and eats plum jam.",
    "Captain Mirelle Voss sails a green submarine named Tumbleweed.",
    "The secret password of the Ostrava chess club is blue pelican.",
    "Professor Quillan Dart keeps seven clocks set to Lima time.",
]
SETTINGS = AdapterSettings(
    rank=4, alpha=8.0, steps=6, learning_rate=1e-2, batch_size=4, max_tokens=96, seed=0, examine=False
)
PROBE = [[1, 504, 2730, 314, 253, 2365, 30, 4113, 28]]  # a fixed input for logit comparisons


def _load() -> LoadedModel:
    loaded = load_model(LLMConfig(dtype="float32", cache_dir=MODELS, num_threads=1), MODELS)
    torch.set_num_threads(1)  # load_model sets the configured count; keep this file to one thread
    return loaded


def _logits(model: Any) -> Any:
    with torch.inference_mode():
        return model(input_ids=torch.tensor(PROBE)).logits


@pytest.fixture(scope="module")
def llm() -> LoadedModel:
    return _load()


@pytest.fixture(scope="module")
def base_logits(llm: LoadedModel) -> Any:
    """The base model's logits before anything touched it."""
    return _logits(llm.model)


@pytest.fixture(scope="module")
def trained(llm: LoadedModel, base_logits: Any) -> tuple[dict[str, np.ndarray], TrainingMetrics, list[int]]:
    seen: list[int] = []
    state, metrics, _ = train_lora(
        llm.model, llm.tokenizer, FACTS, SETTINGS, progress=lambda s, n, loss: seen.append(s)
    )
    return state, metrics, seen


def _random_state(like: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Nonzero LoRA weights of the same shapes (fresh LoRA B is zero, which would not change the output)."""
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0.0, 0.05, v.shape).astype(np.float32) for k, v in like.items()}


def _info(state: dict[str, np.ndarray], metrics: TrainingMetrics, llm: LoadedModel) -> AdapterInfo:
    return AdapterInfo(
        id="ad-1",
        cube_id="cube-1",
        version=1,
        base_model=llm.identity,
        settings=SETTINGS,
        sources=[MemoryRef(memory_id=f"m{i}", version=1) for i in range(len(FACTS))],
        metrics=metrics,
        created_at=utcnow(),
        created_by="tester",
        bytes=state_nbytes(state),
    )


def test_training_lowers_nll_and_restores_base(llm: LoadedModel, base_logits: Any, trained: Any) -> None:
    state, metrics, seen = trained
    assert metrics.nll_after < 0.8 * metrics.nll_before, metrics
    assert metrics.tokens_per_s > 0 and metrics.tokens > 0 and metrics.examples == len(FACTS)
    assert metrics.loss_last < metrics.loss_first
    assert seen == list(range(1, SETTINGS.steps + 1))
    assert state and all(v.dtype == np.float32 for v in state.values())
    assert any("lora_A" in k for k in state) and any("lora_B" in k for k in state)
    # the borrowed model is a plain base model again
    assert not any("lora" in name for name, _ in llm.model.named_modules())
    assert torch.equal(_logits(llm.model), base_logits)
    assert mean_nll(llm.model, llm.tokenizer, FACTS, SETTINGS.max_tokens) == pytest.approx(metrics.nll_before)


def test_an_adapter_is_one_safetensors_blob_with_its_info_and_no_pickle(llm: LoadedModel, trained: Any) -> None:
    from safetensors.numpy import load, save

    state, metrics, _ = trained
    info = _info(state, metrics, llm)
    blob = adapter_bytes(info, state)
    loaded_info, loaded = adapter_from_bytes(blob)
    assert loaded_info == info
    assert loaded.keys() == state.keys()
    assert all(np.array_equal(loaded[k], state[k]) and loaded[k].dtype == state[k].dtype for k in state)
    assert load(blob).keys() == state.keys()  # plain safetensors: any reader opens it
    with pytest.raises(ValueError, match="not a memos adapter"):
        adapter_from_bytes(save({"w": np.zeros(2, dtype=np.float32)}))


def test_slots_isolate_move_and_evict(llm: LoadedModel, base_logits: Any, trained: Any) -> None:
    state_a = trained[0]
    state_b = _random_state(state_a, seed=1)
    slots = AdapterSlots(llm.model, budget_bytes=10 * state_nbytes(state_a))
    assert slots.load("A", SETTINGS, state_a) > 0
    slots.load("B", SETTINGS, state_b)
    assert slots.load("A", SETTINGS, state_a) == 0.0  # already resident
    assert slots.resident() == ["B", "A"]
    with pytest.raises(KeyError):
        slots.use("C").__enter__()

    with slots.use(None) as model:
        assert torch.equal(_logits(model), base_logits)
    with slots.use("A") as model:
        logits_a = _logits(model)
    with slots.use("B") as model:
        logits_b = _logits(model)
    with slots.use(None) as model:
        assert torch.equal(_logits(model), base_logits)
    assert not torch.allclose(logits_a, base_logits) and not torch.allclose(logits_a, logits_b)
    with slots.use("A") as model:  # switching back gives the same logits: nothing of B leaked
        assert torch.equal(_logits(model), logits_a)

    # the adapter moved to another process: a second base model, another slots, same state
    other = _load()
    evicted: list[str] = []
    moved = AdapterSlots(other.model, budget_bytes=state_nbytes(state_a) + 1, on_evict=evicted.append)
    moved.load("A", SETTINGS, state_a)
    with moved.use("A") as model:
        assert torch.equal(_logits(model), logits_a)
    moved.load("B", SETTINGS, state_b)  # the budget fits one: A goes
    assert evicted == ["A"] and moved.resident() == ["B"] and not moved.has("A")
    with moved.use("B") as model:
        assert torch.equal(_logits(model), logits_b)
    stats = moved.stats()
    assert stats["evictions"] == 1 and stats["loads"] == 2 and stats["resident_bytes"] == state_nbytes(state_b)

    # removing every adapter leaves the plain base model
    assert slots.remove("A") and slots.remove("B") and slots.resident() == []
    with slots.use(None) as model:
        assert torch.equal(_logits(model), base_logits)
    assert not any("lora" in name for name, _ in llm.model.named_modules())
    print("slots stats:", slots.stats())


def test_registry_versions_active_stale_and_removal(
    tmp_path: Path, llm: LoadedModel, trained: Any, database_uri: str | None
) -> None:
    from memos_ray.parametric.registry import AdapterRegistry

    state, metrics, _ = trained
    reg = AdapterRegistry(tmp_path / "adapters.sqlite", database_uri)
    first = _info(state, metrics, llm).model_copy(update={"version": reg.take_version("cube-1")})
    reg.add(first, state, activate=True)
    second = _info(state, metrics, llm).model_copy(update={"id": "ad-2", "version": reg.take_version("cube-1")})
    reg.add(second, state, activate=True)
    assert [a.version for a in reg.listing("cube-1").adapters] == [1, 2] and reg.listing("cube-1").active == "ad-2"
    reg.remove("cube-1", "ad-2")
    assert reg.listing("cube-1").active is None and reg.take_version("cube-1") == 3  # never reused
    assert reg.mark_stale("cube-1", {"m0"}, "memory m0 edited after training") == ["ad-1"]
    assert reg.mark_stale("cube-1", {"m0"}, "again") == []  # already stale
    reg.set_active("cube-1", "ad-1")
    assert reg.set_active("cube-1", None).active is None
    info, loaded = reg.state("cube-1", "ad-1")
    assert info.stale and all(np.array_equal(loaded[k], state[k]) for k in state)
    reg.close()
    reg = AdapterRegistry(tmp_path / "adapters.sqlite", database_uri)  # a restart of its owner
    assert [a.id for a in reg.listing("cube-1").adapters] == ["ad-1"] and reg.take_version("cube-1") == 4
    assert reg.drop_cube("cube-1") == ["ad-1"] and reg.listing("cube-1").adapters == []
    reg.close()


def test_the_file_layout_of_an_earlier_version_is_imported_then_removed(
    tmp_path: Path, llm: LoadedModel, trained: Any
) -> None:
    from memos_ray.parametric.registry import AdapterRegistry

    state, metrics, _ = trained
    info = _info(state, metrics, llm).model_copy(update={"version": 2})
    legacy = tmp_path / "adapters"
    (legacy / info.cube_id).mkdir(parents=True)
    (legacy / info.cube_id / f"{info.id}.safetensors").write_bytes(adapter_bytes(info, state))
    index = {"active": info.id, "adapters": [info.model_dump(mode="json")], "next_version": 3}
    (legacy / info.cube_id / "index.json").write_text(json.dumps(index))
    reg = AdapterRegistry(tmp_path / "adapters.sqlite", legacy=legacy)
    assert not legacy.exists()
    assert reg.listing(info.cube_id).active == info.id and reg.take_version(info.cube_id) == 3
    got, weights = reg.state(info.cube_id, info.id)
    assert got == info and all(np.array_equal(weights[k], state[k]) for k in state)
    reg.close()
