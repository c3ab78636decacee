"""LoCoMo retrieval (development split): each conversation a cube, each turn a memory.

The data and its metric are described in ``../shared/eval/locomo/README.md``: evidence
recall@k and hit@k over questions of categories 1-4, k in (1, 5, 10, 20).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memos_ray.types import ChatMessage

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "shared" / "eval" / "locomo" / "locomo_dev.json"
KS = (1, 5, 10, 20)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


@dataclass(frozen=True)
class Question:
    text: str
    category: int
    evidence: frozenset[str]


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    messages: list[ChatMessage]
    questions: list[Question]


def parse_when(value: str) -> datetime:
    """'1:56 pm on 8 May, 2023' -> an aware datetime."""
    return datetime.strptime(value.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def _normalise_evidence(raw: list[str], known: set[str]) -> frozenset[str]:
    out = set()
    for entry in raw:
        for part in re.split(r"[;,]", entry):
            m = re.fullmatch(r"\s*D:?(\d+):0*(\d+)\s*", part)
            if m:
                dia = f"D{int(m.group(1))}:{int(m.group(2))}"
                if dia in known:
                    out.add(dia)
    return frozenset(out)


def load(path: Path = DEFAULT_PATH) -> list[Conversation]:
    samples: list[dict[str, Any]] = json.loads(path.read_text())
    out = []
    for sample in samples:
        conv = sample["conversation"]
        messages = []
        sessions = sorted(
            (int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k)),
        )
        for n in sessions:
            when = parse_when(conv[f"session_{n}_date_time"])
            for turn in conv[f"session_{n}"]:
                text = turn["text"]
                if turn.get("blip_caption"):
                    text = f"{text} [shares a photo: {turn['blip_caption']}]"
                messages.append(
                    ChatMessage(role="user", content=text, speaker=turn["speaker"], timestamp=when, id=turn["dia_id"])
                )
        known = {m.id for m in messages if m.id}
        questions = []
        for qa in sample["qa"]:
            if qa["category"] not in CATEGORIES:
                continue
            evidence = _normalise_evidence(qa.get("evidence", []), known)
            if evidence:
                questions.append(Question(qa["question"], qa["category"], evidence))
        out.append(Conversation(sample["sample_id"], messages, questions))
    return out


def score(results: list[tuple[Question, list[str]]]) -> dict[str, dict[str, float]]:
    """R@k and H@k overall and per category, from each question's ranked dia_ids."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for q, ranked in results:
        for group in ("overall", CATEGORIES[q.category]):
            sums[group]["n"] += 1
            for k in KS:
                found = len(q.evidence & set(ranked[:k]))
                sums[group][f"R@{k}"] += found / len(q.evidence)
                sums[group][f"H@{k}"] += 1.0 if found else 0.0
    table = {}
    for group, s in sums.items():
        n = s["n"]
        table[group] = {"n": n, **{key: value / n for key, value in s.items() if key != "n"}}
    return table
