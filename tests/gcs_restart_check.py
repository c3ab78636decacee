"""Run by test_gcs_restart.py in its own process: the head's GCS is killed and restarted under load.

Ray's GCS fault tolerance keeps the cluster's tables (nodes, actors, named actors, jobs) in an external
Redis (``RAY_REDIS_ADDRESS``): a GCS that restarts reads them back, and the actors, which never stopped,
register again. Redis is started here on a free port (the test installs ``redis-server`` if it is missing)
and stopped after. memos-ray runs on its embedded defaults behind Serve; four clients add memories (each
under an Idempotency-Key, retried until acknowledged) while the GCS is down for a few seconds. Prints one
JSON line: the named actors and their ids before and after, every acknowledged write read back or not,
the longest gap between two acknowledgements per client (the outage seen), and failed attempts.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx

from tests.node_loss_check import Client, _free_port, tally

CLIENTS = 4
BEFORE_S, DOWN_S, AFTER_S = 6.0, 4.0, 12.0


def _named() -> dict[str, str]:
    import ray

    table = ray._private.state.actors()  # type: ignore[attr-defined]
    return {
        a["Name"]: actor_id
        for actor_id, a in table.items()
        if a.get("Name") and a.get("State") == "ALIVE" and a["Name"].startswith("memos")
    }


def main() -> None:
    redis_port = _free_port()
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["RAY_REDIS_ADDRESS"] = f"127.0.0.1:{redis_port}"  # read by the GCS the head starts
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from actors.runtime import shutdown_runtime
    from memos_ray.config import DirectoryConfig, MemosConfig, ServeConfig, StorageConfig
    from serve.app import start

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "gcs_server_port": _free_port()})
    try:
        ray.init(address=cluster.address, namespace="memos_gcs", log_to_driver=False)
        with tempfile.TemporaryDirectory() as data:
            config = MemosConfig(
                namespace="memos_gcs",
                storage=StorageConfig(data_dir=Path(data)),
                directory=DirectoryConfig(max_live_cubes=16, warm_actors=2, spare_actors=1),
                serve=ServeConfig(port=_free_port()),
            )
            url = start(config)
            key = (Path(data) / "admin.key").read_text().strip()
            admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
            cubes = [f"gcs-{i}" for i in range(CLIENTS)]
            for cube in cubes:
                assert admin.post("/v1/cubes", json={"id": cube}).status_code == 201
            before = _named()

            stop = threading.Event()
            clients = [Client(url, key, [cube], stop) for cube in cubes]
            for c in clients:
                c.start()
            time.sleep(BEFORE_S)
            killed_at = time.time()
            cluster.head_node.kill_gcs_server()
            time.sleep(DOWN_S)
            cluster.head_node.start_gcs_server()
            restarted_at = time.time()
            time.sleep(AFTER_S)
            stop.set()
            for c in clients:
                c.join(timeout=90)
            after = _named()

            gaps = {}
            for c in clients:
                for cube, acks in c.acked.items():
                    times = [killed_at, *sorted(t for _, t in acks if t >= killed_at)]
                    gaps[cube] = round(max(b - a for a, b in itertools.pairwise(times)), 2) if len(times) > 1 else None
            print(
                json.dumps(
                    {
                        **tally(clients, admin),
                        "named_before": before,
                        "named_after": after,
                        "acked_while_down": sum(
                            1 for c in clients for a in c.acked.values() for _, t in a if killed_at <= t < restarted_at
                        ),
                        "longest_gap_s": gaps,
                        "gcs_down_s": round(restarted_at - killed_at, 2),
                    }
                )
            )
            admin.close()
            serve.shutdown()
            shutdown_runtime(config)
    finally:
        ray.shutdown()
        cluster.shutdown()
        redis.kill()
        redis.wait(timeout=10)


if __name__ == "__main__":
    main()
    sys.exit(0)
