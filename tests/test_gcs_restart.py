"""The head's GCS killed and restarted under load, with Ray's GCS fault tolerance on an external Redis
(``tests/gcs_restart_check.py``, in a child process: a Ray cluster of its own)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.helpers import run_check

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.cluster]


def _redis_server() -> str:
    """Debian's redis-server, installed if it is missing (root, as in CI and on these machines)."""
    found = shutil.which("redis-server")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], env=env, capture_output=True, timeout=600)
        found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server is not installed and could not be (apt-get install redis-server)")
    return found


def test_a_gcs_restart_keeps_every_actor_and_every_acknowledged_write() -> None:
    _redis_server()
    seen = run_check("tests.gcs_restart_check")
    print("GCS restart:", json.dumps(seen))
    before, after = seen["named_before"], seen["named_after"]
    assert before and all(after.get(name) == actor for name, actor in before.items())  # the same actors came back
    assert seen["acked"] > 20 and seen["missing"] == [] and seen["unacknowledged"] == []
    assert all(gap is not None and gap < seen["gcs_down_s"] + 10 for gap in seen["longest_gap_s"].values())
