"""The OpenAI-compatible route, through the official ``openai`` client against the running service: the model
names the cubes, ``metadata`` the options, ``memos`` carries what /v1/chat says; streaming, stop, errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import bearer, user_key

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FACTS = ["The staging database is called Heron.", "Dana owns the billing service."]
QUESTION = "What is the staging database called?"


@pytest.fixture(scope="module")
def http(base_url: str, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120, headers=bearer(api_key)) as client:
        yield client


@pytest.fixture(scope="module")
def cube(http: httpx.Client) -> dict[str, str]:
    assert http.post("/v1/cubes", json={"id": "oa-team"}).status_code == 201
    return {
        t: http.post("/v1/cubes/oa-team/memories", json={"text": t, "tags": ["pinned"]}).json()["id"] for t in FACTS
    }


@pytest.fixture(scope="module")
def client(base_url: str, api_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=120) as oa:
        yield oa


def ask(client: openai.OpenAI, **options: Any) -> Any:
    return client.chat.completions.create(
        model="memos-ray/oa-team", messages=[{"role": "user", "content": QUESTION}], max_tokens=16, **options
    )


def test_models_list_the_cubes_the_key_reads(client: openai.OpenAI, cube: dict[str, str], base_url: str) -> None:
    assert "memos-ray/oa-team" in {m.id for m in client.models.list()}
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=user_key(base_url, "oa-stranger"), max_retries=0) as other:
        assert "memos-ray/oa-team" not in {m.id for m in other.models.list()}


def test_a_completion_is_the_native_chat_with_its_memories(
    client: openai.OpenAI, http: httpx.Client, cube: dict[str, str]
) -> None:
    done = ask(client)
    native = http.post(
        "/v1/chat",
        json={"cube_ids": ["oa-team"], "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16},
    ).json()
    text = done.choices[0].message.content
    assert text and text == native["text"]  # greedy: the same chat, through either door
    assert done.model == "memos-ray/oa-team" and done.object == "chat.completion"
    assert done.choices[0].finish_reason in ("stop", "length")
    assert done.usage.completion_tokens == native["tokens_generated"] and done.usage.prompt_tokens > 0
    memos = done.model_extra["memos"]
    assert {m["memory_id"] for m in memos["memories_used"]} >= set(cube.values())
    assert memos["kv"]["status"] in ("built", "hit", "moved", "loaded")


def test_streaming_gives_the_same_text_then_memos_and_usage(client: openai.OpenAI, cube: dict[str, str]) -> None:
    whole = ask(client).choices[0].message.content
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert last.model_extra["memos"]["memories_used"] and chunks[-1].usage.completion_tokens > 0
    # a stop sequence ends the answer before it, streamed or not
    word = whole.split()[1] if len(whole.split()) > 1 else whole[1:3]
    cut = whole[: whole.index(word)]
    assert ask(client, stop=[word]).choices[0].message.content == cut
    streamed = ask(client, stop=[word], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == cut


def test_metadata_remembers_the_exchange_as_the_user(
    client: openai.OpenAI, http: httpx.Client, cube: dict[str, str]
) -> None:
    done = ask(client, metadata={"remember": "true", "top_k": "2"}, user="dana")
    remembered = done.model_extra["memos"]["remembered"]
    assert len(remembered) == 2
    asked = http.get(f"/v1/cubes/oa-team/memories/{remembered[0]['memory_id']}").json()
    assert asked["text"] == QUESTION and asked["provenance"]["speaker"] == "dana"


@pytest.mark.parametrize(
    ("options", "status", "names"),
    [
        ({"model": "gpt-4o"}, 422, "model"),
        ({"model": "memos-ray/no-such-cube"}, 404, "no-such-cube"),
        ({"n": 2}, 422, "n:"),
        ({"metadata": {"remember": "maybe"}}, 422, "remember"),
        ({"metadata": {"colour": "blue"}}, 422, "colour"),
        ({"max_tokens": 100_000}, 422, "max_tokens"),
    ],
)
def test_what_cannot_be_honoured_is_a_4xx_naming_it(
    client: openai.OpenAI, cube: dict[str, str], options: dict[str, Any], status: int, names: str
) -> None:
    body = {"model": "memos-ray/oa-team", "messages": [{"role": "user", "content": QUESTION}], **options}
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**body)
    assert caught.value.status_code == status and names in caught.value.message


def test_a_key_without_access_is_refused(base_url: str, cube: dict[str, str]) -> None:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="mrk_000000000000_wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    key = user_key(base_url, "oa-outsider")
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0) as outsider:
        with pytest.raises((openai.NotFoundError, openai.PermissionDeniedError)):  # as over /v1/chat
            ask(outsider)
