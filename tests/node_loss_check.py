"""Run by test_node_loss.py in its own process: a worker node is lost under load, and nothing is lost.

A 3-node ``ray.cluster_utils.Cluster`` on this machine: the head (the Directory, Serve) and two worker
nodes that carry the cube actors (custom resource ``memos_cubes``) and one model worker each (``node_a``,
``node_b``). Cube rows are on the Milvus server and every store is in PostgreSQL (both URIs come from the
test), so no actor needs a node's disk. Four HTTP clients add memories (each add under an Idempotency-Key,
retried with the same key until it is acknowledged) and search, while node a is removed, with a chat
pinned to its model worker in flight. Prints one JSON line: every acknowledged
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


def _phase(what: str) -> None:
    """Where the check is (stderr): a check that hangs shows its last phase in the test's failure."""
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


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
        self.first_error: dict[str, str] = {}  # status -> the first such answer's error message

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
            self.first_error.setdefault(str(r.status_code), r.text[:300])
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
    first_error: dict[str, str] = {}
    for c in clients:
        for k, v in c.failures.items():
            failures[k] = failures.get(k, 0) + v
        for k, m in c.first_error.items():
            first_error.setdefault(k, m)
    return {
        "acked": sum(len(a) for c in clients for a in c.acked.values()),
        "missing": missing,
        "unacknowledged": [f"{cube}:{t}" for c in clients for cube, (_, t) in c.pending.items()],
        "retried_failures": failures,
        "first_error": first_error,
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


def _node_of_shared() -> dict[str, str]:
    """Which node each named actor other than a model worker runs on."""
    table = ray._private.state.actors()  # type: ignore[attr-defined]
    return {
        a["Name"]: a["Address"]["NodeID"]
        for a in table.values()
        if a.get("Name") and a.get("State") == "ALIVE" and not a["Name"].startswith("memos_worker")
    }


def _start_embedder_on(node_id: str, config: MemosConfig) -> None:
    """The worst case: the one shared actor that runs on any node (the Embedder: every add and search asks
    it) starts on the node that will be lost, as ``ensure_runtime`` may start it there by chance (its name,
    options and argument; a soft affinity, so Ray restarts it elsewhere). The control plane is on the head."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from actors.embedder import EMBEDDER_NAME, EmbedderActor

    embedder = EmbedderActor.options(  # type: ignore[attr-defined]
        name=EMBEDDER_NAME,
        namespace=config.namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=config.embedder.num_cpus,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=True),
    ).remote(config.embedder)
    ray.get(embedder.ready.remote())


def _dump(namespace: str) -> None:
    """What the actors were doing (stderr), when a step did not answer."""
    table = ray._private.state.actors()  # type: ignore[attr-defined]
    for a in table.values():
        if a["State"] != "DEAD" or (a["Name"] or "").startswith("memos"):
            print(a["Name"] or a["ActorClassName"], a["State"], a["Address"]["NodeID"][:8], file=sys.stderr)
    scheduler = ray.get_actor("memos_scheduler", namespace=namespace)
    for method in ("stats", "ready"):
        try:
            print(method, ray.get(getattr(scheduler, method).remote(), timeout=10), file=sys.stderr, flush=True)
        except Exception as exc:
            print(method, "did not answer:", repr(exc)[:300], file=sys.stderr, flush=True)


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
    node_a = cluster.add_node(num_cpus=2, resources={"memos_cubes": 100, "node_a": 1})
    # two logical CPUs a node: the Embedder (0.5), a model worker (0.25), an ingress replica and the cubes fit
    # on one node (with one, the model worker could wait for CPU forever behind the Embedder)
    cluster.wait_for_nodes()  # node b joins once the cubes live on node a: node a is the one lost
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
            _start_embedder_on(node_a.node_id, config)
            url = start(config)
            key = (Path(data) / "admin.key").read_text().strip()
            admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
            cubes = [f"nl-{i}" for i in range(CLIENTS * CUBES_PER_CLIENT)]
            _phase("service up: cubes")
            for cube in cubes:  # each cube's actor starts on node a (the only one with cube slots yet)
                assert admin.post("/v1/cubes", json={"id": cube}).status_code == 201
                assert admin.post(f"/v1/cubes/{cube}/search", json={"query": "courier"}).status_code == 200
            node_b = cluster.add_node(num_cpus=2, resources={"memos_cubes": 100, "node_b": 1})
            cluster.wait_for_nodes()
            _phase("node b up: warming both model workers")
            warm = {"cube_ids": [cubes[0]], "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
            for w in (0, 1):  # both model workers loaded before the clock starts
                try:
                    r = admin.post("/v1/chat", json={**warm, "worker": w}, timeout=150)
                    assert r.status_code == 200, r.text
                except (httpx.HTTPError, AssertionError):
                    _dump(config.namespace)
                    raise
                _phase(f"model worker {w} answered")

            _phase("traffic")
            stop = threading.Event()
            clients = [Client(url, key, cubes[i::CLIENTS], stop) for i in range(CLIENTS)]
            for c in clients:
                c.start()
            time.sleep(BEFORE_S)
            where = _node_of_cubes(url, key, cubes, config.namespace)
            shared = _node_of_shared()
            lost, lost_worker = node_a, 0
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
            _phase("node a removed")
            chat.join(timeout=200)
            time.sleep(AFTER_S)
            stop.set()
            for c in clients:
                c.join(timeout=90)

            _phase("clients done: the next chat")
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
                        "shared_on_lost_node": sorted(n for n, v in shared.items() if v == lost.node_id),
                        "nodes": {"a": node_a.node_id, "b": node_b.node_id, "head": cluster.head_node.node_id},
                        "outage_s": outage,
                        "chat_in_flight": in_flight,
                        "next_chat": next_chat,
                    }
                )
            )
            _phase("shutting down")
            admin.close()
            serve.shutdown()
            shutdown_runtime(config)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
