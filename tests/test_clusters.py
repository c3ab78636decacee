"""The deployment manifests in clusters/ stay valid: each is checked against the schema of what reads it
(Ray Serve's deploy schema, the Ray cluster launcher's JSON schema) and the memos-ray config they carry
against ``MemosConfig``, so a renamed or misspelt field fails here instead of at deploy time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import ray.autoscaler
import yaml
from ray.serve.schema import ServeDeploySchema

from memos_ray.config import MemosConfig

CLUSTERS = Path(__file__).resolve().parent.parent / "clusters"


def _check_serve(doc: dict[str, Any]) -> MemosConfig:
    """A Serve deploy config that runs the app ``memos-ray up`` runs, with a config memos-ray accepts."""
    schema = ServeDeploySchema.model_validate(doc)
    (app,) = [a for a in schema.applications if a.name == "memos"]
    assert app.import_path == "serve.app:build_app" and app.route_prefix == "/"
    return MemosConfig.model_validate(app.args["config"])


def test_the_serve_config_deploys_the_app_with_a_valid_config() -> None:
    config = _check_serve(yaml.safe_load((CLUSTERS / "serve_config.yaml").read_text()))
    assert config.storage.milvus_uri and config.storage.database_uri, "past one machine both servers are named"
    assert config.governance.audit_key_file is not None  # a mounted secret: a restarted head finds it


def test_the_kuberay_rayservice_carries_a_valid_serve_config_and_cluster() -> None:
    doc = yaml.safe_load((CLUSTERS / "kuberay-rayservice.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    config = _check_serve(yaml.safe_load(doc["spec"]["serveConfigV2"]))
    assert config.storage.milvus_uri and config.storage.database_uri
    cluster = doc["spec"]["rayClusterConfig"]
    assert cluster["gcsFaultToleranceOptions"]["redisAddress"]  # a head that restarts keeps its actors
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"]
        # the workers offer what cube actors ask for
        offered = json.loads(json.loads(group["rayStartParams"]["resources"]))
        assert set(config.directory.cube_resources) <= set(offered)


def test_the_cluster_launcher_config_matches_rays_schema() -> None:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    doc = yaml.safe_load((CLUSTERS / "ray-cluster.yaml").read_text())
    jsonschema.validate(doc, schema)
    assert doc["provider"]["type"] == "local" and doc["max_workers"] == len(doc["provider"]["worker_ips"])
    assert any("RAY_REDIS_ADDRESS=" in c for c in doc["head_start_ray_commands"])  # GCS fault tolerance
    assert any("memos_cubes" in c for c in doc["worker_start_ray_commands"])


def test_the_grafana_dashboard_shows_every_metric_and_is_current() -> None:
    from actors.metrics import METRICS
    from scripts.grafana_dashboard import OUT, dashboard

    shipped = json.loads(OUT.read_text())
    assert shipped == dashboard(), "clusters/grafana-dashboard.json is stale: run scripts/grafana_dashboard.py"
    exprs = " ".join(t["expr"] for p in shipped["panels"] for t in p["targets"])
    assert all(f"ray_{name}" in exprs for name in METRICS)
