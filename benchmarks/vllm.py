"""vLLM backend against the transformers backend, one model worker each on the same model (SmolLM2-135M,
bf16), one after the other on this machine (``make bench-vllm``, in .venv-vllm):

- TTFT of a chat after a memory prefix of ~512 / 1,024 / 2,048 tokens: without activation memory (the whole
  prompt prefilled), the first chat with it (built: computed and saved) and later ones (hit);
- throughput of 8 concurrent chats (64 new tokens each) on one worker: vLLM batches them, the transformers
  worker runs one at a time;
- adapters: cold load (from the object store into the engine) and a chat's TTFT switching between two
  resident adapters against staying on one.

Prints tables and writes benchmarks/results/vllm.json.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from benchmarks.common import MODELS, print_table, write_json
from memos_ray.activation import kvcache
from memos_ray.config import LLMConfig, MemosConfig, StorageConfig, WorkersConfig
from memos_ray.types import AdapterRef, AdapterSettings, ChatMessage, ChatPlan, MemoryItem, utcnow

PREFIXES = (512, 1024, 2048)
REPEATS = 3
CONCURRENT = 8


def _plan(tokens: int, question: str, max_tokens: int = 8, use_kv: bool = True) -> ChatPlan:
    """A prefix of about ``tokens`` tokens (each memory line ~12 tokens)."""
    now = utcnow()
    mems = [
        MemoryItem(
            id=f"m{i}",
            cube_id="c",
            version=1,
            created_at=now,
            updated_at=now,
            text=f"Fact {i}: item {i} is {i * 7}.",
        )
        for i in range(max(1, tokens // 12))
    ]
    return ChatPlan(
        cube_ids=["c"],
        prefix_text=kvcache.render_memories(mems),
        sources=[m.ref for m in mems],
        messages=[ChatMessage(content=question)],
        max_tokens=max_tokens,
        temperature=0.0,
        seed=0,
        use_kv=use_kv,
    )


def _ttft(worker: Any, backend: str) -> list[dict[str, Any]]:
    rows = []
    for n in PREFIXES:
        plan = _plan(n, f"What does item {n // 40} cost?")
        off = [ray.get(worker.chat.remote(plan.model_copy(update={"use_kv": False}))) for _ in range(REPEATS)]
        built = ray.get(worker.chat.remote(plan))
        hits = [ray.get(worker.chat.remote(plan)) for _ in range(REPEATS)]
        rows.append(
            {
                "backend": backend,
                "prefix_tokens": built.kv.tokens,
                "prompt_tokens": built.prompt_tokens,
                "off_ms": statistics.median(o.ttft_ms for o in off),
                "built_ms": built.ttft_ms,
                "hit_ms": statistics.median(h.ttft_ms for h in hits),
                "speedup": statistics.median(o.ttft_ms for o in off) / statistics.median(h.ttft_ms for h in hits),
                "same_output": all(h.token_ids == off[0].token_ids for h in hits),
                "statuses": f"{built.kv.status}/{hits[-1].kv.status}",
            }
        )
    return rows


def _throughput(worker: Any, backend: str) -> dict[str, Any]:
    plans = [_plan(256, f"Tell me about item {i}.", max_tokens=64) for i in range(CONCURRENT)]
    ray.get(worker.chat.remote(plans[0]))  # the shared prefix once, as a live service would have it
    start = time.perf_counter()
    outs = ray.get([worker.chat.remote(p) for p in plans])
    wall = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for o in outs)
    return {
        "backend": backend,
        "chats": CONCURRENT,
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "mean_ttft_ms": statistics.fmean(o.ttft_ms for o in outs),
    }


def _adapter(identity: Any, name: str, seed: int) -> Any:
    import torch
    from peft import get_peft_model, get_peft_model_state_dict

    from actors.handoff import AdapterWeights
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


def _adapters(worker: Any, backend: str) -> dict[str, Any]:
    identity = ray.get(worker.identity.remote())
    a, b = _adapter(identity, "bench-a", 1), _adapter(identity, "bench-b", 2)
    cold = [ray.get(worker.load_adapter.remote(w)) * 1000 for w in (a, b)]
    plan = _plan(64, "Say hello.", max_tokens=4, use_kv=False)
    on = lambda w: plan.model_copy(update={"adapter": w.adapter})  # noqa: E731
    ray.get(worker.chat.remote(on(a)))
    same = [ray.get(worker.chat.remote(on(a))).ttft_ms for _ in range(4)]
    switch = [ray.get(worker.chat.remote(on((a, b)[i % 2]))).ttft_ms for i in range(1, 9)]
    base = [ray.get(worker.chat.remote(plan)).ttft_ms for _ in range(4)]
    ray.get(worker.drop_adapters.remote(["bench-a", "bench-b"]))
    return {
        "backend": backend,
        "cold_load_ms": statistics.fmean(cold),
        "ttft_base_ms": statistics.median(base),
        "ttft_same_adapter_ms": statistics.median(same),
        "ttft_switching_ms": statistics.median(switch),
    }


def run_backend(backend: str, data: Path) -> dict[str, Any]:
    from actors.vllm_worker import VLLMWorkerActor
    from actors.worker import WorkerActor

    config = MemosConfig(
        namespace="memos_bench_vllm",
        storage=StorageConfig(data_dir=data / backend),
        llm=LLMConfig(cache_dir=MODELS),  # bf16, the default
        workers=WorkersConfig(backend=backend, count=1, num_cpus=0.25),  # type: ignore[arg-type]
    )
    actor = VLLMWorkerActor if backend == "vllm" else WorkerActor
    start = time.perf_counter()
    worker = actor.options(num_cpus=0.25).remote(0, config)  # type: ignore[attr-defined]
    ray.get(worker.identity.remote())
    started = time.perf_counter() - start
    try:
        return {
            "start_s": started,
            "ttft": _ttft(worker, backend),
            "throughput": _throughput(worker, backend),
            "adapters": _adapters(worker, backend),
        }
    finally:
        ray.kill(worker)
        time.sleep(2)


def main() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="memos-bench-vllm-") as tmp:
            results = {b: run_backend(b, Path(tmp)) for b in ("transformers", "vllm")}
    finally:
        ray.shutdown()
    print_table("start (s)", [{"backend": b, "start_s": r["start_s"]} for b, r in results.items()])
    print_table("TTFT with and without activation memory", [row for r in results.values() for row in r["ttft"]])
    print_table(f"{CONCURRENT} concurrent chats on one worker", [r["throughput"] for r in results.values()])
    print_table("adapters", [r["adapters"] for r in results.values()])
    t, v = results["transformers"]["throughput"], results["vllm"]["throughput"]
    print(f"\nthroughput vLLM / transformers: {v['tokens_per_s'] / t['tokens_per_s']:.2f}x")
    print(f"wrote {write_json('vllm', results)}")


if __name__ == "__main__":
    main()
