"""Soak: mixed traffic from 8 clients for 10 minutes on the embedded defaults.

Each client owns one cube, filled with ``KEEP`` memories before the clock starts, and in a loop adds
memories (sometimes a batch), searches, reads and lists, edits one; past ``KEEP`` memories it purges its
oldest, so the data stays the same size from the first minute on and what the processes hold is a steady
state, not a backlog. One client also chats every ``CHAT_EVERY_S``. Every request must
answer 2xx (an error is counted and printed). Each minute: the requests, errors, p50/p99 latency, and the
RSS of every memos-ray actor process (by Ray's actor table). The RSS is compared between the end of the
warm-up minute and the last minute.

    make bench-soak                  # 10 minutes
    python -m benchmarks.soak --minutes 2
"""

from __future__ import annotations

import argparse
import random
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import httpx

from benchmarks import plots
from benchmarks.common import corpus, pct, print_table, questions, settle, stack, write_json

CLIENTS = 8
KEEP = 200  # memories a client's cube holds at most: older ones are purged
CHAT_EVERY_S = 20.0
WARMUP_MIN = 2  # the model worker loads and calibrates in the background during the first


class Soaker(threading.Thread):
    def __init__(self, url: str, key: str, cube: str, texts: list[str], asks: list[str], chats: bool) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        self.cube, self.texts, self.asks, self.chats = cube, texts, asks, chats
        self.stop = threading.Event()
        self.samples: list[tuple[float, str, float, int]] = []  # (when, op, seconds, status)
        self.errors: list[str] = []
        self.held: list[str] = []
        self.rng = random.Random(cube)

    def fill(self) -> None:
        for start in range(0, KEEP, 50):
            items = [{"text": self.texts[(start + k) % len(self.texts)]} for k in range(50)]
            r = self.http.post(f"/v1/cubes/{self.cube}/memories/batch", json={"items": items})
            r.raise_for_status()
            self.held.extend(i["memory_id"] for i in r.json()["items"])

    def _do(self, op: str, method: str, path: str, **kw: Any) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            self.samples.append((time.time(), op, time.perf_counter() - started, 0))
            self.errors.append(f"{op}: {exc!r}")
            return None
        self.samples.append((time.time(), op, time.perf_counter() - started, r.status_code))
        if r.status_code >= 300:
            self.errors.append(f"{op} {r.status_code}: {r.text[:200]}")
            return None
        return r

    def run(self) -> None:
        base = f"/v1/cubes/{self.cube}"
        last_chat = time.monotonic()
        n = 0
        while not self.stop.is_set():
            n += 1
            roll = self.rng.random()
            text = self.texts[(KEEP + n) % len(self.texts)]  # after the ones the fill used
            if roll < 0.25:
                r = self._do("add", "POST", f"{base}/memories", json={"text": text}, headers=_key())
                if r is not None:
                    self.held.append(r.json()["id"])
            elif roll < 0.30:
                items = [{"text": self.texts[(KEEP + n + 1 + i) % len(self.texts)]} for i in range(8)]
                r = self._do("batch", "POST", f"{base}/memories/batch", json={"items": items}, headers=_key())
                if r is not None:
                    self.held.extend(i["memory_id"] for i in r.json()["items"])
            elif roll < 0.65:
                self._do("search", "POST", f"{base}/search", json={"query": self.rng.choice(self.asks), "top_k": 5})
            elif roll < 0.80 and self.held:
                self._do("get", "GET", f"{base}/memories/{self.rng.choice(self.held)}")
            elif roll < 0.90:
                self._do("list", "GET", f"{base}/memories", params={"limit": 20})
            elif self.held:
                memory_id = self.rng.choice(self.held)
                self._do("edit", "PATCH", f"{base}/memories/{memory_id}", json={"tags": [f"t{n % 5}"]})
            while len(self.held) > KEEP:
                self._do("purge", "POST", f"{base}/memories/{self.held.pop(0)}/purge")
            if self.chats and time.monotonic() - last_chat > CHAT_EVERY_S:
                last_chat = time.monotonic()
                body = {"cube_ids": [self.cube], "messages": [{"role": "user", "content": "What do I like?"}]}
                self._do("chat", "POST", "/v1/chat", json={**body, "max_tokens": 16})


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def _rss_by_actor() -> dict[str, float]:
    """MiB of resident memory per live memos-ray actor (named ones by name, cube actors by actor id)."""
    import psutil
    import ray

    out: dict[str, float] = {}
    for actor_id, actor in ray._private.state.actors().items():  # type: ignore[attr-defined]
        if actor.get("State") != "ALIVE" or not actor.get("Pid"):
            continue
        name = actor.get("Name") or ""
        cls = actor.get("ActorClassName", "")
        if not name and cls == "CubeHost":
            name = f"cube:{actor_id[:8]}"
        if not (name.startswith(("memos", "cube:")) or "Ingress" in cls):
            continue
        try:
            out[name or cls] = psutil.Process(actor["Pid"]).memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            continue
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=int, default=10)
    args = parser.parse_args()
    texts, asks = corpus(40_000), questions()  # 5,000 per client: no text comes back within a run
    with stack(port=8771, max_live_cubes=24) as st:
        settle(st)
        for i in range(CLIENTS):
            st.http.post("/v1/cubes", json={"id": f"soak-{i}"}).raise_for_status()
        soakers = [Soaker(st.url, st.key, f"soak-{i}", texts[i::CLIENTS], asks, chats=i == 0) for i in range(CLIENTS)]
        for s in soakers:
            s.fill()
        started = time.time()
        for s in soakers:
            s.start()
        minutes: list[dict[str, Any]] = []
        rss: list[dict[str, float]] = []
        for minute in range(1, args.minutes + 1):
            time.sleep(max(0.0, started + 60 * minute - time.time()))
            rss.append(_rss_by_actor())
            lo, hi = started + 60 * (minute - 1), started + 60 * minute
            window = [x for s in soakers for x in s.samples if lo <= x[0] < hi]
            took = [x[2] * 1000 for x in window]
            row = {
                "minute": minute,
                "requests": len(window),
                "errors": sum(1 for x in window if not 200 <= x[3] < 300),
                "p50_ms": round(pct(took, 50), 1),
                "p99_ms": round(pct(took, 99), 1),
                "p99_ms_no_chat": round(pct([x[2] * 1000 for x in window if x[1] != "chat"], 99), 1),
                "rss_mib": round(sum(rss[-1].values()), 1),
            }
            minutes.append(row)
            print(row, flush=True)
        for s in soakers:
            s.stop.set()
        for s in soakers:
            s.join(timeout=120)
        by_op: dict[str, list[float]] = defaultdict(list)
        for s in soakers:
            for _, op, took_s, _ in s.samples:
                by_op[op].append(took_s * 1000)
        ops = [
            {"op": op, "n": len(v), "p50_ms": round(pct(v, 50), 1), "p99_ms": round(pct(v, 99), 1)}
            for op, v in sorted(by_op.items())
        ]
        base, end = rss[min(WARMUP_MIN, len(rss)) - 1], rss[-1]
        growth = [
            {
                "actor": name,
                "after_warmup_mib": round(base[name], 1),
                "end_mib": round(end[name], 1),
                "change_pct": round(100 * (end[name] / base[name] - 1), 1),
            }
            for name in sorted(set(base) & set(end))
        ]
        errors = [e for s in soakers for e in s.errors]
    print_table("per minute", minutes)
    print_table("per operation", ops)
    print_table(f"RSS per actor: end of minute {WARMUP_MIN} (warm-up) vs minute {len(rss)}", growth)
    worst = max(growth, key=lambda g: abs(g["change_pct"]))
    print(f"\nerrors: {len(errors)}; largest RSS change: {worst['actor']} {worst['change_pct']:+.1f}%")
    for e in errors[:10]:
        print("  ", e)
    write_json(
        "soak",
        {
            "clients": CLIENTS,
            "minutes": minutes,
            "ops": ops,
            "rss": growth,
            "rss_per_minute": rss,
            "errors": errors[:100],
        },
    )
    plots.after("soak")


if __name__ == "__main__":
    main()
