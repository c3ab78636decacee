"""Composable activation memory against a full prefill, in one process on the real model (#17).

For LoCoMo development questions, a chat's system turn holds k retrieved memories (the question's evidence turns
and other turns of its conversation, in a shuffled "retrieval" order). Each memory's KV block is built once (after
the shared head); a chat assembles its cache from the blocks with a share of each block's first tokens recomputed,
then prefills the question. Measured per (k, share), medians over the questions:

- TTFT: assembling + prefilling the rest + the first token, against prefilling the whole prompt;
- greedy agreement: the share of the full prefill's answer (its first 32 tokens, up to its end of turn) that the
  composed cache generates identically, position by position; and how often the whole answer is identical;
- KL: the mean KL divergence (full || composed) of the next-token distributions over the full prefill's answer,
  teacher-forced.

Two rules choose the tokens recomputed: ``first`` (each block's first tokens, after EPIC) and ``deviation`` (the
tokens whose KV deviates most at the second layer, after CacheBlend).

    .venv/bin/python -u -m benchmarks.compose [--questions 12] [--dtype bfloat16]

Prints a table, writes benchmarks/results/compose.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import torch

from benchmarks import locomo
from benchmarks.common import MODELS, print_table, write_json
from memos_ray.activation import compose
from memos_ray.activation import kvcache as kv
from memos_ray.config import LLMConfig
from memos_ray.llm import LoadedModel, load_model
from memos_ray.types import ChatMessage

KS = (5, 10, 20)
RUNS = [("first", 0.0)] + [(rule, share) for rule in ("first", "deviation") for share in (0.1, 0.2, 0.3)]
ANSWER_TOKENS = 32


def line_of(m: ChatMessage) -> str:
    when = f"[{m.timestamp:%Y-%m-%d}] " if m.timestamp else ""
    return f"- {when}{m.speaker}: {m.content}"


def chats(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """(question, 20 memory lines): the evidence turns first among the conversation's others, then shuffled."""
    rng = random.Random(seed)
    out = []
    for conv in locomo.load():
        by_id = {m.id: m for m in conv.messages if m.id}
        for q in conv.questions:
            evidence = [by_id[e] for e in sorted(q.evidence) if e in by_id][:3]
            others = [m for m in conv.messages if m.id not in q.evidence]
            picked = evidence + rng.sample(others, max(KS) - len(evidence))
            rng.shuffle(picked)
            out.append((q.text, [line_of(m) for m in picked]))
    rng.shuffle(out)
    return out[:n]


def _logits_after(llm: LoadedModel, cache: Any, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return llm.model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True).logits[0]


def greedy(llm: LoadedModel, prompt: compose.ComposedPrompt, tensors: kv.Tensors | None) -> tuple[list[int], float]:
    """The greedy answer (up to ANSWER_TOKENS, ending at the end of turn) and the TTFT (s) of the prefill."""
    start = time.perf_counter()
    if tensors is None:
        cache, rest = kv.to_cache({}), prompt.ids
    else:
        cache, rest = kv.to_cache(tensors), prompt.tail
    logits = _logits_after(llm, cache, rest)[-1]
    ttft = time.perf_counter() - start
    tokens = []
    for _ in range(ANSWER_TOKENS):
        token = int(torch.argmax(logits))
        tokens.append(token)
        if token == llm.tokenizer.eos_token_id:
            break
        logits = _logits_after(llm, cache, [token])[-1]
    return tokens, ttft


def kl(llm: LoadedModel, prompt: compose.ComposedPrompt, tensors: kv.Tensors, answer: list[int]) -> float:
    """Mean KL(full || composed) over the answer's next-token distributions, teacher-forced."""
    full = torch.log_softmax(_logits_after(llm, kv.to_cache({}), prompt.ids + answer[:-1])[-len(answer) :], -1)
    mine = torch.log_softmax(_logits_after(llm, kv.to_cache(tensors), prompt.tail + answer[:-1])[-len(answer) :], -1)
    return float((full.exp() * (full - mine)).sum(-1).mean())


def run(llm: LoadedModel, n: int) -> list[dict[str, Any]]:
    rows = []
    per: dict[tuple[int, str, float], dict[str, list[float]]] = {}
    for question, lines in chats(n):
        ask = [ChatMessage(content=question)]
        whole = compose.compose_prompt(llm.tokenizer, lines, ask)
        head = compose.build_head(llm.model, whole.head)
        blocks = [compose.build_block(llm.model, head, len(whole.head), b) for b in whole.blocks]  # once each
        for k in KS:
            prompt = compose.compose_prompt(llm.tokenizer, lines[:k], ask)
            reference, full_ttft = greedy(llm, prompt, None)
            for rule, share in RUNS:
                start = time.perf_counter()
                built = compose.assemble(llm.model, prompt, head, blocks[:k], share, select=rule)  # type: ignore[arg-type]
                assembled = time.perf_counter() - start
                tokens, rest_ttft = greedy(llm, prompt, built.tensors)
                got = per.setdefault((k, rule, share), {"full": [], "ttft": [], "agree": [], "kl": [], "tokens": []})
                got["full"].append(full_ttft)
                got["ttft"].append(assembled + rest_ttft)
                got["agree"].append(sum(a == b for a, b in zip(tokens, reference, strict=False)) / len(reference))
                got.setdefault("exact", []).append(float(tokens == reference))
                got["kl"].append(kl(llm, prompt, built.tensors, reference))
                got["tokens"].append(float(prompt.prefix_len))
    for (k, rule, share), got in sorted(per.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        full, mine = statistics.median(got["full"]), statistics.median(got["ttft"])
        rows.append(
            {
                "memories": k,
                "select": rule if share else "-",
                "recompute": share,
                "prompt_tokens": round(statistics.mean(got["tokens"])),
                "full_ttft_ms": round(full * 1000, 1),
                "compose_ttft_ms": round(mine * 1000, 1),
                "speedup": round(full / mine, 2),
                "agreement": round(statistics.mean(got["agree"]), 3),
                "same_answer": round(statistics.mean(got["exact"]), 3),
                "kl": round(statistics.mean(got["kl"]), 4),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    llm = load_model(LLMConfig(dtype=args.dtype), MODELS)
    rows = run(llm, args.questions)
    print_table(f"composed KV against a full prefill ({args.questions} LoCoMo questions, {args.dtype})", rows)
    out = {"questions": args.questions, "dtype": args.dtype, "answer_tokens": ANSWER_TOKENS, "rows": rows}
    print(f"\nwrote {write_json('compose', out)}")


if __name__ == "__main__":
    main()
