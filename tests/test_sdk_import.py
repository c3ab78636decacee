"""The SDK and the schema need nothing of the server: checked in a fresh interpreter, where nothing
else has loaded the heavy modules first."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVER_SIDE = ["ray", "torch", "numpy", "sqlite3", "fcntl", "pymilvus", "transformers", "peft", "fastapi"]


def _loaded_after(statement: str, watch: list[str] = SERVER_SIDE) -> list[str]:
    probe = f"import sys, json; {statement}; print(json.dumps([m for m in {watch!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "statement", ["from memos_ray import MemosClient, AsyncMemosClient, CubeNotFound", "import memos_ray.types"]
)
def test_the_sdk_imports_nothing_of_the_server(statement: str) -> None:
    assert _loaded_after(statement) == []


def test_the_cli_imports_nothing_of_the_server() -> None:
    """``memos-ray up`` imports Ray when it runs; the client commands never do. (typer itself loads fcntl
    on POSIX for the terminal, so that one is not ours to watch here.)"""
    assert _loaded_after("from serve.cli import main", [m for m in SERVER_SIDE if m != "fcntl"]) == []


def test_the_probe_sees_a_heavy_import() -> None:  # the check above can fail
    assert _loaded_after("import numpy") == ["numpy"]
