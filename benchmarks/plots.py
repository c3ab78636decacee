"""The benchmarks' figures: PNGs drawn from their JSON results (benchmarks/results -> benchmarks/figures).

    .venv/bin/python -m benchmarks.plots            # every figure whose JSON exists; prints the paths

Each figure is one function of the parsed result(s) and an output folder, returning the path written; a
result without what a figure needs raises ``MissingResult`` (a ``KeyError``) for that figure only. Each
benchmark calls ``after(name, result)`` once it has written its JSON, which redraws the figures that use it.
Only reads JSON and draws: nothing here starts Ray.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, files only
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
RESULTS, FIGURES = HERE / "results", HERE / "figures"
SIZE, WIDE, DPI = (7.0, 4.0), (12.0, 4.5), 120
WITH, WITHOUT = "tab:blue", "tab:red"  # with the KV cache / without it, in every figure
CACHED = ("hit", "moved", "loaded")

Result = Mapping[str, Any]


class MissingResult(KeyError):
    """A result lacks what a figure needs (that part of its benchmark did not run)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _get(result: Result, path: str, figure: str) -> Any:
    node: Any = result
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise MissingResult(f"{figure}: the result has no {path!r} (run that part of its benchmark)")
        node = node[part]
    return node


def _rows(result: Result, path: str, figure: str, *fields: str) -> list[Mapping[str, Any]]:
    rows = _get(result, path, figure)
    if not isinstance(rows, list) or not rows:
        raise MissingResult(f"{figure}: {path!r} holds no rows")
    for row in rows:
        for f in fields:
            if f not in row:
                raise MissingResult(f"{figure}: a row of {path!r} has no {f!r}")
    return rows


def _save(fig: Figure, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _style(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.08)  # room for the value labels


def ttft_vs_prefix(scheduler: Result | None, activation: Result | None, out: Path) -> Path:
    """TTFT against prefix length, on a KV hit vs a full prefill: through HTTP (scheduler.json ``sweep``) and
    one model call in process (activation.json ``ttft``), side by side; either may be absent."""
    name = "ttft_vs_prefix.png"
    panels: list[tuple[str, Callable[[Axes], None]]] = []
    missing: list[str] = []
    if scheduler is not None:
        try:
            sweep = _rows(scheduler, "sweep", name, "prefix", "prefix_tokens", "hit_ms", "off_ms")
            panels.append(("A chat through HTTP, median (scheduler.json)", lambda ax: _sweep(ax, sweep)))
        except MissingResult as e:
            missing.append(f"scheduler.json, {e}")
    if activation is not None:
        try:
            ttft = _rows(activation, "ttft", name, "prefix_tokens", "full_prefill_ms", "injected_ms")
            panels.append(("One model call in process, median (activation.json)", lambda ax: _injected(ax, ttft)))
        except MissingResult as e:
            missing.append(f"activation.json, {e}")
    if not panels:
        raise MissingResult("; ".join(missing) or f"{name}: neither scheduler.json nor activation.json")
    for note in missing:
        print(f"  a panel left out: {note}")
    fig, axes = plt.subplots(
        1, len(panels), figsize=WIDE if len(panels) > 1 else SIZE, sharex=True, sharey=True, squeeze=False
    )
    for ax, (title, draw) in zip(axes[0], panels, strict=True):
        draw(ax)
        _style(ax, "prefix length (tokens)", "time to first token (ms)", title)
        ax.legend(fontsize=8, loc="upper left")
    for ax in axes[0]:
        ax.set_xlim(left=0)
    fig.suptitle(
        "Time to first token against prefix length: KV cache hit vs full prefill\n(labels: prefill / hit)", fontsize=11
    )
    fig.tight_layout()
    return _save(fig, out, name)


def _ratio_label(ax: Axes, x: float, off: float, hit: float) -> None:
    ax.annotate(f"{off / hit:.1f}x", (x, off), textcoords="offset points", xytext=(-8, 6), ha="right", fontsize=8)


def _sweep(ax: Axes, rows: Sequence[Mapping[str, Any]]) -> None:
    kinds = list(dict.fromkeys(r["prefix"] for r in rows))
    for kind, (style, marker) in zip(kinds, [("-", "o"), (":", "s"), ("-.", "^"), ("--", "v")], strict=False):
        rs = sorted((r for r in rows if r["prefix"] == kind), key=lambda r: r["prefix_tokens"])
        x = [r["prefix_tokens"] for r in rs]
        ax.plot(x, [r["hit_ms"] for r in rs], style, marker=marker, color=WITH, label=f"{kind}: KV hit")
        ax.plot(x, [r["off_ms"] for r in rs], style, marker=marker, color=WITHOUT, label=f"{kind}: no KV (prefill)")
        _ratio_label(ax, x[-1], rs[-1]["off_ms"], rs[-1]["hit_ms"])


def _injected(ax: Axes, rows: Sequence[Mapping[str, Any]]) -> None:
    rs = sorted(rows, key=lambda r: r["prefix_tokens"])
    x = [r["prefix_tokens"] for r in rs]
    ax.plot(x, [r["injected_ms"] for r in rs], "-o", color=WITH, label="injected KV cache")
    ax.plot(x, [r["full_prefill_ms"] for r in rs], "--o", color=WITHOUT, label="full prefill")
    for r in rs:
        _ratio_label(ax, r["prefix_tokens"], r["full_prefill_ms"], r["injected_ms"])


def search_latency_vs_cube_size(foundation: Result, out: Path) -> Path:
    """Search latency (p50, p95; server-side p50 when present) against the cube's memories (foundation.json
    ``search``: one cube per size, sequential queries through HTTP)."""
    name = "search_latency_vs_cube_size.png"
    rows = sorted(_rows(foundation, "search", name, "memories", "p50_ms"), key=lambda r: r["memories"])
    x = [r["memories"] for r in rows]
    fig, ax = plt.subplots(figsize=SIZE)
    series = [("p50_ms", "p50 (client, HTTP)", "-o"), ("p95_ms", "p95 (client, HTTP)", "-s")]
    series.append(("server_p50_ms", "p50 in the service (took_ms)", "--^"))
    for key, label, style in series:
        if all(key in r for r in rows):
            ys = [r[key] for r in rows]
            ax.plot(x, ys, style, label=label)
            for xi, yi in zip(x, ys, strict=True):
                ax.annotate(f"{yi:.0f}", (xi, yi), textcoords="offset points", xytext=(12, -3), fontsize=8)
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:,}" for v in x])
    ax.minorticks_off()
    ax.set_xlim(min(x) / 2, max(x) * 2)
    n = rows[0].get("n")
    per = f", {n} queries per size" if n else ""
    _style(ax, "cube size (memories, log scale)", "search latency (ms)", f"top_k 10, hybrid, sequential{per}")
    ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Search latency against cube size (foundation.json)")
    fig.tight_layout()
    return _save(fig, out, name)


def zipf_latency(cubes: Result, out: Path) -> Path:
    """Latency under Zipf-distributed cube access vs requests to live (warm) cubes in the same run, per scenario
    (cubes.json ``zipf``: 1,000 cubes; ``registered.zipf``: 10,000 registered cubes, when run)."""
    name = "zipf_latency.png"
    runs = [_get(cubes, "zipf", name)]
    if isinstance(cubes.get("registered"), Mapping) and "zipf" in cubes["registered"]:
        runs.append(cubes["registered"]["zipf"])
    bars = [
        ("zipf_p50_ms", "Zipf p50", "tab:orange", 1.0),
        ("zipf_p95_ms", "Zipf p95", "tab:orange", 0.6),
        ("zipf_p95_2nd_half_ms", "Zipf p95, 2nd half (live set full)", "tab:orange", 0.35),
        ("warm_p50_ms", "warm p50", "tab:green", 1.0),
        ("warm_p95_ms", "warm p95", "tab:green", 0.6),
    ]
    for run in runs:
        for key in ("cubes", "zipf_p50_ms", "zipf_p95_ms", "warm_p50_ms", "warm_p95_ms"):
            if key not in run:
                raise MissingResult(f"{name}: a Zipf run has no {key!r}")
    bars = [b for b in bars if all(b[0] in run for run in runs)]
    fig, ax = plt.subplots(figsize=SIZE)
    width = 0.8 / len(bars)
    for i, (key, label, colour, alpha) in enumerate(bars):
        xs = [g + (i - (len(bars) - 1) / 2) * width for g in range(len(runs))]
        drawn = ax.bar(xs, [run[key] for run in runs], width, label=label, color=colour, alpha=alpha)
        ax.bar_label(drawn, fmt="%.0f", fontsize=7, padding=1)
    labels = []
    for run in runs:
        detail = [
            f"{run[k]:,} {w}" for k, w in (("requests", "requests"), ("distinct_cubes", "distinct cubes")) if k in run
        ]
        if "activations" in run:
            detail.append(f"{run['activations']:,} activations")
        cap = f", live cap {run['live_cap']}" if "live_cap" in run else ""
        labels.append(f"{run['cubes']:,} cubes{cap}\n" + ", ".join(detail))
    ax.set_xticks(range(len(runs)), labels, fontsize=8)
    _style(
        ax, "", "request latency (ms)", "searches and adds (1 in 4) over Zipf-drawn cubes, then over live cubes only"
    )
    ax.set_ylim(top=1.3 * max(run[b[0]] for run in runs for b in bars))  # the legend above the bars
    ax.legend(fontsize=8, ncols=3, loc="upper center")
    fig.suptitle("Latency under Zipf cube access vs warm cubes (cubes.json)")
    fig.tight_layout()
    return _save(fig, out, name)


def _chat_outcome(kv: Mapping[str, Any], base: int) -> str:
    status = kv.get("status", "off")
    if status in CACHED:
        return f"{status}, with memories" if kv.get("tokens", 0) > base else "cache of the system turn only"
    return "built (full prefill)" if status == "built" else "no cache"


OUTCOMES = {
    "hit, with memories": "tab:blue",
    "moved, with memories": "tab:cyan",
    "loaded, with memories": "tab:purple",
    "built (full prefill)": "tab:orange",
    "cache of the system turn only": "tab:gray",
    "no cache": "tab:red",
}


def scheduler_hit_rates(scheduler: Result, out: Path) -> Path:
    """With the scheduler's policy off vs on, per prompt layout (scheduler.json ``workload``): the share of chats
    from a cached prefix and of prompt tokens served from a cache; and, from ``chats`` when present, what each
    chat started from (hit, moved, loaded, built)."""
    name = "scheduler_hit_rates.png"
    rows = _rows(scheduler, "workload", name, "run", "from_cached_prefix", "prompt_tokens_from_cache")
    chats = scheduler.get("chats") if isinstance(scheduler.get("chats"), Mapping) else None
    fig, axes = plt.subplots(1, 2 if chats else 1, figsize=WIDE if chats else SIZE, squeeze=False)
    ax = axes[0][0]
    runs = [r["run"].replace(" / ", "\n") for r in rows]
    for i, (key, label, colour) in enumerate(
        [
            ("from_cached_prefix", "chats from a cached prefix", WITH),
            ("prompt_tokens_from_cache", "prompt tokens from a cache", "tab:olive"),
        ]
    ):
        drawn = ax.bar(
            [g + (i - 0.5) * 0.38 for g in range(len(rows))],
            [100 * r[key] for r in rows],
            0.38,
            label=label,
            color=colour,
        )
        ax.bar_label(drawn, fmt="%.0f%%", fontsize=8, padding=1)
    ax.set_xticks(range(len(rows)), runs, fontsize=8)
    _style(ax, "", "share (%)", "rates per run (layout / policy)")
    ax.set_ylim(0, 110)
    ax.legend(fontsize=8, loc="upper left")
    if chats:
        _outcomes(axes[0][1], chats)
    n = rows[0].get("chats")
    fig.suptitle(f"MemScheduler: KV cache use with its policy off vs on{f' ({n} chats a run)' if n else ''}")
    fig.tight_layout()
    return _save(fig, out, name)


def _outcomes(ax: Axes, chats: Mapping[str, Any]) -> None:
    labels, shares = [], []
    for layout, by_policy in chats.items():
        off = [r["kv"] for r in by_policy.get("off", []) if r.get("kv", {}).get("status") in CACHED]
        base = min((kv.get("tokens", 0) for kv in off), default=0)  # the system turn's cache, the only one off
        for policy, replies in by_policy.items():
            counts = Counter(_chat_outcome(r.get("kv", {}), base) for r in replies)
            labels.append(f"{layout} / policy {policy}")
            shares.append({k: 100 * v / max(1, len(replies)) for k, v in counts.items()})
    left = [0.0] * len(labels)
    for outcome, colour in OUTCOMES.items():
        widths = [s.get(outcome, 0.0) for s in shares]
        if any(widths):
            drawn = ax.barh(labels, widths, left=left, color=colour, label=outcome)
            ax.bar_label(drawn, labels=[f"{w:.0f}%" if w >= 4 else "" for w in widths], label_type="center", fontsize=8)
            left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of chats (%)")
    ax.set_title("what each chat started from (the cache's status)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=3)
    ax.tick_params(axis="y", labelsize=8)


def soak_per_minute(soak: Result, out: Path) -> Path:
    """Request latency (p50, p99, p99 without chats) and the actors' summed RSS per minute (soak.json)."""
    name = "soak_per_minute.png"
    rows = _rows(soak, "minutes", name, "minute", "p50_ms", "p99_ms", "rss_mib")
    x = [r["minute"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.0, 5.5), sharex=True, height_ratios=[3, 2])
    top.plot(x, [r["p50_ms"] for r in rows], "-o", label="p50")
    top.plot(x, [r["p99_ms"] for r in rows], "-s", label="p99")
    if all("p99_ms_no_chat" in r for r in rows):
        top.plot(x, [r["p99_ms_no_chat"] for r in rows], "--s", label="p99 without chats")
    errors = sum(r.get("errors", 0) for r in rows)
    requests = sum(r.get("requests", 0) for r in rows)
    clients = f"{soak['clients']} clients, " if "clients" in soak else ""
    _style(top, "", "request latency (ms)", f"{clients}{requests:,} requests, {errors} errors")
    top.legend(fontsize=8, ncols=3, loc="lower right")
    rss = [r["rss_mib"] / 1024 for r in rows]
    bottom.plot(x, rss, "-o", color="tab:purple")
    _style(bottom, "minute", "RSS of all actors (GiB)", f"summed RSS: {rss[0]:.2f} -> {rss[-1]:.2f} GiB")
    bottom.set_ylim(bottom=min(rss) * 0.95, top=max(rss) * 1.03)
    bottom.set_xticks(x)
    fig.suptitle("Soak: latency and memory per minute (soak.json)")
    fig.tight_layout()
    return _save(fig, out, name)


def cold_activation_vs_cube_size(cubes: Result, out: Path) -> Path:
    """The first search of a passivated cube (cold, p50 and max) vs the search after it (warm), per cube size,
    with the issue's targets (cubes.json ``cold``)."""
    name = "cold_activation_vs_cube_size.png"
    rows = sorted(_rows(cubes, "cold", name, "memories", "cold_p50_ms", "warm_p50_ms"), key=lambda r: r["memories"])
    x = [r["memories"] for r in rows]
    fig, ax = plt.subplots(figsize=SIZE)
    for key, label, style in [
        ("cold_p50_ms", "cold p50", "-o"),
        ("cold_max_ms", "cold max", ":o"),
        ("warm_p50_ms", "warm p50", "-s"),
    ]:
        if all(key in r for r in rows):
            ys = [r[key] for r in rows]
            ax.plot(x, ys, style, label=label)
            for xi, yi in zip(x, ys, strict=True):
                ax.annotate(f"{yi:.0f}", (xi, yi), textcoords="offset points", xytext=(12, -3), fontsize=8)
    targets = [(r["memories"], re.search(r"\d+(\.\d+)?", str(r.get("target_ms", "")))) for r in rows]
    if any(m for _, m in targets):
        tx, ty = zip(*[(xi, float(m.group())) for xi, m in targets if m], strict=True)
        ax.plot(tx, ty, "k_", markersize=18, markeredgewidth=2, linestyle="none", label="target for cold p50")
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:,}" for v in x])
    ax.minorticks_off()
    ax.set_xlim(min(x) / 2, max(x) * 2)
    _style(
        ax,
        "cube size (memories, log scale)",
        "search latency through HTTP (ms)",
        "first search after passivation vs the one after it",
    )
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Cold activation against cube size (cubes.json)")
    fig.tight_layout()
    return _save(fig, out, name)


@dataclass(frozen=True)
class Spec:
    """A figure: the results it reads (any present will do when ``any_of``) and how it is drawn."""

    name: str
    sources: tuple[str, ...]
    draw: Callable[[Mapping[str, Result], Path], Path]
    any_of: bool = False


SPECS = [
    Spec(
        "ttft_vs_prefix.png",
        ("scheduler", "activation"),
        lambda r, o: ttft_vs_prefix(r.get("scheduler"), r.get("activation"), o),
        any_of=True,
    ),
    Spec(
        "search_latency_vs_cube_size.png", ("foundation",), lambda r, o: search_latency_vs_cube_size(r["foundation"], o)
    ),
    Spec("zipf_latency.png", ("cubes",), lambda r, o: zipf_latency(r["cubes"], o)),
    Spec("scheduler_hit_rates.png", ("scheduler",), lambda r, o: scheduler_hit_rates(r["scheduler"], o)),
    Spec("soak_per_minute.png", ("soak",), lambda r, o: soak_per_minute(r["soak"], o)),
    Spec("cold_activation_vs_cube_size.png", ("cubes",), lambda r, o: cold_activation_vs_cube_size(r["cubes"], o)),
]


def _load(results_dir: Path, names: Sequence[str]) -> dict[str, Result]:
    return {
        n: json.loads((results_dir / f"{n}.json").read_text()) for n in names if (results_dir / f"{n}.json").is_file()
    }


def _draw(specs: Sequence[Spec], results: Mapping[str, Result], figures_dir: Path) -> list[Path]:
    paths = []
    for spec in specs:
        have = [s for s in spec.sources if s in results]
        if not have or (not spec.any_of and len(have) < len(spec.sources)):
            absent = ", ".join(f"{s}.json" for s in spec.sources if s not in results)
            print(f"skipped {spec.name}: no {absent}")
            continue
        try:
            paths.append(spec.draw(results, figures_dir))
        except MissingResult as e:
            print(f"skipped {spec.name}: {e}")
    return paths


def plot_all(results_dir: Path = RESULTS, figures_dir: Path = FIGURES) -> list[Path]:
    """Every figure whose JSON exists in ``results_dir``, drawn into ``figures_dir``; the others skipped."""
    results = _load(results_dir, sorted({s for spec in SPECS for s in spec.sources}))
    return _draw(SPECS, results, figures_dir)


def after(
    name: str, result: Result | None = None, results_dir: Path = RESULTS, figures_dir: Path = FIGURES
) -> list[Path]:
    """What a benchmark calls once it has written its JSON: the figures that read ``name`` (its ``result``, or its
    JSON when None), the other results they read taken from ``results_dir``. A figure that fails is reported, not
    raised: the benchmark's numbers are already written, and ``python -m benchmarks.plots`` draws it again."""
    specs = [s for s in SPECS if name in s.sources]
    results = _load(results_dir, sorted({s for spec in specs for s in spec.sources} - {name}))
    if result is not None:  # as plot_all will read it back
        results[name] = json.loads(json.dumps(result, default=str))
    else:
        results.update(_load(results_dir, [name]))
    paths = []
    for spec in specs:
        try:
            paths += _draw([spec], results, figures_dir)
        except Exception as e:  # a plotting problem must not fail a benchmark that has finished measuring
            print(f"{spec.name} not drawn: {e!r} (python -m benchmarks.plots draws it again)")
    for path in paths:
        print(f"figure {path}")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--figures", type=Path, default=FIGURES)
    args = parser.parse_args()
    for path in plot_all(args.results, args.figures):
        print(path)


if __name__ == "__main__":
    main()
