"""The sentence encoder on the real int8 MiniLM, without Ray: side-by-side runs give one text one vector."""

from __future__ import annotations

import numpy as np

from memos_ray.config import EmbedderConfig
from memos_ray.plaintext.embedding import SentenceEncoder

TEXTS = [
    "Caroline went to the LGBTQ support group on Tuesday.",
    "ok",
    "Melanie painted a sunrise over the lake last year, and she says it is her favourite work so far.",
    "What did she paint?",
    "The staging server is called bluebird.",
]


def test_a_sentence_gets_the_same_vector_alone_in_any_batch_and_on_any_thread_count(
    encoder: SentenceEncoder,
) -> None:
    one_thread = SentenceEncoder(EmbedderConfig(num_threads=1))
    batch = encoder.encode(TEXTS * 3)  # more sentences than threads: each thread takes every other one
    assert batch.shape == (15, 384)
    for i, text in enumerate(TEXTS):
        alone = encoder.encode([text])[0]
        np.testing.assert_array_equal(batch[i], alone)
        np.testing.assert_array_equal(batch[i + 5], alone)
        np.testing.assert_array_equal(one_thread.encode([text])[0], alone)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert float(batch[0] @ batch[3]) < 0.9  # different sentences, different vectors
