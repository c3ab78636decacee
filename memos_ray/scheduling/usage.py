"""Usage statistics, kept beside the memories and never in a version: per memory its retrievals, its uses
in a chat's prompt or cached prefix, when it was last used, by which agents, and its *heat* (retrievals
decayed with a half-life, so "most used over a window" is one number that needs no event log; being carried
in a prompt or a prefix adds none, or a working set would keep itself hot forever); per cube its chats, its
working set and that set's churn.

One SQLite file (or tables in the PostgreSQL database ``storage.database_uri`` names) owned by the
MemScheduler actor: events arrive in batches off the request path and are
written in one transaction each, so usage survives passivation, the actor's restart and the machine's.
Everything is also held in memory, where the policy reads it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from memos_ray.database import Schema, open_database, upsert
from memos_ray.types import CubeUsage, MemoryUsage, UsageEvent

AGENTS_KEPT = 8

SCHEMA = Schema("""
CREATE TABLE IF NOT EXISTS memory_usage (
    cube_id TEXT NOT NULL, memory_id TEXT NOT NULL,
    retrievals INTEGER NOT NULL, prompt_uses INTEGER NOT NULL, prefix_uses INTEGER NOT NULL,
    last_used REAL, heat REAL NOT NULL, heat_at REAL NOT NULL, agents TEXT NOT NULL,
    PRIMARY KEY (cube_id, memory_id));
CREATE TABLE IF NOT EXISTS cube_usage (
    cube_id TEXT PRIMARY KEY, chats INTEGER NOT NULL, last_chat REAL,
    working_set TEXT NOT NULL, churn INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS agent_usage (agent TEXT PRIMARY KEY, last_chat REAL NOT NULL);
""")
_MEMORY_COLUMNS = [
    "cube_id", "memory_id", "retrievals", "prompt_uses", "prefix_uses", "last_used", "heat", "heat_at", "agents"
]  # fmt: skip
_CUBE_COLUMNS = ["cube_id", "chats", "last_chat", "working_set", "churn"]


def decayed(value: float, since: float, now: float, half_life_s: float) -> float:
    return value * math.exp2(-max(0.0, now - since) / half_life_s)


def _when(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass
class MemoryStats:
    retrievals: int = 0
    prompt_uses: int = 0
    prefix_uses: int = 0
    last_used: float | None = None
    heat: float = 0.0
    heat_at: float = 0.0
    agents: list[str] = field(default_factory=list)

    def heat_now(self, now: float, half_life_s: float) -> float:
        return decayed(self.heat, self.heat_at, now, half_life_s)


@dataclass
class CubeStats:
    chats: int = 0
    last_chat: float | None = None
    working_set: list[str] = field(default_factory=list)
    churn: int = 0
    memories: dict[str, MemoryStats] = field(default_factory=dict)


class UsageStore:
    def __init__(self, path: Path, half_life_s: float, uri: str | None = None) -> None:
        """``path``: the SQLite file; ``uri``: a PostgreSQL database instead."""
        self.half_life_s = half_life_s
        # statistics: a power cut may lose the last batch, never the store
        self.db = open_database(path, SCHEMA, uri, durable=False)
        self.cubes: dict[str, CubeStats] = {}
        self.agents: dict[str, float] = {}
        self._load()

    def _load(self) -> None:
        for cube_id, chats, last_chat, ws, churn in self.db.execute("SELECT * FROM cube_usage"):
            self.cubes[cube_id] = CubeStats(chats, last_chat, json.loads(ws), churn)
        for cube_id, memory_id, r, p, x, last, heat, heat_at, agents in self.db.execute("SELECT * FROM memory_usage"):
            cube = self.cubes.setdefault(cube_id, CubeStats())
            cube.memories[memory_id] = MemoryStats(r, p, x, last, heat, heat_at, json.loads(agents))
        self.agents = dict(self.db.execute("SELECT agent, last_chat FROM agent_usage"))

    # ------------------------------------------------------------ writes

    def record(self, events: Sequence[UsageEvent]) -> None:
        """Apply a batch and write what it touched in one transaction."""
        touched: set[tuple[str, str]] = set()
        cubes: set[str] = set()
        agents: set[str] = set()
        for e in events:
            at = e.at.timestamp()
            cube = self.cubes.setdefault(e.cube_id, CubeStats())
            if e.chat:
                cube.chats += 1
                cube.last_chat = max(cube.last_chat or at, at)
                self.agents[e.agent] = max(self.agents.get(e.agent, at), at)
                cubes.add(e.cube_id)
                agents.add(e.agent)
            for memory_id in dict.fromkeys([*e.retrieved, *e.prompt, *e.prefix]):
                m = cube.memories.setdefault(memory_id, MemoryStats(heat_at=at))
                m.retrievals += memory_id in e.retrieved
                m.prompt_uses += memory_id in e.prompt
                m.prefix_uses += memory_id in e.prefix
                m.last_used = max(m.last_used or at, at)
                asked = memory_id in e.retrieved  # asked for, not merely carried
                m.heat = decayed(m.heat, m.heat_at, at, self.half_life_s) + (1.0 if asked else 0.0)
                m.heat_at = max(m.heat_at, at)
                m.agents = [e.agent, *(a for a in m.agents if a != e.agent)][:AGENTS_KEPT]
                touched.add((e.cube_id, memory_id))
        self._write(touched, cubes, agents)

    def set_working_set(self, cube_id: str, memory_ids: list[str]) -> int:
        """The policy picked a new working set; returns how many memories entered or left it (its churn)."""
        cube = self.cubes.setdefault(cube_id, CubeStats())
        churn = len(set(cube.working_set) ^ set(memory_ids))
        cube.working_set = list(memory_ids)
        cube.churn += churn
        self._write(set(), {cube_id}, set())
        return churn

    def forget(self, cube_id: str, memory_ids: Iterable[str] | None = None) -> None:
        """A purged memory (or a deleted cube, with None) leaves no usage behind."""
        with self.db.transaction():
            if memory_ids is None:
                self.cubes.pop(cube_id, None)
                self.db.execute("DELETE FROM memory_usage WHERE cube_id = ?", (cube_id,))
                self.db.execute("DELETE FROM cube_usage WHERE cube_id = ?", (cube_id,))
                return
            ids = list(memory_ids)
            cube = self.cubes.get(cube_id)
            if cube is not None:
                for memory_id in ids:
                    cube.memories.pop(memory_id, None)
                cube.working_set = [m for m in cube.working_set if m not in ids]
                self._write_cubes([cube_id])
            self.db.executemany(
                "DELETE FROM memory_usage WHERE cube_id = ? AND memory_id = ?", [(cube_id, m) for m in ids]
            )

    def _write(self, memories: set[tuple[str, str]], cubes: set[str], agents: set[str]) -> None:
        if not (memories or cubes or agents):
            return
        with self.db.transaction():
            rows = []
            for cube_id, memory_id in memories:
                m = self.cubes[cube_id].memories[memory_id]
                rows.append(
                    (
                        cube_id,
                        memory_id,
                        m.retrievals,
                        m.prompt_uses,
                        m.prefix_uses,
                        m.last_used,
                        m.heat,
                        m.heat_at,
                        json.dumps(m.agents),
                    )
                )
            self.db.executemany(upsert("memory_usage", _MEMORY_COLUMNS, ["cube_id", "memory_id"]), rows)
            self._write_cubes(cubes)
            self.db.executemany(
                upsert("agent_usage", ["agent", "last_chat"], ["agent"]), [(a, self.agents[a]) for a in agents]
            )

    def _write_cubes(self, cube_ids: Iterable[str]) -> None:
        self.db.executemany(
            upsert("cube_usage", _CUBE_COLUMNS, ["cube_id"]),
            [
                (c, s.chats, s.last_chat, json.dumps(s.working_set), s.churn)
                for c in cube_ids
                if (s := self.cubes.get(c)) is not None
            ],
        )

    # ------------------------------------------------------------ reads

    def ranked(self, cube_id: str, now: float | None = None, min_heat: float = 0.0) -> list[tuple[str, float]]:
        """The cube's memories by heat, hottest first (ties: most recently used first)."""
        now = time.time() if now is None else now
        cube = self.cubes.get(cube_id)
        if cube is None:
            return []
        scored = [(mid, m.heat_now(now, self.half_life_s), m.last_used or 0.0) for mid, m in cube.memories.items()]
        scored.sort(key=lambda s: (s[1], s[2]), reverse=True)
        return [(mid, heat) for mid, heat, _ in scored if heat >= min_heat]

    def last_used(self, cube_id: str) -> dict[str, float]:
        """Each used memory's last use (epoch seconds): what archiving goes by."""
        cube = self.cubes.get(cube_id)
        if cube is None:
            return {}
        return {m: s.last_used for m, s in cube.memories.items() if s.last_used is not None}

    def active_cubes(self, since: float) -> list[str]:
        """Cubes with a chat at or after ``since``, most recent first."""
        active = [(c, s.last_chat) for c, s in self.cubes.items() if s.last_chat is not None and s.last_chat >= since]
        return [c for c, _ in sorted(active, key=lambda a: a[1], reverse=True)]

    def last_chat_of(self, agent: str) -> float | None:
        return self.agents.get(agent)

    def cube(self, cube_id: str, limit: int = 100, now: float | None = None) -> CubeUsage:
        now = time.time() if now is None else now
        stats = self.cubes.get(cube_id, CubeStats())
        memories = [
            MemoryUsage(
                memory_id=mid,
                retrievals=m.retrievals,
                prompt_uses=m.prompt_uses,
                prefix_uses=m.prefix_uses,
                last_used_at=_when(m.last_used),
                agents=m.agents,
                heat=round(m.heat_now(now, self.half_life_s), 4),
            )
            for mid, m in stats.memories.items()
        ]
        memories.sort(key=lambda u: (u.heat, u.last_used_at or datetime.min.replace(tzinfo=UTC)), reverse=True)
        return CubeUsage(
            cube_id=cube_id,
            chats=stats.chats,
            last_chat_at=_when(stats.last_chat),
            working_set=stats.working_set,
            churn=stats.churn,
            memories=memories[:limit],
        )

    def close(self) -> None:
        self.db.close()
