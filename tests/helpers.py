"""What tests share besides fixtures: the suite's administrator key, the model cache, small waits.

Test modules import these from here (``from tests.helpers import bearer``), never from conftest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

# The suite's administrator key (registered by hash, as MEMOS_RAY_ADMIN_KEY would be).
ADMIN_KEY = "mrk_000000000000_the-test-suites-administrator-key"

# The LLM is converted from its GGUF once per checkout (~15 s), then loads in under a second.
MODELS = Path(__file__).resolve().parents[1] / ".memos-ray" / "models"


def wait_for_condition(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
