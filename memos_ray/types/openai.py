"""The OpenAI-compatible chat route's schema (``POST /v1/chat/completions``, ``GET /v1/models``).

A request is translated into the one :class:`ChatRequest` every entry point runs (:meth:`OpenAIChatRequest.to_chat`),
so the rules of a chat (what goes into a prefix, what is remembered, who may read which cube) are the native
route's. Where the memory options go, in OpenAI's own places:

- **the model names the cubes**: ``memos-ray/<cube_id>``, several joined by ``+`` (``memos-ray/team+notes``);
  ``GET /v1/models`` lists one per cube the key may read. Any agent framework that lets you set a model name can
  choose its memory;
- **``metadata``** (OpenAI's string-to-string map) carries the chat's options: ``remember`` ("true": the exchange
  becomes memories of the cube), ``top_k``, ``use_activation_memory``, ``use_parametric_memory``, ``prefix``,
  ``layout``, ``kv_mode`` and ``recompute``;
- **``user``** names the end user: the speaker of the user turns the memory loop writes.

The answer is OpenAI's, with one extension field, ``memos``: the native route's :class:`ChatResponse` (the
memories used, the KV cache's status, the adapter, the timings). Fields OpenAI defines that this server cannot
honour (``n`` > 1, tools, logprobs) are refused with a 422 naming them; fields it does not know are ignored, as an
OpenAI-compatible server must (clients send newer ones).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from memos_ray.types.activation import ChatRequest, ChatResponse
from memos_ray.types.memory import ChatMessage

MODEL_PREFIX = "memos-ray"
"""The base model's name here; ``memos-ray/<cube>[+<cube>...]`` chats over those cubes' memories."""

DEFAULT_MAX_TOKENS = 128

_OPTIONS = {
    "remember",
    "top_k",
    "use_activation_memory",
    "use_parametric_memory",
    "prefix",
    "layout",
    "quote_top",
    "kv_mode",
    "recompute",
}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class OpenAIMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=128)

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(_Lenient):
    include_usage: bool = False


class OpenAIChatRequest(_Lenient):
    model: str = Field(min_length=1, max_length=600, description="memos-ray/<cube_id>[+<cube_id>...]")
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=64)
    max_tokens: int | None = Field(None, ge=1, le=512)
    max_completion_tokens: int | None = Field(None, ge=1, le=512)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=128)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    tools: list[dict[str, Any]] | None = None
    logprobs: bool | None = None

    @model_validator(mode="after")
    def _supported(self) -> OpenAIChatRequest:
        if self.n not in (None, 1):
            raise ValueError("n: one choice per request (n=1)")
        if self.tools:
            raise ValueError("tools: tool calls are not supported by this server")
        if self.logprobs:
            raise ValueError("logprobs: not supported by this server")
        unknown = set(self.metadata or {}) - _OPTIONS
        if unknown:
            raise ValueError(f"metadata: unknown memos-ray options {sorted(unknown)}; known: {sorted(_OPTIONS)}")
        return self

    @property
    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def cube_ids(self) -> list[str]:
        prefix, slash, cubes = self.model.partition("/")
        if prefix != MODEL_PREFIX or not slash or not cubes:
            raise ValueError(
                f"model: {self.model!r} names no cube; use '{MODEL_PREFIX}/<cube_id>' (several joined by '+'), "
                "as GET /v1/models lists them"
            )
        return cubes.split("+")

    def to_chat(self) -> ChatRequest:
        """The native chat this request asks for; a ValueError names what is wrong."""
        messages = [
            ChatMessage(
                role="system" if m.role == "developer" else m.role,
                content=m.text(),
                speaker=m.name or (self.user if m.role == "user" else None),
            )
            for m in self.messages
            if m.text().strip()
        ]
        if not messages:
            raise ValueError("messages: every message is empty")
        options: dict[str, Any] = dict(self.metadata or {})
        for flag in ("remember", "use_activation_memory", "use_parametric_memory"):
            if flag in options:
                options[flag] = _flag(flag, options[flag])
        try:
            return ChatRequest(
                cube_ids=self.cube_ids(),  # type: ignore[arg-type]
                messages=messages,
                max_tokens=self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS,
                temperature=0.0 if self.temperature is None else self.temperature,
                seed=self.seed or 0,
                stream=self.stream,
                **options,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}: {first['msg']}") from None


def _flag(name: str, value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"metadata.{name}: 'true' or 'false', not {value!r}")


def model_name(cube_ids: list[str]) -> str:
    return f"{MODEL_PREFIX}/{'+'.join(cube_ids)}"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    memos: ChatResponse = Field(description="what the native /v1/chat answers: memories used, KV status, adapter")


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    memos: ChatResponse | None = Field(None, description="on the last chunk: the native chat's response")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = Field(description="the cube's owner; memos-ray for the base model")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
