"""A throwaway Milvus server for tests that run the cube stores in server mode.

The PyPI package ``milvus`` (2.3.5) ships a real Milvus standalone binary with an embedded etcd, local-disk
storage and rocksmq: nothing else to run. It is started in a temporary folder on free ports and killed
after (its SIGTERM stop can hang; SIGKILL is safe: the write-ahead log is on disk). One per host: etcd's
peer port 2380 is fixed.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MilvusProcess:
    """The server in ``data``: ``start`` and ``kill`` as often as a test needs, on the same ports and files."""

    def __init__(self, data: Path) -> None:
        from milvus import MilvusServer

        self.data = data
        self.server: Any = MilvusServer(wait_for_started=True)
        self.server.set_base_dir(str(data))
        self.port = _free_port()
        self.server.config.update(proxy_port=self.port)  # fixed: a restart keeps the URI
        # Strong reads wait for a time tick: 200 ms by default, 20 ms here (as a deployment would tune it)
        self.server.config.set("proxy.timeTickInterval", 20)
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server.start()
        # A restart reuses the config written now: resolving again would look for free ports, and the
        # proxy's is held in TIME_WAIT by the clients it served (the server itself binds with SO_REUSEADDR).
        self.server.config.resolve = lambda: None

    def kill(self) -> None:
        proc = self.server.server_proc
        if proc is not None:
            proc.kill()
            proc.wait(timeout=30)
            self.server.server_proc = None
        for fd in self.server.proc_fds.values():
            fd.close()
        self.server.proc_fds.clear()


def fresh_database(server: str) -> str:
    """A new, empty Milvus database on ``server``; its URI (``<server>/<name>``)."""
    from pymilvus import MilvusClient

    name = f"t_{secrets.token_hex(6)}"
    client = MilvusClient(server)
    try:
        client.create_database(name)
    finally:
        client.close()
    return f"{server}/{name}"


@contextlib.contextmanager
def milvus_server() -> Iterator[MilvusProcess]:
    root = Path(tempfile.mkdtemp(prefix="memos-milvus-"))
    proc = MilvusProcess(root)
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()
        shutil.rmtree(root, ignore_errors=True)
