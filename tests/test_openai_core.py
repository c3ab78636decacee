"""The OpenAI request's translation into the native chat (no Ray): where the cubes and options come from, and
what is refused with a message naming it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from memos_ray.types.openai import OpenAIChatRequest
from serve.routes.openai import cut_at_stop


def request(**fields: Any) -> OpenAIChatRequest:
    return OpenAIChatRequest.model_validate(
        {"model": "memos-ray/team+notes", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_the_model_names_the_cubes_and_metadata_the_options() -> None:
    chat = request(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Where"}, {"type": "text", "text": "is it?"}]},
        ],
        metadata={"top_k": "3", "use_activation_memory": "false"},
        user="dana",
        max_completion_tokens=20,
        temperature=0.5,
        frequency_penalty=0.1,  # an OpenAI field this server does not use: ignored, as clients send newer ones
    ).to_chat()
    assert chat.cube_ids == ["team", "notes"] and chat.top_k == 3 and chat.use_activation_memory is False
    assert [m.role for m in chat.messages] == ["system", "user"] and chat.messages[1].content == "Where\nis it?"
    assert chat.messages[1].speaker == "dana" and chat.max_tokens == 20 and chat.temperature == 0.5


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"model": "gpt-4o"}, "model"),
        ({"model": "memos-ray/"}, "model"),
        ({"model": "memos-ray/bad id!"}, "cube_ids"),
        ({"metadata": {"remember": "yes please"}}, "remember"),
        ({"metadata": {"top_k": "lots"}}, "top_k"),
        ({"metadata": {"remember": "true"}}, "remember needs a chat over one cube"),
    ],
)
def test_a_bad_request_says_what_is_wrong(fields: dict[str, Any], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        request(**fields).to_chat()


@pytest.mark.parametrize("fields", [{"n": 3}, {"tools": [{"type": "function"}]}, {"logprobs": True}])
def test_what_this_server_cannot_do_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=next(iter(fields))):
        request(**fields)


def test_stop_sequences_cut_the_answer() -> None:
    assert cut_at_stop("Heron is the name.", ["name", " is"]) == ("Heron", True)
    assert cut_at_stop("Heron", ["x"]) == ("Heron", False)
