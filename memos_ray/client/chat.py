"""Request builder for a chat with memory (``POST /v1/chat``), used by both SDK clients and their streaming."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from memos_ray.client._request import Call, body_of, given
from memos_ray.types import ChatMessage, ChatRequest, ChatResponse


class ChatCalls:
    @staticmethod
    def chat(
        cube_ids: str | Sequence[str],
        messages: str | Sequence[ChatMessage | Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        remember: bool | None = None,
        use_activation_memory: bool | None = None,
        use_parametric_memory: bool | None = None,
        stream: bool | None = None,
    ) -> Call[ChatResponse]:
        """A chat over one cube (a str) or several: ``messages`` is the question (a str) or the conversation.
        ``remember``: the exchange becomes memories of the cube."""
        cubes = [cube_ids] if isinstance(cube_ids, str) else list(cube_ids)
        turns = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
        fields = given(
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=top_k,
            remember=remember,
            use_activation_memory=use_activation_memory,
            use_parametric_memory=use_parametric_memory,
            stream=stream,
        )
        body = body_of(ChatRequest, {**fields, "cube_ids": cubes, "messages": turns})
        return Call("POST", "/v1/chat", ChatResponse.model_validate, json=body)
