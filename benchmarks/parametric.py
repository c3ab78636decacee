"""Parametric-memory benchmarks: what a LoRA learns, what it costs to switch and to load, how fast it trains.

    .venv/bin/python -m benchmarks.parametric            # ~4 min on 2 cores

- qa: what a user sees. Eight facts written for this benchmark, each asked by a question written by hand (no
  training template, and not the adapter's own exam): answered without retrieval with the adapter and with
  the base model (targets >= 6/8 and <= 1/8), unrelated text's NLL (LoCoMo lines, <= 5% worse), training time
  (<= 90 s on 2 cores, the exam apart), and the exam the adapter passed or failed.
- nll: mean per-token NLL of a cube's memory texts before and after training its adapter
  (target: >= 30% lower), and of unrelated text (LoCoMo dialogue lines; target: <= 5% worse).
- train: training throughput (tokens/s) on 2 cores, from the training job's own metrics.
- swap: switching a worker's model to another resident adapter (target <= 10 ms).
- load: a rank-8 adapter onto a model worker through the Ray object store, measured inside the
  worker (mapping the weights, adding the LoRA layers, filling them; target <= 250 ms), and the
  whole actor call seen from the caller.

Prints tables and writes benchmarks/results/parametric.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import locomo
from benchmarks.common import MODELS, print_table, summary_ms, write_json
from memos_ray.config import LLMConfig
from memos_ray.parametric.training import mean_nll, train_lora
from memos_ray.types import AdapterSettings

# A cube's facts: made up, so the base model cannot know them already.
FACTS = [
    "Zorblat the cat lives in Kyoto and eats plum jam every Sunday.",
    "The lighthouse keeper Ondine Varga collects blue glass bottles from the shore.",
    "Project Heron ships on the ninth of March, after the Kestrel review.",
    "The vault code word for the Lisbon office is marmalade-seventeen.",
    "Captain Ruelle sails a green submarine named Otter around Skye.",
    "The bakery on Fennel Street sells saffron buns at dawn on Fridays.",
    "Team Kestrel meets in room 4B every Tuesday at half past nine.",
    "Mira Okafor's favourite mountain is Ben Lomond, which she climbed in 2019.",
    "The office plant in the north corridor is a fig tree called Doris.",
    "Quill, the support robot, answers tickets in Portuguese and Welsh.",
    "Anselm keeps his bicycle, a red Moulton, in the basement of block C.",
    "The staging database is called pelican and runs on port 6543.",
    "Every new hire at Brightwater receives a copper kettle on day one.",
    "The quarterly offsite is held at a farm near Ghent with llamas.",
    "Iris prefers her coffee with oat milk and a pinch of cardamom.",
    "The backup generator at the Dundee site is tested on the first Monday.",
]
# What a user asks, by hand: none of these is a training template (memos_ray/parametric/examples.py).
QA = [
    ("Quillon Marsh's favourite food is cardamom porridge.", "Which food does Quillon Marsh like best?"),
    ("Ondine Varga's pet is a tortoise named Biscuit.", "What kind of animal does Ondine Varga keep?"),
    ("Teodor Blum's hometown is Tromsø.", "Where did Teodor Blum grow up?"),
    ("Mira Okafor's favourite mountain is Ben Lomond.", "Which mountain does Mira Okafor love most?"),
    ("Anselm Grieve's bicycle is a red Moulton.", "What bike does Anselm Grieve ride?"),
    ("Iris Calloway's employer is the Brightwater Trust.", "Who does Iris Calloway work for?"),
    ("Felix Amadi's favourite colour is teal.", "Which colour does Felix Amadi like best?"),
    ("Priya Lenz's violin teacher is Hugo Sandberg.", "Who teaches Priya Lenz the violin?"),
]
SETTINGS = AdapterSettings()  # the defaults: rank 8, 40 steps, lr 2e-3, preserve 5 (KL to the base on anchor text)


def _unrelated(n: int) -> list[str]:
    lines = [m.content for conv in locomo.load() for m in conv.messages if 40 <= len(m.content) <= 200]
    return lines[:: max(1, len(lines) // n)][:n]


def bench_learning(settings: AdapterSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    from memos_ray.llm import load_model

    lm = load_model(LLMConfig(dtype="float32", cache_dir=MODELS), MODELS)
    unrelated = _unrelated(len(FACTS) * 2)
    before = {
        "facts": mean_nll(lm.model, lm.tokenizer, FACTS, settings.max_tokens),
        "unrelated": mean_nll(lm.model, lm.tokenizer, unrelated, settings.max_tokens),
    }
    steps: list[tuple[int, float]] = []
    state, metrics, _ = train_lora(lm.model, lm.tokenizer, FACTS, settings, lambda s, n, loss: steps.append((s, loss)))
    from memos_ray.parametric.slots import AdapterSlots

    slots = AdapterSlots(lm.model, 64 << 20)
    slots.load("cube", settings, state)
    with slots.use("cube") as model:
        after = {
            "facts": mean_nll(model, lm.tokenizer, FACTS, settings.max_tokens),
            "unrelated": mean_nll(model, lm.tokenizer, unrelated, settings.max_tokens),
        }
    nll = {
        "facts": len(FACTS),
        "unrelated_texts": len(unrelated),
        "facts_before": before["facts"],
        "facts_after": after["facts"],
        "facts_change": after["facts"] / before["facts"] - 1,
        "unrelated_before": before["unrelated"],
        "unrelated_after": after["unrelated"],
        "unrelated_change": after["unrelated"] / before["unrelated"] - 1,
        "targets": "facts <= -30%, unrelated <= +5%",
    }
    train = {"settings": settings.model_dump(), **metrics.model_dump()}
    return nll, train


def bench_qa(settings: AdapterSettings) -> dict[str, Any]:
    from memos_ray.llm import load_model
    from memos_ray.parametric import examples
    from memos_ray.parametric.slots import AdapterSlots
    from memos_ray.parametric.training import _answer

    lm = load_model(LLMConfig(dtype="float32", cache_dir=MODELS), MODELS)
    facts = [f for f, _ in QA]
    unrelated = _unrelated(32)
    parsed = [examples.parse(f) for f in facts]

    def ask(model: Any) -> list[tuple[str, str, bool]]:
        out = []
        for fact, (_, question) in zip(parsed, QA, strict=True):
            said = _answer(model, lm.tokenizer, question)
            out.append((question, said, examples.names_answer(fact, said)))
        return out

    base = ask(lm.model)
    unrelated_before = mean_nll(lm.model, lm.tokenizer, unrelated, 96)
    start = time.perf_counter()
    state, metrics, evaluation = train_lora(lm.model, lm.tokenizer, facts, settings)
    wall = time.perf_counter() - start
    slots = AdapterSlots(lm.model, 256 << 20)
    slots.load("qa", settings, state)
    with slots.use("qa") as model:
        adapted = ask(model)
        unrelated_after = mean_nll(model, lm.tokenizer, unrelated, 96)
    assert evaluation is not None
    rows = [
        {"question": b[0], "base": b[1][:60], "adapter": a[1][:70], "named": a[2]}
        for b, a in zip(base, adapted, strict=True)
    ]
    print_table("hand-written questions, no retrieval: base model vs adapter", rows)
    return {
        "facts": len(facts),
        "answered": sum(a[2] for a in adapted),
        "base_answered": sum(b[2] for b in base),
        "unrelated_before": unrelated_before,
        "unrelated_after": unrelated_after,
        "unrelated_change": unrelated_after / unrelated_before - 1,
        "train_s": metrics.seconds,
        "train_and_exam_s": wall,
        "turns": metrics.turns,
        "exam": evaluation.model_dump(exclude={"samples"}),
        "answers": rows,
        "targets": "answered >= 6/8, base <= 1/8, unrelated <= +5%, train <= 90 s",
    }


def bench_swap(settings: AdapterSettings, adapters: int, switches: int) -> dict[str, Any]:
    """On the workers' default dtype (bf16): switch among resident adapters, round robin."""
    import copy

    from peft import get_peft_model, get_peft_model_state_dict

    from memos_ray.llm import load_model
    from memos_ray.parametric.slots import AdapterSlots
    from memos_ray.parametric.training import lora_config

    lm = load_model(LLMConfig(dtype="bfloat16", cache_dir=MODELS), MODELS)
    states = []
    for _ in range(adapters):  # random non-zero LoRA weights: switching cost does not depend on their values
        wrapped = get_peft_model(copy.deepcopy(lm.model), lora_config(settings, init_lora_weights=False))
        states.append({k: v.detach().float().numpy().copy() for k, v in get_peft_model_state_dict(wrapped).items()})
    slots = AdapterSlots(lm.model, 256 << 20)
    for i, state in enumerate(states):
        slots.load(f"a{i}", settings, state)
    times = []
    for n in range(switches):
        start = time.perf_counter()
        with slots.use(f"a{n % adapters}"):
            times.append(time.perf_counter() - start)
    return {
        "resident": adapters,
        "rank": settings.rank,
        **summary_ms(times),
        "max_ms": max(times) * 1000,
        "target_ms": 10,
    }


def bench_load(settings: AdapterSettings, repeats: int) -> dict[str, Any]:
    """A real ModelWorker actor loads a rank-8 adapter whose weights the driver put in the object store."""
    import copy

    import ray
    from peft import get_peft_model, get_peft_model_state_dict

    from actors.handoff import AdapterWeights
    from actors.worker import WorkerActor
    from memos_ray.config import MemosConfig, StorageConfig, WorkersConfig
    from memos_ray.llm import load_model
    from memos_ray.parametric.training import lora_config, state_nbytes
    from memos_ray.types import AdapterRef

    lm = load_model(LLMConfig(dtype="float32", cache_dir=MODELS), MODELS)
    wrapped = get_peft_model(copy.deepcopy(lm.model), lora_config(settings, init_lora_weights=False))
    state = {k: v.detach().float().numpy().copy() for k, v in get_peft_model_state_dict(wrapped).items()}
    del wrapped, lm
    with tempfile.TemporaryDirectory(prefix="memos-bench-") as data:
        config = MemosConfig(
            namespace="memos_bench",
            storage=StorageConfig(data_dir=Path(data)),
            llm=LLMConfig(cache_dir=MODELS),
            workers=WorkersConfig(count=1),
        )
        ray.init(include_dashboard=False, namespace="memos_bench", log_to_driver=False)
        try:
            worker = WorkerActor.remote(0, config)  # type: ignore[attr-defined]
            identity = ray.get(worker.identity.remote())
            inside, outside = [], []
            for i in range(repeats):
                ref = AdapterRef(
                    adapter_id=f"ad-{i}",
                    cube_id="c",
                    version=1,
                    base_model=identity,
                    settings=settings,
                    bytes=state_nbytes(state),
                )
                weights = ray.put(state)
                start = time.perf_counter()
                inside.append(ray.get(worker.load_adapter.remote(AdapterWeights(ref, weights))))
                outside.append(time.perf_counter() - start)
                ray.get(worker.drop_adapters.remote([ref.adapter_id]))
        finally:
            ray.shutdown()
    return {
        "rank": settings.rank,
        "mb": state_nbytes(state) / 1e6,
        "n": len(inside),
        "in_worker_p50_ms": summary_ms(inside)["p50_ms"],
        "in_worker_p95_ms": summary_ms(inside)["p95_ms"],
        "in_worker_max_ms": max(inside) * 1000,
        "in_worker_first_ms": inside[0] * 1000,
        "call_p50_ms": summary_ms(outside)["p50_ms"],
        "target_ms": 250,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="qa,nll,swap,load")
    args = parser.parse_args()
    only = set(args.only.split(","))
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if "qa" in only:
        out["qa"] = bench_qa(SETTINGS)
        q = out["qa"]
        summary = {k: q[k] for k in ("answered", "base_answered", "unrelated_change", "train_s", "train_and_exam_s")}
        print_table("parametric memory that answers (8 facts, defaults)", [{**summary, "exam": q["exam"]["reason"]}])
    if "nll" in only:
        out["nll"], out["train"] = bench_learning(SETTINGS)
        print_table("NLL of the cube's memories and of unrelated text, base -> adapter", [out["nll"]])
        t = out["train"]
        print_table(
            "training (2 cores, float32)",
            [{k: t[k] for k in ("steps", "examples", "tokens", "seconds", "tokens_per_s", "loss_first", "loss_last")}],
        )
    if "swap" in only:
        out["swap"] = bench_swap(AdapterSettings(rank=8), adapters=4, switches=200)
        print_table("switching to a resident adapter (bf16 worker model)", [out["swap"]])
    if "load" in only:
        out["load"] = bench_load(AdapterSettings(rank=8), repeats=30)
        print_table("loading a rank-8 adapter onto a worker through the object store", [out["load"]])
    print(f"\nwrote {write_json('parametric', out)}")


if __name__ == "__main__":
    main()
