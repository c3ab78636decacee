"""The benchmarks' figures (benchmarks/plots.py) from small synthetic results shaped like the real ones; no Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _kv(status: str, tokens: int) -> dict[str, Any]:
    return {"kv": {"status": status, "tokens": tokens}, "ttft_ms": 300.0, "prefill_tokens": 50, "prompt_tokens": 400}


def _zipf(cubes: int) -> dict[str, Any]:
    return {
        "cubes": cubes,
        "live_cap": 24,
        "requests": 600,
        "distinct_cubes": 205,
        "activations": 313,
        "zipf_p50_ms": 242.0,
        "zipf_p95_ms": 398.0,
        "zipf_p95_2nd_half_ms": 329.0,
        "warm_p50_ms": 172.0,
        "warm_p95_ms": 223.0,
    }


def _workload(run: str, cached: float) -> dict[str, Any]:
    return {"run": run, "chats": 4, "from_cached_prefix": cached, "prompt_tokens_from_cache": cached + 0.05}


RESULTS: dict[str, dict[str, Any]] = {
    "scheduler": {
        "sweep": [
            {"prefix": kind, "prefix_tokens": n, "hit_ms": 100 + n / 20, "off_ms": 100 + n}
            for kind in ("pinned", "working set (budget 1024)")
            for n in (69, 321, 1336)
        ],
        "workload": [_workload("quoted / policy off", 0.0), _workload("quoted / policy on", 0.8)],
        "chats": {
            "quoted": {
                "off": [_kv("hit", 21)] * 4,
                "on": [_kv("hit", 1200), _kv("moved", 1100), _kv("built", 900), _kv("hit", 21)],
            }
        },
    },
    "activation": {
        "ttft": [
            {"prefix_tokens": n, "question_tokens": 26, "full_prefill_ms": 0.7 * n, "injected_ms": 90.0}
            for n in (514, 1033, 2068)
        ]
    },
    "foundation": {
        "search": [
            {"memories": 1000, "n": 200, "p50_ms": 46.0, "p95_ms": 62.0, "server_p50_ms": 30.0},
            {"memories": 10000, "n": 200, "p50_ms": 63.0, "p95_ms": 76.0, "server_p50_ms": 41.0},
        ]
    },
    "cubes": {
        "zipf": _zipf(1000),
        "registered": {"cubes": 10000, "zipf": _zipf(10000)},
        "cold": [
            {"memories": 1000, "cold_p50_ms": 163.0, "cold_max_ms": 287.0, "warm_p50_ms": 76.0, "target_ms": "<= 200"},
            {"memories": 10000, "cold_p50_ms": 482.0, "cold_max_ms": 544.0, "warm_p50_ms": 74.0, "target_ms": "<= 500"},
        ],
    },
    "soak": {
        "clients": 8,
        "minutes": [
            {
                "minute": m,
                "requests": 500,
                "errors": 0,
                "p50_ms": 700.0,
                "p99_ms": 2600.0,
                "p99_ms_no_chat": 2400.0,
                "rss_mib": 6900.0 + 30 * m,
            }
            for m in (1, 2, 3)
        ],
    },
}


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    ("draw", "name"),
    [
        (lambda out: plots.ttft_vs_prefix(RESULTS["scheduler"], RESULTS["activation"], out), "ttft_vs_prefix.png"),
        (lambda out: plots.ttft_vs_prefix(None, RESULTS["activation"], out), "ttft_vs_prefix.png"),
        (lambda out: plots.search_latency_vs_cube_size(RESULTS["foundation"], out), "search_latency_vs_cube_size.png"),
        (lambda out: plots.zipf_latency(RESULTS["cubes"], out), "zipf_latency.png"),
        (lambda out: plots.zipf_latency({"zipf": _zipf(1000)}, out), "zipf_latency.png"),
        (lambda out: plots.scheduler_hit_rates(RESULTS["scheduler"], out), "scheduler_hit_rates.png"),
        (lambda out: plots.soak_per_minute(RESULTS["soak"], out), "soak_per_minute.png"),
        (lambda out: plots.cold_activation_vs_cube_size(RESULTS["cubes"], out), "cold_activation_vs_cube_size.png"),
    ],
)
def test_each_figure_writes_a_png(draw: Any, name: str, tmp_path: Path) -> None:
    path = draw(tmp_path / "figures")
    assert path == tmp_path / "figures" / name
    assert _is_png(path)


def test_a_result_without_its_part_raises_for_that_figure_only(tmp_path: Path) -> None:
    with pytest.raises(plots.MissingResult, match="'sweep'"):
        plots.ttft_vs_prefix({"workload": []}, None, tmp_path)
    with pytest.raises(KeyError, match="'zipf'"):
        plots.zipf_latency({"cold": RESULTS["cubes"]["cold"]}, tmp_path)
    with pytest.raises(plots.MissingResult, match="'p50_ms'"):
        plots.search_latency_vs_cube_size({"search": [{"memories": 1000}]}, tmp_path)
    # the cubes result lacks its Zipf part: the cold-activation figure is still drawn
    results = tmp_path / "results"
    results.mkdir()
    (results / "cubes.json").write_text(json.dumps({"cold": RESULTS["cubes"]["cold"]}))
    drawn = plots.plot_all(results, tmp_path / "figures")
    assert [p.name for p in drawn] == ["cold_activation_vs_cube_size.png"]


def test_plot_all_skips_missing_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, figures = tmp_path / "results", tmp_path / "figures"
    results.mkdir()
    for name in ("activation", "foundation"):
        (results / f"{name}.json").write_text(json.dumps(RESULTS[name]))
    drawn = plots.plot_all(results, figures)
    assert sorted(p.name for p in drawn) == ["search_latency_vs_cube_size.png", "ttft_vs_prefix.png"]
    assert all(_is_png(p) for p in drawn)
    out = capsys.readouterr().out
    for skipped in ("zipf_latency.png", "scheduler_hit_rates.png", "soak_per_minute.png"):
        assert f"skipped {skipped}" in out
    assert plots.plot_all(tmp_path / "nothing", figures) == []


def test_after_draws_only_the_figures_of_that_benchmark(tmp_path: Path) -> None:
    results, figures = tmp_path / "results", tmp_path / "figures"
    results.mkdir()
    (results / "activation.json").write_text(json.dumps(RESULTS["activation"]))  # read for the TTFT figure
    drawn = plots.after("scheduler", RESULTS["scheduler"], results, figures)
    assert sorted(p.name for p in drawn) == ["scheduler_hit_rates.png", "ttft_vs_prefix.png"]
    (results / "soak.json").write_text(json.dumps(RESULTS["soak"]))
    assert [p.name for p in plots.after("soak", None, results, figures)] == ["soak_per_minute.png"]
    # a result a figure cannot use is reported, not raised: the benchmark has already written its numbers
    assert plots.after("cubes", {"nothing": 1}, results, figures) == []
