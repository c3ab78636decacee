"""Run by test_node_loss.py in its own process: a worker node is lost under load, and nothing is lost.

A 3-node ``ray.cluster_utils.Cluster`` on this machine: the head (the Directory, Serve) and two worker
nodes that carry the cube actors (custom resource ``memos_cubes``) and one model worker each (``node_a``,
``node_b``). Cube rows are on the Milvus server and every store is in PostgreSQL (both URIs come from the
test), so no actor needs a node's disk. Four HTTP clients add memories (each add under an Idempotency-Key,
retried with the same key until it is acknowledged) and search, while the worker node holding more of the
cubes is removed, with a chat pinned to its model worker in flight. Prints one JSON line: every acknowledged
write read back or not, the outage of each cube that lived on the lost node, what the chat in flight and the
next one answered.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import ray
from ray.cluster_utils import Cluster

from memos_ray.config import (
    DirectoryConfig,
    LLMConfig,
    MemosConfig,
    ServeConfig,
    StorageConfig,
    WorkersConfig,
)

CLIENTS, CUBES_PER_CLIENT = 4, 1  # one cube per client: each cube's outage is seen on its own
BEFORE_S, AFTER_S = 8.0, 20.0  # traffic before a node goes, and after


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client(threading.Thread):
    """Adds memories to its cubes, in turn, and searches them. An add that fails is retried under its key on
    the cube's next turn (the client goes on with its other cube meanwhile), until acknowledged."""

    def __init__(self, url: str, key: str, cubes: list[str], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        self.cubes, self.stop = cubes, stop
        self.acked: dict[str, list[tuple[str, float]]] = {c: [] for c in cubes}  # cube -> (memory id, when)
        self.pending: dict[str, tuple[str, str]] = {}  # cube -> (idempotency key, text) of an unacknowledged add
        self.failures: dict[str, int] = {}  # status (or exception name) -> count, of attempts later retried

    def _count(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1

    def add(self, cube: str, n: int) -> bool:
        key, text = self.pending.pop(cube, None) or (uuid.uuid4().hex, f"Note {n} of {cube}: the courier comes.")
        try:
            r = self.http.post(f"/v1/cubes/{cube}/memories", json={"text": text}, headers={"Idempotency-Key": key})
        except httpx.HTTPError as exc:
            self._count(type(exc).__name__)
        else:
            if r.status_code in (200, 201):
                self.acked[cube].append((r.json()["id"], time.time()))
                return True
            self._count(str(r.status_code))
        self.pending[cube] = (key, text)
        time.sleep(0.1)
        return False

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            cube = self.cubes[n % len(self.cubes)]
            if self.add(cube, n) and n % 3 == 0:
                try:
                    self.http.post(f"/v1/cubes/{cube}/search", json={"query": "when does the courier come?"})
                except httpx.HTTPError:
                    self._count("search")
            n += 1
        deadline = time.monotonic() + 60  # what is still unacknowledged: until it is, or a minute
        while self.pending and time.monotonic() < deadline:
            for cube in list(self.pending):
                self.add(cube, n)


def tally(clients: list[Client], admin: httpx.Client) -> dict[str, Any]:
    """What the clients saw: writes acknowledged, those not read back afterwards, those never acknowledged,
    and the failed attempts (retried) by status."""
    missing = [
        f"{cube}/{memory_id}"
        for c in clients
        for cube, acks in c.acked.items()
        for memory_id, _ in acks
        if admin.get(f"/v1/cubes/{cube}/memories/{memory_id}").status_code != 200
    ]
    failures: dict[str, int] = {}
    for c in clients:
        for k, v in c.failures.items():
            failures[k] = failures.get(k, 0) + v
    return {
        "acked": sum(len(a) for c in clients for a in c.acked.values()),
        "missing": missing,
        "unacknowledged": [f"{cube}:{t}" for c in clients for cube, (_, t) in c.pending.items()],
        "retried_failures": failures,
    }


def _node_of_cubes(url: str, key: str, cubes: list[str], namespace: str) -> dict[str, str]:
    """Which node each cube's actor runs on (asked of the Directory and Ray's actor table)."""
    from actors.directory import DIRECTORY_NAME
    from memos_ray.types import Role

    directory = ray.get_actor(DIRECTORY_NAME, namespace=namespace)
    table = ray._private.state.actors()  # type: ignore[attr-defined]
    where = {}
    for cube in cubes:
        activation = ray.get(directory.activate.remote(cube, None, Role.read))
        where[cube] = table.get(activation.handle._actor_id.hex(), {}).get("Address", {}).get("NodeID", "")
    return where


def _chat(url: str, key: str, body: dict[str, Any], out: dict[str, Any]) -> None:
    started = time.monotonic()
    try:
        r = httpx.post(f"{url}/v1/chat", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=180)
        out.update(status=r.status_code, error=r.json().get("error") if r.status_code >= 400 else None)
    except httpx.HTTPError as exc:
        out.update(status=None, error=repr(exc))
    out["s"] = round(time.monotonic() - started, 2)


def main(models: Path, milvus_uri: str, database_uri: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    node_a = cluster.add_node(num_cpus=1, resources={"memos_cubes": 100, "node_a": 1})
    node_b = cluster.add_node(num_cpus=1, resources={"memos_cubes": 100, "node_b": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="memos_nodeloss", log_to_driver=False)
    from ray import serve

    from actors.runtime import shutdown_runtime
    from serve.app import start

    try:
        with tempfile.TemporaryDirectory() as data:
            config = MemosConfig(
                namespace="memos_nodeloss",
                storage=StorageConfig(data_dir=Path(data), milvus_uri=milvus_uri, database_uri=database_uri),
                directory=DirectoryConfig(
                    max_live_cubes=16, warm_actors=2, spare_actors=1, cube_resources={"memos_cubes": 0.01}
                ),
                llm=LLMConfig(dtype="float32", cache_dir=models),
                workers=WorkersConfig(count=2, num_cpus=0.25, resources=[{"node_a": 0.5}, {"node_b": 0.5}]),
                serve=ServeConfig(port=_free_port()),
            )
            # one HTTP proxy, on the head: the nodes share this machine's ports
            serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": config.serve.port})
            url = start(config)
            key = (Path(data) / "admin.key").read_text().strip()
            admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
            cubes = [f"nl-{i}" for i in range(CLIENTS * CUBES_PER_CLIENT)]
            for cube in cubes:
                assert admin.post("/v1/cubes", json={"id": cube}).status_code == 201
            warm = {"cube_ids": [cubes[0]], "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
            for w in (0, 1):  # both model workers loaded before the clock starts
                r = admin.post("/v1/chat", json={**warm, "worker": w}, timeout=300)
                assert r.status_code == 200, r.text

            stop = threading.Event()
            clients = [Client(url, key, cubes[i::CLIENTS], stop) for i in range(CLIENTS)]
            for c in clients:
                c.start()
            time.sleep(BEFORE_S)
            where = _node_of_cubes(url, key, cubes, config.namespace)
            # the node that holds more cubes goes (Ray packs small actors: often all on one), with its worker
            counts = {n.node_id: sum(1 for v in where.values() if v == n.node_id) for n in (node_a, node_b)}
            lost, lost_worker = (node_a, 0) if counts[node_a.node_id] >= counts[node_b.node_id] else (node_b, 1)
            on_lost = sorted(c for c, n in where.items() if n == lost.node_id)

            in_flight: dict[str, Any] = {}
            long_chat = {
                **warm,
                "worker": lost_worker,
                "max_tokens": 256,
                "messages": [{"role": "user", "content": "Tell a story."}],
            }
            chat = threading.Thread(target=_chat, args=(url, key, long_chat, in_flight))
            chat.start()
            time.sleep(1.5)  # the chat is decoding on the lost node's worker
            removed_at = time.time()
            cluster.remove_node(lost)
            chat.join(timeout=200)
            time.sleep(AFTER_S)
            stop.set()
            for c in clients:
                c.join(timeout=90)

            next_chat: dict[str, Any] = {}
            _chat(url, key, {**warm, "max_tokens": 8}, next_chat)

            outage = {}
            for c in clients:
                for cube, acks in c.acked.items():
                    if cube in on_lost:
                        after = [t for _, t in acks if t > removed_at]
                        outage[cube] = round(after[0] - removed_at, 2) if after else None
            print(
                json.dumps(
                    {
                        **tally(clients, admin),
                        "cubes_on_lost_node": on_lost,
                        "lost_node": lost.node_id,
                        "cube_nodes": sorted(set(where.values())),
                        "nodes": {"a": node_a.node_id, "b": node_b.node_id, "head": cluster.head_node.node_id},
                        "outage_s": outage,
                        "chat_in_flight": in_flight,
                        "next_chat": next_chat,
                    }
                )
            )
            admin.close()
            serve.shutdown()
            shutdown_runtime(config)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
