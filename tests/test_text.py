from memos_ray.plaintext.reader import read_messages
from memos_ray.plaintext.text import index_text, split_text, tokenize
from memos_ray.types import MessagesCreate


def test_tokenize_drops_stop_words_and_stems() -> None:
    assert tokenize("The parents went to the support groups") == ["parent", "went", "support", "group"]
    assert tokenize("Caroline's classes") == ["caroline", "class"]
    assert tokenize("researching researched") == ["research", "research"]


def test_index_text_carries_speaker() -> None:
    assert index_text("hi", "Bob") == "Bob: hi"
    assert index_text("hi", None) == "hi"


def test_split_text_respects_limit_and_keeps_words() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = split_text(text, 300)
    assert len(chunks) > 1
    assert all(len(c) <= 300 for c in chunks)
    assert " ".join(chunks).split() == text.split()
    assert split_text("short", 300) == ["short"]


def test_split_text_cuts_a_sentence_longer_than_a_chunk() -> None:
    text = "word " * 500
    chunks = split_text(text, 120)
    assert all(len(c) <= 120 for c in chunks)
    assert " ".join(chunks).split() == text.split()


def test_reader_keeps_speaker_time_and_chunks() -> None:
    req = MessagesCreate.model_validate(
        {
            "conversation_id": "conv-1",
            "max_chunk_chars": 200,
            "messages": [
                {
                    "role": "user",
                    "speaker": "Ann",
                    "content": "Hello. " * 100,
                    "timestamp": "2023-05-08T13:56:00Z",
                    "id": "D1:1",
                },
                {"role": "assistant", "content": "Hi Ann."},
            ],
        }
    )
    items = read_messages(req)
    ann = [i for i in items if i.source.speaker == "Ann"]
    assert len(ann) > 1 and all(len(i.text) <= 200 for i in ann)
    assert [i.metadata["chunk_index"] for i in ann] == list(range(len(ann)))
    assert all(i.said_at is not None and i.said_at.year == 2023 for i in ann)
    assert all(i.source.source_id == "D1:1" and i.source.conversation_id == "conv-1" for i in ann)
    assert items[-1].source.speaker == "assistant" and items[-1].kind == "dialogue"


def test_reader_gives_each_message_the_previous_one_as_context() -> None:
    req = MessagesCreate.model_validate(
        {
            "context": "Ann: earlier part",
            "messages": [
                {"speaker": "Bob", "content": "Where did you go hiking?"},
                {"speaker": "Ann", "content": "Mount Tamalpais, last Sunday."},
            ],
        }
    )
    first, second = read_messages(req)
    assert first.context == "Ann: earlier part"
    assert second.context == "Bob: Where did you go hiking?"
