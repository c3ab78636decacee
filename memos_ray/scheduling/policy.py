"""The MemScheduler's rules, as pure functions over what it observes (usage, the caches the Scheduler
knows, the time spent building): tested without Ray; ``actors/memscheduler.py`` applies them and records
each decision with its reason.

- *promotion* (plaintext -> activation): a cube is active while it had a chat within ``active_s``; its
  working set is its hottest memories (heat: uses decayed with half-life ``window_s``) up to
  ``working_set_tokens``; it gets a KV prefix when that prefix is at least the break-even length, and
  building it ahead of need fits the build CPU share.
- *demotion*: a cache unused for ``kv_idle_s`` leaves the workers' memory (the file stays); one unused
  for ``disk_idle_s``, or the least recently used while the disk is over budget, leaves the disk. Never
  one a placed chat is using.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from memos_ray.config import SchedulerConfig
from memos_ray.types import CachePlace, DecisionInput, DecisionKind

CANDIDATES = 256  # ranked memories a cube is offered; it keeps what fits the token budget
BUILD_WINDOW_S = 60.0


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate for budgets (English BPE runs ~4 characters a token; the build reports
    the exact count)."""
    return len(text) // 4 + 2


@dataclass(frozen=True)
class Move:
    """One decision the policy takes, before it is applied and recorded."""

    kind: DecisionKind
    key: str
    reason: str
    inputs: dict[str, DecisionInput]


def _idle_s(cache: CachePlace, now: datetime) -> float:
    return (now - cache.last_used_at).total_seconds() if cache.last_used_at else float("inf")


def demotions(caches: Sequence[CachePlace], on_disk: dict[str, int], now: datetime, cfg: SchedulerConfig) -> list[Move]:
    """Caches to take off the workers and off the disk (``on_disk``: key -> file bytes)."""
    moves: list[Move] = []
    budget = cfg.disk_budget_mb * 1024 * 1024
    disk = sum(on_disk.values())
    by_age = sorted(caches, key=lambda c: _idle_s(c, now), reverse=True)  # longest unused first
    for c in by_age:
        if c.in_use:
            continue
        idle = _idle_s(c, now)
        figures: dict[str, DecisionInput] = {"idle_s": round(idle, 1), "bytes": c.bytes, "tokens": c.tokens}
        if c.workers and idle >= cfg.kv_idle_s:
            moves.append(
                Move(
                    DecisionKind.demote,
                    c.key,
                    f"unused for {idle:.0f} s (window {cfg.kv_idle_s:.0f} s)",
                    {**figures, "workers": len(c.workers)},
                )
            )
        if c.key in on_disk and (idle >= cfg.disk_idle_s or disk > budget):
            why = (
                f"unused for {idle:.0f} s (window {cfg.disk_idle_s:.0f} s)"
                if idle >= cfg.disk_idle_s
                else f"disk over budget ({disk} of {budget} bytes), least recently used"
            )
            moves.append(Move(DecisionKind.evict_disk, c.key, why, {**figures, "disk_bytes": disk}))
            disk -= on_disk[c.key]
    return moves


class BuildBudget:
    """Seconds spent building ahead of need over the last minute, against the share the config allows."""

    def __init__(self, share: float, workers: int) -> None:
        self.allowed_s = share * BUILD_WINDOW_S * workers
        self._spent: deque[tuple[float, float]] = deque()

    def used(self, now: float) -> float:
        while self._spent and self._spent[0][0] < now - BUILD_WINDOW_S:
            self._spent.popleft()
        return sum(s for _, s in self._spent)

    def allows(self, now: float) -> bool:
        return self.used(now) < self.allowed_s

    def spend(self, seconds: float, now: float) -> None:
        self._spent.append((now, seconds))
