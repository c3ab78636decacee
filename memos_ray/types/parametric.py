"""Parametric memory: LoRA adapter settings and metadata, training requests and jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from memos_ray.types.base import (
    Id,
    MemoryRef,
    Strict,
    Tag,
)
from memos_ray.types.memory import (
    MemoryKind,
)
from memos_ray.types.model import ModelIdentity


class AdapterSettings(Strict):
    """How an adapter is shaped and trained. Stored with it: loading needs the same LoRA shape."""

    rank: int = Field(16, ge=1, le=64, description="LoRA rank r")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (the update is scaled by alpha / rank)")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout during training")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="names of the linear layers that get a LoRA update (attention only answered as well as with "
        "the MLP too, and switches three times faster)",
    )
    steps: int = Field(24, ge=1, le=5000, description="optimiser steps")
    learning_rate: float = Field(2e-3, gt=0, le=1, description="AdamW learning rate")
    batch_size: int = Field(8, ge=1, le=64, description="question-and-answer turns per optimiser step")
    max_tokens: int = Field(
        128, ge=8, le=512, description="tokens per training turn (prompt and answer); longer is cut"
    )
    seed: int = Field(0, description="seeds the LoRA initialisation and the batch order")
    examine: bool = Field(
        True,
        description="after training, ask it questions it was not trained on (~1 s each on 2 cores); one that fails "
        "is kept but never made active. False: no exam, activated as asked",
    )
    preserve: float = Field(
        1.0,
        ge=0,
        le=100,
        description="weight of keeping the model's predictions on general text unchanged (KL to the base "
        "model on a built-in anchor corpus); 0: plain fine-tuning, which also degrades unrelated text",
    )


class TrainingMetrics(Strict):
    steps: int = Field(description="optimiser steps taken")
    examples: int = Field(description="distinct training examples (memories)")
    turns: int = Field(0, description="question-and-answer chat turns derived from them and trained on")
    tokens: int = Field(description="non-padding tokens processed over all steps")
    seconds: float = Field(description="wall time of the training loop (NLL measurements excluded)")
    tokens_per_s: float
    loss_first: float = Field(description="training loss of the first step")
    loss_last: float = Field(description="training loss of the last step")
    nll_before: float = Field(description="mean per-token NLL of the training texts under the base model")
    nll_after: float = Field(description="mean per-token NLL of the training texts with the adapter")


class ExamAnswer(Strict):
    question: str
    answer: str = Field(max_length=400)
    named: bool = Field(description="the answer names the fact's object")


class AdapterEvaluation(Strict):
    """An adapter examined, after training, on questions it was not trained on (no retrieval), against the base
    model on the same questions, and on general text it must leave as it was."""

    questions: int
    answered: int = Field(description="answers with the adapter that name the fact")
    base_answered: int = Field(description="the same questions, the base model")
    unrelated_nll_before: float = Field(description="mean per-token NLL of held-out general text, base model")
    unrelated_nll_after: float = Field(description="the same with the adapter")
    passed: bool
    reason: str
    samples: list[ExamAnswer] = Field(default_factory=list, description="a few questions and the adapter's answers")

    @property
    def unrelated_change(self) -> float:
        return self.unrelated_nll_after / self.unrelated_nll_before - 1


class AdapterInfo(Strict):
    """What a stored adapter is: everything but its weights."""

    id: str
    cube_id: str
    version: int
    base_model: ModelIdentity
    settings: AdapterSettings
    sources: list[MemoryRef]
    metrics: TrainingMetrics
    created_at: datetime
    created_by: str
    bytes: int
    stale: bool = False
    stale_reason: str | None = None
    evaluation: AdapterEvaluation | None = Field(
        None, description="how it answered questions it was not trained on; one that failed is never made active"
    )


JobState = Literal["queued", "running", "succeeded", "failed"]


class TrainRequest(Strict):
    """Train an adapter from a cube's memories: its active facts by default, or a selection."""

    settings: AdapterSettings = Field(default_factory=AdapterSettings)
    kinds: list[MemoryKind] = Field(default_factory=lambda: [MemoryKind.fact], description="[] for every kind")
    tags_any: list[Tag] = Field(default_factory=list, description="only memories with one of these tags")
    memory_ids: list[Id] | None = Field(None, max_length=5_000, description="exactly these memories")
    max_memories: int = Field(2_000, ge=1, le=20_000)
    activate: bool = Field(True, description="make the new adapter the cube's active one when it is ready")


class TrainingJob(Strict):
    id: str
    cube_id: str
    state: JobState = "queued"
    step: int = 0
    steps: int
    percent: float = 0.0
    loss: float | None = None
    memories: int = Field(description="memories it trains on")
    adapter_id: str | None = Field(None, description="the adapter it made (when succeeded)")
    evaluation: AdapterEvaluation | None = Field(None, description="its adapter's exam (made active only if passed)")
    error: str | None = None
    created_by: str
    reason: str | None = Field(None, description="why it was started, when the MemScheduler's policy started it")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class AdapterList(Strict):
    adapters: list[AdapterInfo]
    active: str | None


class Retrain(Strict):
    """An adapter (or a job that was to become one) that learned a purged memory and was the cube's active one:
    what training it again would start from (the MemScheduler leaves the erased memories out)."""

    replaces: str = Field(description="the withdrawn adapter, or the cancelled job")
    settings: AdapterSettings
    sources: list[MemoryRef]


class AdapterChange(Strict):
    """What a change to memories did to a cube's adapters: marked stale (an edit or delete), or withdrawn (a
    purge: deleted from disk and every worker, their weights having learned the erased text)."""

    marked: list[str] = Field(default_factory=list)
    withdrawn: list[str] = Field(default_factory=list)
    cancelled: list[str] = Field(default_factory=list, description="training jobs cancelled: they learned it too")
    retrain: list[Retrain] = Field(default_factory=list, description="what was, or was to be, the active adapter")


class ActiveAdapter(Strict):
    adapter_id: Id | None = Field(description="the adapter chat uses for this cube; null: the base model")


class AdapterRef(Strict):
    """What a chat needs to run under a cube's adapter: which one, and how to build its LoRA layers."""

    adapter_id: str
    cube_id: str
    version: int
    base_model: ModelIdentity
    settings: AdapterSettings
    bytes: int
