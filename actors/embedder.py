"""The shared Embedder actor: one sentence model for the cluster, batching concurrent requests.

Requests from many ingress calls join one queue; a single loop takes what is waiting (up to
``max_batch`` sentences, waiting ``batch_wait_ms`` for company when alone) and runs one
forward pass in a worker thread, so the event loop keeps accepting requests meanwhile.

It also holds the model's word-neighbour table (query expansion), made at its start (built once per
model and machine, then read from the cache) and put in the object store, so every cube actor of a node
reads one copy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import ray
from ray import ObjectRef
from ray.actor import ActorHandle

from actors import metrics
from actors.calls import actor_class, call
from memos_ray.config import EmbedderConfig
from memos_ray.plaintext.embedding import SentenceEncoder
from memos_ray.types import EmbedderStats

EMBEDDER_NAME = "memos_embedder"


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[np.ndarray] = field(repr=False)


class Embedder:
    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self.encoder = SentenceEncoder(config)
        self._words: ObjectRef = ray.put(self.encoder.word_neighbours())
        self._queue: asyncio.Queue[_Pending] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._requests = self._sentences = self._batches = 0
        self._busy = 0.0

    def _ensure_loop(self) -> asyncio.Queue[_Pending]:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
        return self._queue

    async def ready(self) -> int:
        return self.config.dim

    async def word_neighbours(self) -> list[ObjectRef]:
        """The word-neighbour table in the object store (a list, so the caller gets the reference)."""
        return [self._words]

    async def embed(self, texts: list[str]) -> np.ndarray:
        queue = self._ensure_loop()
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await queue.put(_Pending(texts, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            batch = [first]
            size = len(first.texts)
            if size < self.config.max_batch and self._queue.empty() and self.config.batch_wait_ms > 0:
                await asyncio.sleep(self.config.batch_wait_ms / 1000)
            while size < self.config.max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                batch.append(nxt)
                size += len(nxt.texts)
            texts = [t for p in batch for t in p.texts]
            start = time.perf_counter()
            try:
                vecs = await asyncio.to_thread(self.encoder.encode, texts)
            except Exception as exc:  # deliver the failure to every waiter, keep serving
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self._busy += time.perf_counter() - start
            self._requests += len(batch)
            self._sentences += len(texts)
            self._batches += 1
            metrics.observe("memos_embedder_batch_size", len(texts))
            offset = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(vecs[offset : offset + len(p.texts)])
                offset += len(p.texts)

    async def stats(self) -> EmbedderStats:
        return EmbedderStats(
            requests=self._requests,
            sentences=self._sentences,
            batches=self._batches,
            mean_batch=self._sentences / self._batches if self._batches else 0.0,
            busy_s=self._busy,
        )


EmbedderActor = actor_class(Embedder, max_restarts=-1, max_concurrency=1000)


def embedding(handle: ActorHandle) -> Callable[[list[str]], Awaitable[np.ndarray]]:
    """``await embed(texts)`` through the shared Embedder: the one way callers get vectors."""

    async def embed(texts: list[str]) -> np.ndarray:
        return await call(handle, Embedder.embed, texts)

    return embed
