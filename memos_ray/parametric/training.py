"""Parametric memory: a LoRA adapter trained from a set of text memories, and examined on questions.

What is trained is what chat asks: each fact becomes question-and-answer chat turns (``examples.py``), the loss
on the answer only, with a KL guard that keeps general text as the base model predicts it. What is judged is
what a user sees: questions the adapter was not trained on, answered without retrieval, against the base
model, and held-out general text (:func:`evaluate`).

An adapter is trained once, in a process that owns a fresh float32 copy of the base model, and
travels as a plain state dict of float32 numpy arrays (the keys ``get_peft_model_state_dict``
gives): in the object store between processes, in a safetensors file on disk. The pydantic
:class:`AdapterInfo` beside it records what it was built from (base model identity, settings,
the memory versions) so an edit or delete of a source marks it stale, exactly as a KV cache.

torch and peft are imported inside the functions: importing this module stays cheap for the
processes (HTTP, cube actors) that only handle :class:`AdapterInfo`.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from memos_ray.activation.kvcache import SYSTEM_PREAMBLE
from memos_ray.parametric import examples
from memos_ray.types import AdapterEvaluation, AdapterInfo, AdapterSettings, ExamAnswer, TrainingMetrics

METADATA_KEY = "memos_adapter"
TRAIN_ADAPTER = "memos-train"  # peft warns about names that are substrings of "lora_" (e.g. "a"); this is not

Progress = Callable[[int, int, float], None]
"""``progress(step, steps, loss)``, called after each optimiser step."""


# ------------------------------------------------------------------ data


def training_texts(texts: Sequence[str]) -> list[str]:
    """One training example per memory, the plain memory text.

    No chat template or preamble: the NLL benchmark scores the same plain text, so what is trained is
    exactly what is measured, and short facts are not drowned in template tokens.
    """
    return [t.strip() for t in texts if t.strip()]


def _encode(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids per text, eos appended (the memory ends there), cut to ``max_tokens``. Shared by training
    and :func:`mean_nll` so both see the same tokens."""
    eos = tokenizer.eos_token_id
    out = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False).input_ids)[: max_tokens - 1]
        out.append([*ids, eos])
    return out


def prompt_ids(tokenizer: Any, question: str) -> list[int]:
    """A chat's prompt for ``question`` as a chat without retrieved memories renders it: the system preamble,
    the user turn, the generation prompt."""
    msgs = [{"role": "system", "content": SYSTEM_PREAMBLE}, {"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def chat_turns(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> list[tuple[list[int], int]]:
    """Every fact's training turns as token ids (prompt, answer, the template's end of turn), each with where
    its answer starts: the loss is on the answer."""
    out = []
    for text in training_texts(texts):
        for turn in examples.training_turns(examples.parse(text)):
            msgs = [
                {"role": "system", "content": SYSTEM_PREAMBLE},
                {"role": "user", "content": turn.question},
                {"role": "assistant", "content": turn.answer},
            ]
            prompt = tokenizer.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(msgs, tokenize=False)
            if not full.startswith(prompt):
                raise ValueError("the chat template does not keep the prompt as a prefix of the answered chat")
            p = list(tokenizer(prompt, add_special_tokens=False).input_ids)
            a = list(tokenizer(full[len(prompt) :].rstrip("\n"), add_special_tokens=False).input_ids)
            if len(p) >= max_tokens:  # no answer token would be left to learn
                raise ValueError(
                    f"max_tokens {max_tokens} is too short for the chat prompt of {turn.question!r} ({len(p)} tokens)"
                )
            out.append(((p + a)[:max_tokens], len(p)))
    return out


def _pad_turns(tokenizer: Any, turns: Sequence[tuple[list[int], int]]) -> dict[str, Any]:
    """Right-padded turns; labels only on the answers."""
    batch = _pad_batch(tokenizer, [ids for ids, _ in turns])
    for i, (_, start) in enumerate(turns):
        batch["labels"][i, :start] = -100
    return batch


def _pad_batch(tokenizer: Any, examples: Sequence[list[int]]) -> dict[str, Any]:
    """Right-padded input ids, attention mask, and labels with -100 on padding."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _batches(n: int, batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless mini-batches of example indices: each epoch a fresh shuffle."""
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


# General text whose next-token predictions training keeps as the base model makes them (a KL term):
# the adapter should add the cube's facts, not move the model's language elsewhere. Written for this
# purpose; deliberately not any evaluation set.
ANCHOR_TEXTS = [
    "I was thinking we could meet for lunch on Thursday if you are free.",
    "The train was late again this morning, so I missed the first meeting.",
    "She opened the window and listened to the rain on the roof.",
    "To make the sauce, melt the butter and stir in the flour slowly.",
    "We spent the weekend hiking and came back tired but happy.",
    "Could you send me the report before the end of the day?",
    "The museum is closed on Mondays, but it opens early on Saturdays.",
    "He has been learning to play the guitar for about two years now.",
    "Thanks so much for the birthday card, it really made my day.",
    "The children built a small boat out of wood and painted it blue.",
    "If the printer jams, open the side panel and remove the paper.",
    "Honestly, I think the second movie was better than the first one.",
    "Our neighbours just adopted a puppy and it barks at every bicycle.",
    "The meeting was moved to next week because half the team is away.",
    "After dinner we sat outside and talked until it got dark.",
    "I started running again last month and I feel much better.",
]


# ------------------------------------------------------------------ measuring


def mean_nll(model: Any, tokenizer: Any, texts: Sequence[str], max_tokens: int) -> float:
    """Mean per-token negative log-likelihood of ``texts`` (eos appended), weighted by tokens: the
    measure of how well the model "remembers" them. The model is left in eval mode."""
    import torch

    examples = _encode(tokenizer, training_texts(texts), max_tokens)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for e in examples:
            if len(e) < 2:
                continue  # nothing is predicted from a single token
            batch = _pad_batch(tokenizer, [e])
            loss = model(**batch).loss  # mean over the len(e) - 1 predicted tokens
            total += float(loss) * (len(e) - 1)
            count += len(e) - 1
    if count == 0:
        raise ValueError("no text to score")
    return total / count


# ------------------------------------------------------------------ training


def lora_config(settings: AdapterSettings, init_lora_weights: bool = True) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # typed int, used as a float (alpha / r)
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
        init_lora_weights=init_lora_weights,
    )


def train_lora(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    settings: AdapterSettings,
    progress: Progress | None = None,
) -> tuple[dict[str, np.ndarray], TrainingMetrics, AdapterEvaluation | None]:
    """Train a fresh LoRA on ``texts``' question-and-answer turns over the given base model; its weights,
    metrics and (``settings.examine``) its evaluation.

    The model is borrowed, not consumed: peft injects LoRA layers into it in place, and they are
    unloaded afterwards (base weights are frozen, so untouched), eval mode and the parameters'
    ``requires_grad`` flags restored. The caller should still own the model for the duration: a
    concurrent forward would see the adapter.
    """
    import torch
    from peft import get_peft_model, get_peft_model_state_dict

    texts = training_texts(texts)
    if not texts:
        raise ValueError("no text to train on")
    turns = chat_turns(tokenizer, texts, settings.max_tokens)
    nll_before = mean_nll(model, tokenizer, texts, settings.max_tokens)
    grad_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    torch.manual_seed(settings.seed)  # after the base is built: only the LoRA init draws from it
    peft_model = get_peft_model(model, lora_config(settings), adapter_name=TRAIN_ADAPTER)
    try:
        losses, tokens, seconds = _train_loop(peft_model, tokenizer, turns, settings, progress)
        nll_after = mean_nll(peft_model, tokenizer, texts, settings.max_tokens)
        evaluation = evaluate(peft_model, tokenizer, texts) if settings.examine else None
        state = get_peft_model_state_dict(peft_model, adapter_name=TRAIN_ADAPTER)
        arrays = {k: v.detach().to(torch.float32).cpu().numpy().copy() for k, v in state.items()}
    finally:
        peft_model.unload()  # removes the LoRA layers from ``model`` in place
        for name, p in model.named_parameters():
            p.requires_grad_(grad_flags.get(name, p.requires_grad))
        model.eval()
    metrics = TrainingMetrics(
        steps=settings.steps,
        examples=len(texts),
        turns=len(turns),
        tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        loss_first=losses[0],
        loss_last=losses[-1],
        nll_before=nll_before,
        nll_after=nll_after,
    )
    return arrays, metrics, evaluation


def _train_loop(
    peft_model: Any,
    tokenizer: Any,
    turns: list[tuple[list[int], int]],
    settings: AdapterSettings,
    progress: Progress | None,
) -> tuple[list[float], int, float]:
    """``settings.steps`` AdamW steps of the answers' causal-LM loss; (losses, tokens processed, seconds)."""
    import torch

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=settings.learning_rate)
    batches = _batches(len(turns), settings.batch_size, random.Random(settings.seed))
    anchors = _encode(tokenizer, ANCHOR_TEXTS, settings.max_tokens)
    anchor_batches = _batches(len(anchors), 4, random.Random(settings.seed + 1))
    peft_model.train()
    losses: list[float] = []
    tokens = 0
    start = time.perf_counter()
    for step in range(1, settings.steps + 1):
        batch = _pad_turns(tokenizer, [turns[i] for i in next(batches)])
        loss = peft_model(**batch).loss
        losses_step = loss
        if settings.preserve > 0:
            anchor = _pad_batch(tokenizer, [anchors[i] for i in next(anchor_batches)])
            losses_step = loss + settings.preserve * _drift(peft_model, anchor)
            tokens += int(anchor["attention_mask"].sum())
        losses_step.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        tokens += int(batch["attention_mask"].sum())
        if progress is not None:
            progress(step, settings.steps, losses[-1])
    seconds = time.perf_counter() - start
    peft_model.eval()
    return losses, tokens, seconds


# ------------------------------------------------------------------ examining

# General text the adapter must leave as the base model predicts it: held out from ANCHOR_TEXTS (which the
# KL guard trains on), so the guard is judged on text it never saw.
EXAM_TEXTS = [
    "My grandmother taught me how to bake bread when I was seven.",
    "The bus timetable changes during the summer holidays.",
    "We watched the fireworks from the hill behind the school.",
    "He forgot his umbrella and got soaked on the way home.",
    "Please remember to water the plants while I am away.",
    "The library extended its opening hours for the exam season.",
    "They painted the fence white and planted roses along it.",
    "I usually read a few pages before going to sleep.",
]
EXAM_MAX = 24  # questions asked at most (evenly spread over the facts)
PASS_SHARE = 0.75  # answered at least this share of the questions
UNRELATED_WORSE_MAX = 0.05  # held-out general text at most this much worse (mean NLL)


def _answer(model: Any, tokenizer: Any, question: str, max_new_tokens: int = 24) -> str:
    import torch

    ids = prompt_ids(tokenizer, question)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    return str(tokenizer.decode(out[0][len(ids) :], skip_special_tokens=True)).strip()


def evaluate(peft_model: Any, tokenizer: Any, texts: Sequence[str]) -> AdapterEvaluation:
    """Questions from the held-out templates, answered greedily with the adapter and with it disabled (the base
    model), and held-out general text's NLL both ways. Passes with at least ``PASS_SHARE`` answered, more than
    the base answers, and general text at most ``UNRELATED_WORSE_MAX`` worse."""
    exams = [(f, t) for f in map(examples.parse, training_texts(texts)) for t in examples.exam_turns(f)]
    if len(exams) > EXAM_MAX:
        exams = [exams[round(i * (len(exams) - 1) / (EXAM_MAX - 1))] for i in range(EXAM_MAX)]
    answered = base = 0
    samples: list[ExamAnswer] = []
    for fact, turn in exams:
        said = _answer(peft_model, tokenizer, turn.question)
        named = examples.names_answer(fact, said, turn.question)
        answered += named
        if len(samples) < 8:
            samples.append(ExamAnswer(question=turn.question, answer=said[:400], named=named))
        with peft_model.disable_adapter():
            base += examples.names_answer(fact, _answer(peft_model, tokenizer, turn.question), turn.question)
    with peft_model.disable_adapter():
        before = mean_nll(peft_model, tokenizer, EXAM_TEXTS, 96)
    after = mean_nll(peft_model, tokenizer, EXAM_TEXTS, 96)
    worse = after / before - 1
    n = len(exams)
    need = max(1, math.ceil(PASS_SHARE * n)) if n else 0
    if worse > UNRELATED_WORSE_MAX:
        passed, reason = False, f"general text {worse:+.1%} (at most {UNRELATED_WORSE_MAX:+.0%})"
    elif n == 0:
        passed, reason = False, "no question could be derived from these memories: nothing shows it answers"
    elif answered < need or answered <= base:
        passed, reason = False, f"answered {answered}/{n} (needs {need}, and more than the base model's {base})"
    else:
        passed, reason = True, f"answered {answered}/{n} (base model {base}), general text {worse:+.1%}"
    return AdapterEvaluation(
        questions=n,
        answered=answered,
        base_answered=base,
        unrelated_nll_before=before,
        unrelated_nll_after=after,
        passed=passed,
        reason=reason,
        samples=samples,
    )


def _drift(peft_model: Any, batch: dict[str, Any]) -> Any:
    """KL(base || adapted) of next-token distributions on ``batch``, mean over its real tokens."""
    import torch
    import torch.nn.functional as F

    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad(), peft_model.disable_adapter():
        base = F.log_softmax(peft_model(**inputs).logits.float(), dim=-1)
    adapted = F.log_softmax(peft_model(**inputs).logits.float(), dim=-1)
    per_token = (base.exp() * (base - adapted)).sum(-1)
    mask = batch["attention_mask"].float()
    return (per_token * mask).sum() / mask.sum()


# ------------------------------------------------------------------ persistence


def state_nbytes(state: dict[str, np.ndarray]) -> int:
    return int(sum(a.nbytes for a in state.values()))


def adapter_bytes(info: AdapterInfo, state: dict[str, np.ndarray]) -> bytes:
    """An adapter as one safetensors blob, its info as metadata: what the registry stores. No pickle."""
    from safetensors.numpy import save

    arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}
    return save(arrays, metadata={METADATA_KEY: info.model_dump_json()})


def adapter_from_bytes(data: bytes) -> tuple[AdapterInfo, dict[str, np.ndarray]]:
    """The info (as trained) and the weights of an :func:`adapter_bytes` blob."""
    from safetensors.numpy import load

    header_len = int.from_bytes(data[:8], "little")  # safetensors: a u64 length, then the JSON header
    meta = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"not a memos adapter (no {METADATA_KEY!r} metadata)")
    return AdapterInfo.model_validate(json.loads(meta[METADATA_KEY])), load(data)
