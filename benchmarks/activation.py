"""Activation-memory benchmarks: TTFT with an injected KV cache, moving caches, a swarm.

    .venv/bin/python -m benchmarks.activation            # ~5 min on 2 cores
    .venv/bin/python -m benchmarks.activation --only ttft

Prints one table per benchmark and writes benchmarks/results/activation.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from benchmarks import plots
from benchmarks.common import MODELS, check, print_table, stack, write_json
from memos_ray.activation import kvcache
from memos_ray.config import LLMConfig
from memos_ray.llm import LoadedModel, load_model
from memos_ray.types import ChatMessage, MemoryItem, utcnow

QUESTION = "Which of these facts mention a red box, and how many marbles does it hold?"


def _memories(n: int) -> list[MemoryItem]:
    now = utcnow()
    colours = ["red", "blue", "green", "amber", "violet"]
    return [
        MemoryItem(
            id=f"m{i}",
            cube_id="bench",
            version=1,
            created_at=now,
            updated_at=now,
            text=f"Box {i} sits on shelf {i % 7}; it is {colours[i % 5]} and holds {i * 3 + 1} marbles.",
        )
        for i in range(n)
    ]


def _prefix_of(lm: LoadedModel, tokens: int) -> tuple[list[MemoryItem], list[int], list[int]]:
    """Enough memories for a prefix of about ``tokens`` tokens."""
    n = 4
    while True:
        mems = _memories(n)
        prefix, suffix = kvcache.split_prompt(
            lm.tokenizer, kvcache.render_memories(mems), [ChatMessage(content=QUESTION)]
        )
        if len(prefix) >= tokens:
            return mems, prefix, suffix
        n = max(n + 1, int(n * tokens / len(prefix)))


def _ttft(lm: LoadedModel, prefix: list[int], suffix: list[int], kv: dict[str, Any] | None) -> float:
    stream = kvcache.generate(lm.model, int(lm.tokenizer.eos_token_id), prefix, suffix, kv, max_tokens=1)
    return next(stream)[1]


def bench_ttft(lm: LoadedModel, sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        _, prefix, suffix = _prefix_of(lm, size)
        kv = kvcache.prefill(lm.model, prefix)
        _ttft(lm, prefix, suffix, kv)  # warm
        full = statistics.median(_ttft(lm, prefix, suffix, None) for _ in range(repeats))
        injected = statistics.median(_ttft(lm, prefix, suffix, kv) for _ in range(repeats))
        rows.append(
            {
                "prefix_tokens": len(prefix),
                "question_tokens": len(suffix),
                "full_prefill_ms": full * 1000,
                "injected_ms": injected * 1000,
                "cut": 1 - injected / full,
                "target": ">= 0.85 at >= 1024" if size >= 1024 else "",
            }
        )
    print_table(f"Time to first token, {lm.identity.dtype}: full prefill vs injected KV cache", rows)
    return rows


def bench_move(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    """Worker-to-worker through the object store (the Scheduler's move) vs an in-process copy of the same bytes."""
    import torch

    from memos_ray.types import ChatPlan

    rows = []
    with stack(port=8766, workers=2) as s:
        namespace = s.config.namespace
        src, dst = (ray.get_actor(f"memos_worker:{i}", namespace=namespace) for i in (0, 1))
        lm = load_model(LLMConfig(cache_dir=MODELS), MODELS)  # tokenizer for sizing the prefixes
        for size in sizes:
            mems, _, _ = _prefix_of(lm, size)
            plan = ChatPlan(
                prefix_text=kvcache.render_memories(mems),
                sources=[m.ref for m in mems],
                messages=[ChatMessage(content=QUESTION)],
                max_tokens=1,
                temperature=0,
                seed=0,
                use_kv=True,
            )
            kv = ray.get(src.build.remote(plan))
            entry = kv.entry
            adopt, calls = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                adopt.append(ray.get(dst.receive.remote(kv)))  # what a move adds inside the chat call
                calls.append(time.perf_counter() - start)
            move_s, call_s = statistics.median(adopt), statistics.median(calls)
            tensors = kvcache.prefill(lm.model, kvcache.split_prompt(lm.tokenizer, plan.prefix_text, [])[0])
            copies = []
            for _ in range(repeats):
                start = time.perf_counter()
                _ = {k: torch.empty_like(v).copy_(v) for k, v in tensors.items()}
                copies.append(time.perf_counter() - start)
            copy_s = statistics.median(copies)
            mb = entry.bytes / 1e6
            rows.append(
                {
                    "tokens": entry.tokens,
                    "MB": mb,
                    "move_ms": move_s * 1000,
                    "as_own_call_ms": call_s * 1000,
                    "move_MB_s": mb / move_s,
                    "copy_MB_s": mb / copy_s,
                    "ratio": (mb / move_s) / (mb / copy_s),
                    "target": ">= 0.5" if mb >= 16 else "",
                }
            )
    print_table("Moving a KV cache between workers through the object store (bf16)", rows)
    return rows


def bench_swarm(agents: int, questions: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with stack(port=8767, workers=2) as s:
        check(s.http.post("/v1/cubes", json={"id": "swarm"}), 201)
        items = [{"text": m.text, "tags": ["pinned"]} for m in _memories(40)]
        check(s.http.post("/v1/cubes/swarm/memories/batch", json={"items": items}), 201)
        asks = [
            (a, f"Agent {a}: how many marbles are in box {a * questions + q}?")
            for a in range(agents)
            for q in range(questions)
        ]
        keys = []  # each agent its own principal and key (agents of the cube's owner)
        for a in range(agents):
            check(s.http.post("/v1/principals", json={"id": f"agent-{a}", "kind": "agent", "parent": "admin"}), 201)
            keys.append(check(s.http.post("/v1/keys", json={"principal": f"agent-{a}"}), 201)["key"])
        for use_kv in (False, True):

            def ask(item: tuple[int, str], use_kv: bool = use_kv) -> dict[str, Any]:
                body = {
                    "cube_ids": ["swarm"],
                    "messages": [{"content": item[1]}],
                    "max_tokens": 4,
                    "top_k": 0,
                    "use_activation_memory": use_kv,
                }
                auth = {"Authorization": f"Bearer {keys[item[0]]}"}
                return check(s.http.post("/v1/chat", json=body, headers=auth))

            start = time.perf_counter()
            with ThreadPoolExecutor(agents) as pool:
                answers = list(pool.map(ask, asks))
            wall = time.perf_counter() - start
            built = {a["kv"]["key"]: a["kv"]["tokens"] for a in answers if a["kv"]["status"] == "built"}
            out["with_kv" if use_kv else "without_kv"] = {
                "chats": len(answers),
                "prefill_tokens": sum(a["prefill_tokens"] for a in answers) + sum(built.values()),
                "wall_s": wall,
                "mean_ttft_ms": statistics.fmean(a["ttft_ms"] for a in answers),
                "kv_statuses": {
                    st: sum(a["kv"]["status"] == st for a in answers)
                    for st in ("built", "hit", "moved", "loaded", "off")
                },
            }
    rows = [
        {"mode": k, **{kk: vv for kk, vv in v.items() if kk != "kv_statuses"}, "kv": v["kv_statuses"]}
        for k, v in out.items()
    ]
    print_table(f"Swarm: {agents} agents x {questions} questions on one shared cube (2 workers, bf16)", rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="ttft,move,swarm")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args()
    only = set(args.only.split(","))
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if "ttft" in only:
        lm = load_model(LLMConfig(dtype=args.dtype, cache_dir=MODELS), MODELS)
        out["ttft"] = bench_ttft(lm, [512, 1024, 2048], repeats=3)
        del lm
    if "move" in only:
        out["move"] = bench_move([512, 1024, 2048], repeats=5)
    if "swarm" in only:
        out["swarm"] = bench_swarm(agents=8, questions=4)
    print(f"\nwrote {write_json('activation', out)}")
    plots.after("activation", out)


if __name__ == "__main__":
    main()
