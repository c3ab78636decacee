"""The MemScheduler: a multi-agent chat workload with no ``pinned`` tags, policy off and on in one run, and
TTFT against prefix length (hit vs off).

    .venv/bin/python -m benchmarks.scheduler                 # ~35 min on 2 cores
    .venv/bin/python -m benchmarks.scheduler --only sweep

*workload*: 16 agents (principals with their own keys, read grants) over 8 cubes holding the LoCoMo development
conversations (the two longest split in halves, so 8), Zipf-distributed questions (s = 1.1 over each cube's
questions), retrieval top_k 5, two chats at a time. The same sequence runs with the policy off and then on,
for each prompt layout; with it on, every agent opens a session first (prefetch), and the policy sweeps as it
runs. A chat counts as *from a cached prefix* when it started from a cache (hit, moved or loaded, not built)
holding memories (more than the system turn) that covers at least half of its prompt.

*sweep*: pinned prefixes of 64 ... 2,048 tokens, no retrieval, medians of 5: TTFT on a hit and with the cache
off; and the same with the prefix a working set (up to its budget, 1,024 tokens) and retrieval (top_k 5)
riding after it.

Writes benchmarks/results/scheduler.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from benchmarks import locomo, plots
from benchmarks.common import Stack, chat, check, pct, print_table, stack, write_json
from benchmarks.grounding import FACTS

AGENTS, CUBES, ZIPF_S = 16, 8, 1.1
CACHED = ("hit", "moved", "loaded")


def _cubes() -> list[tuple[str, list[Any], list[locomo.Question]]]:
    """8 cubes from the 6 development conversations: the two longest split in halves (questions follow their
    evidence)."""
    convs = sorted(locomo.load(), key=lambda c: len(c.messages))
    out = []
    for i, c in enumerate(convs):
        parts = (
            [c.messages]
            if i < len(convs) - 2
            else [c.messages[: len(c.messages) // 2], c.messages[len(c.messages) // 2 :]]
        )
        for j, msgs in enumerate(parts):
            ids = {m.id for m in msgs}
            qs = [q for q in c.questions if q.evidence <= ids]
            out.append((f"sched-{c.sample_id}-{j}", msgs, qs))
    return out[:CUBES]


def setup(s: Stack) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    cubes = _cubes()
    for cube_id, msgs, _ in cubes:
        check(s.http.post("/v1/cubes", json={"id": cube_id}), 201)
        for i in range(0, len(msgs), 100):
            body = {"messages": [m.model_dump(mode="json") for m in msgs[i : i + 100]]}
            check(s.http.post(f"/v1/cubes/{cube_id}/messages", json=body), 201)
    keys = {}
    check(s.http.post("/v1/principals", json={"id": "swarm-owner", "kind": "user"}), 201)
    for a in range(AGENTS):
        agent, cube_id = f"agent-{a}", cubes[a % CUBES][0]
        check(s.http.post("/v1/principals", json={"id": agent, "kind": "agent", "parent": "swarm-owner"}), 201)
        keys[agent] = check(s.http.post("/v1/keys", json={"principal": agent}), 201)["key"]
        check(s.http.put(f"/v1/cubes/{cube_id}/grants/{agent}", json={"role": "read"}))
    return [c[0] for c in cubes], {c[0]: [q.text for q in c[2]] for c in cubes}, keys


def sequence(cube_ids: list[str], questions: dict[str, list[str]], n: int, seed: int = 7) -> list[tuple[str, str, str]]:
    """(agent, cube, question): agents in turn, each drawing its cube's questions from a Zipf law."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a = i % AGENTS
        cube_id = cube_ids[a % CUBES]
        qs = questions[cube_id]
        weights = [1 / (r + 1) ** ZIPF_S for r in range(len(qs))]
        out.append((f"agent-{a}", cube_id, rng.choices(qs, weights)[0]))
    return out


def _chat(url: str, key: str, cube_id: str, question: str, layout: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {key}"}) as http:
        return chat(http, cube_id, question, max_tokens=8, top_k=5, layout=layout)


def _kv_peak(s: Stack) -> tuple[int, int]:
    status = check(s.http.get("/v1/status"))["scheduler"] or {"workers": []}
    used = max((w["kv_bytes"] for w in status["workers"]), default=0)
    budget = min((w["kv_budget"] for w in status["workers"]), default=0)
    return used, budget


def phase(s: Stack, keys: dict[str, str], seq: list[tuple[str, str, str]], layout: str, policy: bool) -> dict[str, Any]:
    check(s.http.put("/v1/scheduler/policy", json={"enabled": policy}))
    if policy:  # each agent starts a session: its cube's prefix is warmed where it will be served
        for agent, key in keys.items():
            cube_id = next(c for a, c, _ in seq if a == agent)
            with httpx.Client(base_url=s.url, timeout=300, headers={"Authorization": f"Bearer {key}"}) as http:
                check(http.post("/v1/sessions", json={"cube_ids": [cube_id]}), 201)
    base = _chat(s.url, keys["agent-0"], seq[0][1], "hello", layout)["kv"]["tokens"] if not policy else None
    peaks: list[tuple[int, int]] = []
    replies: list[dict[str, Any]] = []
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        for i in range(0, len(seq), 16):
            batch = seq[i : i + 16]
            replies += pool.map(lambda t: _chat(s.url, keys[t[0]], t[1], t[2], layout), batch)
            peaks.append(_kv_peak(s))
            if policy:
                check(s.http.post("/v1/scheduler/sweep"))
    took = time.perf_counter() - start
    return {"replies": replies, "base": base, "peaks": peaks, "took_s": took}


def figures(name: str, result: dict[str, Any], base_tokens: int) -> dict[str, Any]:
    rs = result["replies"]
    ttft = [r["ttft_ms"] for r in rs]
    from_cache = [
        r
        for r in rs
        if r["kv"]["status"] in CACHED
        and r["kv"]["tokens"] > base_tokens
        and r["kv"]["tokens"] * 2 >= r["prompt_tokens"]
    ]
    served = sum(r["kv"]["tokens"] for r in rs if r["kv"]["status"] in CACHED)
    used, budget = max(result["peaks"]), min(b for _, b in result["peaks"])
    return {
        "run": name,
        "chats": len(rs),
        "from_cached_prefix": len(from_cache) / len(rs),
        "prompt_tokens_from_cache": served / sum(r["prompt_tokens"] for r in rs),
        "ttft_mean_ms": statistics.fmean(ttft),
        "ttft_p95_ms": pct(ttft, 95),
        "prefill_tokens_mean": statistics.fmean(r["prefill_tokens"] for r in rs),
        "prompt_tokens_mean": statistics.fmean(r["prompt_tokens"] for r in rs),
        "kv_peak_mb": used[0] / 2**20,
        "kv_budget_mb": budget / 2**20,
        "within_budget": all(u <= b for u, b in result["peaks"]),
        "took_s": result["took_s"],
    }


def bench_workload(s: Stack, n: int, layouts: list[str], chats: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of figures; every chat's outcome goes into ``chats``."""
    cube_ids, questions, keys = setup(s)
    seq = sequence(cube_ids, questions, n)
    rows = []
    for layout in layouts:
        off = phase(s, keys, seq, layout, policy=False)
        on = phase(s, keys, seq, layout, policy=True)
        base = off["base"]
        f_off, f_on = figures(f"{layout} / policy off", off, base), figures(f"{layout} / policy on", on, base)
        f_on["ttft_mean_ratio_off_over_on"] = f_off["ttft_mean_ms"] / f_on["ttft_mean_ms"]
        rows += [f_off, f_on]
        keep = ("kv", "ttft_ms", "prefill_tokens", "prompt_tokens", "agent")
        chats[layout] = {p: [{k: r[k] for k in keep} for r in run["replies"]] for p, run in (("off", off), ("on", on))}
        check(s.http.put("/v1/scheduler/policy", json={"enabled": False}))
    return rows


def _pinned_cube(s: Stack, cube_id: str, tokens: int, pinned: bool) -> None:
    """A cube whose memories render to about ``tokens`` tokens (the grounding facts, repeated with numbers)."""
    check(s.http.post("/v1/cubes", json={"id": cube_id}), 201)
    facts = [f for fs in FACTS.values() for f, _, _ in fs]
    n = max(1, round((tokens - 20) / 13))  # ~13 tokens a line
    items = [{"text": f"{facts[i % len(facts)]} (note {i})", "tags": ["pinned"] if pinned else []} for i in range(n)]
    for i in range(0, len(items), 500):
        check(s.http.post(f"/v1/cubes/{cube_id}/memories/batch", json={"items": items[i : i + 500]}), 201)


def _median_ttft(s: Stack, cube_id: str, repeats: int, **options: Any) -> tuple[float, dict[str, Any]]:
    replies = [chat(s.http, cube_id, "When is standup?", max_tokens=1, **options) for _ in range(repeats)]
    return statistics.median(r["ttft_ms"] for r in replies), replies[-1]


def _hit_vs_off(s: Stack, cube_id: str, prefix: str, n: int, repeats: int, top_k: int) -> dict[str, Any]:
    hit, r = _median_ttft(s, cube_id, repeats, top_k=top_k)
    off, _ = _median_ttft(s, cube_id, repeats, top_k=top_k, use_activation_memory=False)
    return {
        "prefix": prefix,
        "target_tokens": n,
        "prefix_tokens": r["kv"]["tokens"],
        "status": r["kv"]["status"],
        "hit_ms": hit,
        "off_ms": off,
        "off_over_hit": off / hit,
    }


def bench_sweep(s: Stack, lengths: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for n in lengths:
        cube_id = f"sweep-{n}"
        _pinned_cube(s, cube_id, n, pinned=True)
        _median_ttft(s, cube_id, 1, top_k=0)  # build
        rows.append(_hit_vs_off(s, cube_id, "pinned", n, repeats, top_k=0))
    check(s.http.put("/v1/scheduler/policy", json={"enabled": True}))
    budget = s.config.scheduler.working_set_tokens
    for n in [n for n in lengths if n <= budget]:
        cube_id = f"sweep-ws-{n}"
        _pinned_cube(s, cube_id, n, pinned=False)
        # usage: every memory retrieved once (a wide search) and a chat; a sweep makes them the working set
        wide = {"query": "standup server coffee review wifi", "top_k": 100}
        check(s.http.post(f"/v1/cubes/{cube_id}/search", json=wide))
        _median_ttft(s, cube_id, 1, top_k=5)
        time.sleep(0.5)
        check(s.http.post("/v1/scheduler/sweep"))
        rows.append(_hit_vs_off(s, cube_id, f"working set (budget {budget})", n, repeats, top_k=5))
    check(s.http.put("/v1/scheduler/policy", json={"enabled": False}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="workload,sweep")
    parser.add_argument("--chats", type=int, default=320)
    parser.add_argument("--layouts", default="quoted,system")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    only = set(args.only.split(","))
    out: dict[str, Any] = {}
    lengths = [64, 128, 256, 512, 1024, 2048]
    # the embedded defaults; the benchmark switches the policy on and off
    with stack(scheduler={"enabled": False}) as s:
        if "workload" in only:
            out["chats"] = {}
            out["workload"] = bench_workload(s, args.chats, args.layouts.split(","), out["chats"])
            print_table("multi-agent workload (16 agents, 8 cubes, Zipf questions, top_k 5)", out["workload"])
        if "sweep" in only:
            out["sweep"] = bench_sweep(s, lengths, args.repeats)
            print_table("TTFT against prefix length (medians)", out["sweep"])
        status = check(s.http.get("/v1/status"))["scheduler"]
        out["break_even_tokens"] = status["break_even_tokens"] if status else None
        print(f"\nbreak-even measured by the workers: {out['break_even_tokens']} tokens")
    print(f"wrote {write_json('scheduler', out)}")
    plots.after("scheduler", out)


if __name__ == "__main__":
    main()
