"""Server mode against the embedded defaults, and what a lost node or a restarted GCS costs.

``storage``: the same Serve stack twice in one run, first on the embedded defaults (milvus-lite shards,
SQLite), then with cube rows on a Milvus server (the packaged 2.3.5 standalone) and every store in
PostgreSQL, both started here: ingest throughput (4 clients adding batches) and search p50/p95 (one
client, then 4). ``outages``: the node-loss and GCS-restart checks of ``make test-cluster``, their outage
windows. Ratios within one run are what to read on this noisy machine.

    make bench-servers
    python -m benchmarks.servers --only storage
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from benchmarks.common import MODELS, corpus, print_table, questions, settle, stack, summary_ms, write_json

CUBES, BATCH, BATCHES = 4, 50, 10  # per cube: 500 memories
SEARCHES = 120


def _run_mode(name: str, storage: dict[str, Any], texts: list[str], asks: list[str]) -> dict[str, Any]:
    import httpx

    with stack(port=8772, storage=storage) as st:
        settle(st)
        for i in range(CUBES):
            st.http.post("/v1/cubes", json={"id": f"srv-{i}"}).raise_for_status()
        st.http.post("/v1/cubes/srv-0/memories", json={"text": "warm-up"}).raise_for_status()

        def ingest(i: int) -> None:
            with httpx.Client(base_url=st.url, headers={"Authorization": f"Bearer {st.key}"}, timeout=120) as http:
                for b in range(BATCHES):
                    items = [{"text": texts[(i * BATCHES + b) * BATCH + k]} for k in range(BATCH)]
                    http.post(f"/v1/cubes/srv-{i}/memories/batch", json={"items": items}).raise_for_status()

        started = time.perf_counter()
        threads = [threading.Thread(target=ingest, args=(i,)) for i in range(CUBES)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ingest_s = time.perf_counter() - started

        def search(i: int, n: int, out: list[float]) -> None:
            with httpx.Client(base_url=st.url, headers={"Authorization": f"Bearer {st.key}"}, timeout=120) as http:
                for k in range(n):
                    t0 = time.perf_counter()
                    body = {"query": asks[(i * n + k) % len(asks)], "top_k": 10}
                    http.post(f"/v1/cubes/srv-{i % CUBES}/search", json=body).raise_for_status()
                    out.append(time.perf_counter() - t0)

        one: list[float] = []
        search(0, SEARCHES, one)
        four: list[float] = []
        threads = [threading.Thread(target=search, args=(i, SEARCHES // 4, four)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # a cube read back from its rows: passivate everything, then the first search of each cube
        import ray

        from actors.directory import DIRECTORY_NAME, Directory

        directory = ray.get_actor(DIRECTORY_NAME, namespace=st.config.namespace)
        cold: list[float] = []
        for i in range(CUBES):
            ray.get(getattr(directory, Directory.passivate.__name__).remote(f"srv-{i}"))
            t0 = time.perf_counter()
            st.http.post(f"/v1/cubes/srv-{i}/search", json={"query": asks[i]}).raise_for_status()
            cold.append(time.perf_counter() - t0)
    s1, s4, sc = summary_ms(one), summary_ms(four), summary_ms(cold)
    return {
        "mode": name,
        "ingest_per_s": round(CUBES * BATCHES * BATCH / ingest_s, 1),
        "search_p50_ms": round(s1["p50_ms"], 1),
        "search_p95_ms": round(s1["p95_ms"], 1),
        "search_4_clients_p50_ms": round(s4["p50_ms"], 1),
        "search_4_clients_p95_ms": round(s4["p95_ms"], 1),
        "reactivation_p50_ms": round(sc["p50_ms"], 1),
    }


def storage_modes() -> list[dict[str, Any]]:
    from tests.milvus_server import fresh_database as fresh_milvus
    from tests.milvus_server import milvus_server
    from tests.postgres import fresh_database as fresh_postgres
    from tests.postgres import postgres_server

    texts, asks = corpus(CUBES * BATCHES * BATCH), questions()
    rows = [_run_mode("embedded (milvus-lite, SQLite)", {}, texts, asks)]
    with milvus_server() as milvus, postgres_server() as pg:
        servers = {"milvus_uri": fresh_milvus(milvus.uri), "database_uri": fresh_postgres(pg)}
        rows.append(_run_mode("servers (Milvus 2.3.5, PostgreSQL 15)", servers, texts, asks))
    return rows


def outages() -> dict[str, Any]:
    from tests.helpers import run_check
    from tests.milvus_server import fresh_database as fresh_milvus
    from tests.milvus_server import milvus_server
    from tests.postgres import fresh_database as fresh_postgres
    from tests.postgres import postgres_server

    with milvus_server() as milvus, postgres_server() as pg:
        node = run_check("tests.node_loss_check", str(MODELS), fresh_milvus(milvus.uri), fresh_postgres(pg))
    gcs = run_check("tests.gcs_restart_check")
    return {
        "node_loss": {k: node[k] for k in ("acked", "missing", "cubes_on_lost_node", "outage_s", "chat_in_flight")},
        "gcs_restart": {k: gcs[k] for k in ("acked", "missing", "gcs_down_s", "longest_gap_s", "acked_while_down")},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["storage", "outages"])
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if args.only in (None, "storage"):
        out["storage"] = storage_modes()
        print_table("embedded vs servers (one run)", out["storage"])
    if args.only in (None, "outages"):
        out["outages"] = outages()
        node, gcs = out["outages"]["node_loss"], out["outages"]["gcs_restart"]
        print("\n## a worker node lost under load")
        print(f"acknowledged writes {node['acked']}, missing {len(node['missing'])}; outage per lost cube (s):")
        print("  ", node["outage_s"], "; the chat in flight:", node["chat_in_flight"].get("status"))
        print("\n## the head's GCS killed and restarted (Redis)")
        print(f"acknowledged writes {gcs['acked']}, missing {len(gcs['missing'])}; GCS down {gcs['gcs_down_s']} s;")
        print("   longest gap between acknowledgements per client (s):", gcs["longest_gap_s"])
    write_json("servers", out)


if __name__ == "__main__":
    main()
