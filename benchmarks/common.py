"""What every benchmark shares: a real stack on a scratch data dir, timing and reporting."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private cluster on loopback
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from memos_ray.config import (
    DirectoryConfig,
    LLMConfig,
    MemosConfig,
    SchedulerConfig,
    ServeConfig,
    StorageConfig,
    WorkersConfig,
)

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = Path(__file__).resolve().parents[1] / ".memos-ray" / "models"  # the converted LLM, shared with tests


@dataclass
class Stack:
    config: MemosConfig
    url: str
    http: httpx.Client
    key: str  # the bootstrap administrator's API key (every route but health needs one)


@contextmanager
def stack(
    port: int = 8765,
    max_live_cubes: int = 24,
    workers: int = 1,
    scheduler: dict[str, Any] | None = None,
    storage: dict[str, Any] | None = None,
) -> Iterator[Stack]:
    """Ray + the Serve app on the embedded defaults (``storage``: e.g. server URIs), on a throwaway data dir."""
    import ray
    from ray import serve

    from actors.runtime import shutdown_runtime
    from serve.app import start

    with tempfile.TemporaryDirectory(prefix="memos-bench-") as data:
        config = MemosConfig(
            namespace="memos_bench",
            storage=StorageConfig(data_dir=Path(data), **(storage or {})),
            directory=DirectoryConfig(max_live_cubes=max_live_cubes),
            serve=ServeConfig(port=port),
            llm=LLMConfig(cache_dir=MODELS),
            workers=WorkersConfig(count=workers),
            scheduler=SchedulerConfig(**(scheduler or {})),
        )
        ray.init(include_dashboard=False, namespace="memos_bench", log_to_driver=False)
        try:
            url = start(config)
            key = (Path(data) / "admin.key").read_text().strip()
            with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as http:
                yield Stack(config, url, http, key)
        finally:
            serve.shutdown()
            shutdown_runtime(config)
            ray.shutdown()


def settle(s: Stack, timeout_s: float = 300.0) -> float:
    """Seconds until the service is done starting: the model worker has measured its prefix break-even (one
    core for ~20 s after start) and the Directory has started its ``warm_actors`` (both in the background).
    What follows measures the service, not what it does in its first minute."""
    import ray

    from actors.directory import DIRECTORY_NAME
    from actors.scheduler import SCHEDULER_NAME

    start = time.perf_counter()
    directory = ray.get_actor(DIRECTORY_NAME, namespace=s.config.namespace)
    ray.get(ray.get_actor(SCHEDULER_NAME, namespace=s.config.namespace).calibrated.remote())
    cfg = s.config.directory
    want = min(cfg.warm_actors, cfg.max_live_cubes)
    while time.perf_counter() - start < timeout_s:
        stats = ray.get(directory.stats.remote())
        if stats.live + stats.spares >= want:
            break
        time.sleep(0.5)
    took = time.perf_counter() - start
    print(f"calibrated, and {want} cube actors started in the background, {took:.1f} s after the service answered")
    return took


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "mean_ms": statistics.fmean(ms) if ms else 0.0}


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def check(response: httpx.Response, status: int = 200) -> Any:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:300]}"
        )
    return response.json() if response.content else None


def chat(http: httpx.Client, cube_id: str, question: str, **options: Any) -> dict[str, Any]:
    """One ``POST /v1/chat`` over one cube (``options``: the request's other fields), its answer's JSON."""
    body = {"cube_ids": [cube_id], "messages": [{"role": "user", "content": question}], **options}
    return check(http.post("/v1/chat", json=body))  # type: ignore[no-any-return]


def corpus(n: int) -> list[str]:
    """``n`` distinct, realistic dialogue lines (LoCoMo turns, paired so they don't repeat)."""
    from benchmarks import locomo

    turns = [m.content for c in locomo.load() for m in c.messages]
    return [f"{turns[i % len(turns)]} {turns[(i * 7 + 3) % len(turns)]}"[:300] for i in range(n)]


def questions() -> list[str]:
    from benchmarks import locomo

    return [q.text for c in locomo.load() for q in c.questions]


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = {c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols}
    print(f"\n## {title}")
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).ljust(widths[c]) for c in cols))


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path
