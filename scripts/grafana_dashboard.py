"""Writes clusters/grafana-dashboard.json from the one list of metrics (actors/metrics.py METRICS): a panel per
metric, summed over Ray's per-process series. Run after adding a metric:

    .venv/bin/python scripts/grafana_dashboard.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from actors.metrics import METRICS, Metric

OUT = Path(__file__).resolve().parent.parent / "clusters" / "grafana-dashboard.json"


def _queries(name: str, m: Metric) -> list[tuple[str, str]]:
    """(PromQL, legend) pairs for one metric's panel."""
    series = f"ray_{name}"
    by = f" by ({', '.join(m.tags)})" if m.tags else ""
    if m.kind == "counter":
        return [(f"sum{by} (rate({series}[1m]))", "{{" + "}} {{".join(m.tags) + "}}" if m.tags else name)]
    if m.kind == "gauge":
        return [(f"sum({series})", name)]
    group = ", ".join(("le", *m.tags[:1]))
    legend = "{{" + m.tags[0] + "}}" if m.tags else ""
    return [
        (f"histogram_quantile({q}, sum by ({group}) (rate({series}_bucket[5m])))", f"p{int(q * 100)} {legend}".strip())
        for q in (0.5, 0.99)
    ]


def dashboard() -> dict[str, Any]:
    panels = []
    for i, (name, m) in enumerate(METRICS.items()):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": m.description,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "targets": [
                    {"refId": chr(65 + j), "expr": expr, "legendFormat": legend}
                    for j, (expr, legend) in enumerate(_queries(name, m))
                ],
            }
        )
    return {
        "title": "memos-ray",
        "uid": "memos-ray",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": panels,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT} ({len(METRICS)} panels)")
