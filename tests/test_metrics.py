"""The Prometheus metrics, scraped from Ray's metrics endpoint while the service works: the counters move."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
import ray

from actors.metrics import METRICS
from tests.helpers import bearer

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def scrape() -> str:
    port = ray.nodes()[0]["MetricsExportPort"]
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def total(body: str, name: str, **tags: str) -> float:
    """The sum of ``ray_<name>`` over every series (process, node) whose tags include ``tags``."""
    found = 0.0
    for line in body.splitlines():
        if not line.startswith(f"ray_{name}{{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if all(labels.get(k) == v for k, v in tags.items()):
            found += float(line.rsplit(" ", 1)[1])
    return found


@pytest.fixture(scope="module")
def http(base_url: str, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120, headers=bearer(api_key)) as client:
        yield client


def test_the_counters_move_as_the_service_works(http: httpx.Client) -> None:
    before = scrape()
    assert http.post("/v1/cubes", json={"id": "metrics-cube"}).status_code == 201
    for text in ("The boiler is serviced in May.", "The meter is read monthly."):
        assert http.post("/v1/cubes/metrics-cube/memories", json={"text": text, "tags": ["pinned"]}).status_code == 201
    assert http.post("/v1/cubes/metrics-cube/search", json={"query": "boiler"}).status_code == 200
    assert http.get("/v1/cubes/no-such-cube").status_code == 404
    chat = {"cube_ids": ["metrics-cube"], "messages": [{"role": "user", "content": "When is the boiler serviced?"}]}
    assert http.post("/v1/chat", json={**chat, "max_tokens": 4}).status_code == 200
    route = "/v1/cubes/{cube_id}/memories"
    wanted = {
        ("memos_request_ms_count", (("route", route), ("status", "201"))): 2,
        ("memos_errors_total", (("code", "cube_not_found"), ("status", "404"))): 1,
        ("memos_audit_appends_total", ()): 3,
        ("memos_embedder_batch_size_count", ()): 1,
        ("memos_kv_total", ()): 1,
        ("memos_cube_activations_total", ()): 1,
        ("memos_ttft_ms_count", ()): 1,
    }
    deadline = time.monotonic() + 60  # each process exports every few seconds
    while True:
        after = scrape()
        moved = {name: total(after, name, **dict(tags)) - total(before, name, **dict(tags)) for name, tags in wanted}
        if all(moved[name] >= n for (name, _), n in wanted.items()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert all(moved[name] >= n for (name, _), n in wanted.items()), moved
    # every declared metric has a description Prometheus shows once it is recorded
    assert f"# HELP ray_memos_request_ms {METRICS['memos_request_ms'].description}" in after
