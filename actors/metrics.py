"""The service's Prometheus metrics, the Ray way: ``ray.util.metrics`` in whichever process does the work (the
ingress, the Directory, a model worker, the Embedder, the Audit log, the MemScheduler), exported by each node's
metrics agent at ``http://<node>:<metrics_export_port>/metrics`` with the prefix ``ray_`` (``memos-ray up``
passes ``--metrics-port``, 8080 by default; a cluster's Prometheus finds every node through Ray's service
discovery file). Ray adds ``NodeAddress``, ``WorkerId`` and ``SessionName`` tags; a dashboard sums over them.

Every metric is declared once, in :data:`METRICS` (the README's table and ``clusters/grafana-dashboard.json``
are made from it); a process creates a metric the first time it records it. Recording never fails a request.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Literal

from ray.util import metrics as ray_metrics

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge", "histogram"]
MS_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


@dataclass(frozen=True)
class Metric:
    kind: Kind
    description: str
    tags: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()


METRICS: dict[str, Metric] = {
    "memos_request_ms": Metric(
        "histogram", "HTTP request latency per route (ms)", ("route", "method", "status"), tuple(MS_BUCKETS)
    ),
    "memos_errors_total": Metric("counter", "error answers by status and code", ("route", "status", "code")),
    "memos_cube_activations_total": Metric("counter", "cubes opened in an actor (cold activations)"),
    "memos_cube_activation_ms": Metric("histogram", "time to activate a cube (ms)", (), tuple(MS_BUCKETS)),
    "memos_cube_passivations_total": Metric("counter", "cubes passivated (flushed, actor given back)"),
    "memos_live_cubes": Metric("gauge", "cubes with a live actor now"),
    "memos_kv_total": Metric(
        "counter", "chats by what activation memory did: hit, moved, loaded, built, composed, off", ("status",)
    ),
    "memos_kv_moved_bytes_total": Metric("counter", "KV cache bytes adopted from another worker via the object store"),
    "memos_kv_prefix_tokens_total": Metric("counter", "prompt tokens served from a cached prefix (not prefilled)"),
    "memos_ttft_ms": Metric("histogram", "time to first token per chat (ms)", ("kv",), tuple(MS_BUCKETS)),
    "memos_adapter_total": Metric(
        "counter", "chats under an adapter: loaded (into the worker) or resident (swapped to)", ("status",)
    ),
    "memos_training_jobs_total": Metric(
        "counter", "adapter training jobs by outcome: started, activated, kept, failed", ("outcome",)
    ),
    "memos_scheduler_decisions_total": Metric("counter", "MemScheduler decisions by kind", ("kind",)),
    "memos_embedder_batch_size": Metric(
        "histogram", "sentences per embedder batch", (), tuple(float(b) for b in BATCH_BUCKETS)
    ),
    "memos_audit_appends_total": Metric("counter", "audit records appended (committed)"),
}

_made: dict[str, ray_metrics.Counter | ray_metrics.Gauge | ray_metrics.Histogram] = {}


def _metric(name: str) -> ray_metrics.Counter | ray_metrics.Gauge | ray_metrics.Histogram:
    made = _made.get(name)
    if made is None:
        m = METRICS[name]
        if m.kind == "counter":
            made = ray_metrics.Counter(name, description=m.description, tag_keys=m.tags)
        elif m.kind == "gauge":
            made = ray_metrics.Gauge(name, description=m.description, tag_keys=m.tags)
        else:
            made = ray_metrics.Histogram(
                name, description=m.description, boundaries=list(m.boundaries), tag_keys=m.tags
            )
        _made[name] = made
    return made


def _record(name: str, value: float, tags: dict[str, str]) -> None:
    try:
        metric = _metric(name)
        if isinstance(metric, ray_metrics.Counter):
            if value > 0:
                metric.inc(value, tags=tags)
        elif isinstance(metric, ray_metrics.Gauge):
            metric.set(value, tags=tags)
        else:
            metric.observe(value, tags=tags)
    except Exception:  # bookkeeping: never the request's failure
        with contextlib.suppress(Exception):
            log.debug("metric %s not recorded", name, exc_info=True)


def count(name: str, value: float = 1.0, **tags: str) -> None:
    """Add ``value`` to counter ``name``."""
    _record(name, value, tags)


def observe(name: str, value: float, **tags: str) -> None:
    """One observation of histogram ``name``."""
    _record(name, value, tags)


def gauge(name: str, value: float, **tags: str) -> None:
    """Set gauge ``name``."""
    _record(name, value, tags)


__all__ = ["METRICS", "Metric", "count", "gauge", "observe"]
