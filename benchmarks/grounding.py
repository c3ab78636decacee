"""Answers that use the memories: does the embedded model name the fact, with the fact pinned (in the cached
prefix), in the working set (the MemScheduler's prefix) or only retrieved (top_k 5), under each prompt layout
(where the retrieved memories go), and what each layout costs in TTFT and prefilled tokens.

    .venv/bin/python -m benchmarks.grounding          # ~4 min on 2 cores

Two sets of 8 facts written for this check (ops facts and personal facts), one cube per set and condition;
an answer counts when it contains the fact's key phrase. Writes benchmarks/results/grounding.json.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.common import Stack, chat, check, print_table, stack, write_json

FACTS: dict[str, list[tuple[str, str, list[str]]]] = {
    "ops": [
        ("Standup is at 9:30.", "When is standup?", ["9:30"]),
        ("The staging server is called bluebird.", "What is the staging server called?", ["bluebird"]),
        ("Dana's favourite coffee is a flat white.", "What coffee does Dana like?", ["flat white"]),
        ("The quarterly review is on March 14.", "When is the quarterly review?", ["march 14", "14 march"]),
        ("The office wifi network is named Orion-5G.", "What is the office wifi network called?", ["orion"]),
        ("The on-call rotation changes every Tuesday.", "On which day does the on-call rotation change?", ["tuesday"]),
        ("The team offsite will be held in Lisbon.", "Where will the team offsite be held?", ["lisbon"]),
        ("Priya leads the billing project.", "Who leads the billing project?", ["priya"]),
    ],
    "personal": [
        ("My sister Elena lives in Toronto.", "Where does my sister Elena live?", ["toronto"]),
        ("I am allergic to peanuts.", "What am I allergic to?", ["peanut"]),
        ("My dog is named Biscuit.", "What is my dog's name?", ["biscuit"]),
        ("My dentist appointment is on Thursday at 3 pm.", "When is my dentist appointment?", ["thursday", "3 pm"]),
        ("I drive a blue Subaru Outback.", "What car do I drive?", ["subaru"]),
        ("My favourite band is Radiohead.", "What is my favourite band?", ["radiohead"]),
        ("I started learning the cello in 2021.", "What instrument am I learning?", ["cello"]),
        ("My passport expires in June 2027.", "When does my passport expire?", ["2027"]),
    ],
}
CONDITIONS = ("pinned", "retrieved", "working_set")
LAYOUTS = (("quoted", 5), ("quoted", 2), ("quoted", 1), ("system", 0))  # (layout, quote_top)


def ask(s: Stack, cube: str, question: str, layout: str, quote_top: int = 2) -> dict[str, Any]:
    return chat(s.http, cube, question, max_tokens=24, top_k=5, layout=layout, quote_top=quote_top)


def setup(s: Stack) -> None:
    for name, facts in FACTS.items():
        for cond in CONDITIONS:
            cube = f"{name}-{cond}"
            check(s.http.post("/v1/cubes", json={"id": cube}), 201)
            tags = ["pinned"] if cond == "pinned" else []
            items = [{"text": f, "tags": tags} for f, _, _ in facts]
            check(s.http.post(f"/v1/cubes/{cube}/memories/batch", json={"items": items}), 201)


def warm_working_sets(s: Stack) -> None:
    """The policy on; one round of questions is the working-set cubes' usage; a sweep makes it their working set."""
    check(s.http.put("/v1/scheduler/policy", json={"enabled": True}))
    for name, facts in FACTS.items():
        for _, q, _ in facts:
            ask(s, f"{name}-working_set", q, "quoted")
    check(s.http.post("/v1/scheduler/sweep"))


def run() -> dict[str, Any]:
    rows, answers = [], []
    with stack(scheduler={"enabled": False}) as s:
        setup(s)
        for cond in CONDITIONS:
            if cond == "working_set":  # the policy is off for the other two
                warm_working_sets(s)
            for layout, top in LAYOUTS:
                named, ttft, prefill, prompt, cached = 0, [], [], [], 0
                for name, facts in FACTS.items():
                    ask(s, f"{name}-{cond}", facts[0][1], layout, top)  # the cube's prefix is built: not measured
                    for fact, q, keys in facts:
                        r = ask(s, f"{name}-{cond}", q, layout, top)
                        ok = any(k in r["text"].lower() for k in keys)
                        named += ok
                        ttft.append(r["ttft_ms"])
                        prefill.append(r["prefill_tokens"])
                        prompt.append(r["prompt_tokens"])
                        cached += r["kv"]["status"] != "off" and r["kv"]["tokens"] > 40
                        answers.append(
                            {
                                "condition": cond,
                                "layout": f"{layout}/{top}",
                                "question": q,
                                "fact": fact,
                                "answer": r["text"],
                                "named": ok,
                                "kv": r["kv"]["status"],
                                "prefix_tokens": r["kv"]["tokens"],
                            }
                        )
                n = sum(len(f) for f in FACTS.values())
                rows.append(
                    {
                        "condition": cond,
                        "layout": layout if layout == "system" else f"quoted, top {top}",
                        "named": f"{named}/{n}",
                        "named_share": named / n,
                        "ttft_p50_ms": statistics.median(ttft),
                        "prefill_tokens": statistics.fmean(prefill),
                        "prompt_tokens": statistics.fmean(prompt),
                        "from_memory_prefix": f"{cached}/{n}",
                    }
                )
    print_table("answers that name the fact (16 questions, two sets of 8)", rows)
    path = write_json("grounding", {"rows": rows, "answers": answers})
    print(f"\nwrote {path}")
    return {"rows": rows}


if __name__ == "__main__":
    run()
