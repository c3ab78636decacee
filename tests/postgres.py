"""A throwaway PostgreSQL server for tests that run a store against both of its databases.

``initdb`` in a temporary folder, ``postgres`` on a loopback port, stopped and removed after. PostgreSQL
refuses to run as root: under root (CI, these machines) it runs as ``nobody``. Trust authentication on
loopback only, fsync off (what is tested is the SQL, not the disk). Each test gets a database of its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

USER = "memos"


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return str(found)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*cmd: str) -> None:
    prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, timeout=120)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The server's URI without a database (``.../postgres`` is its maintenance database)."""
    root = Path(tempfile.mkdtemp(prefix="memos-pg-"))
    if os.geteuid() == 0:
        os.chown(root, 65534, 65534)
    data, port = root / "data", _free_port()
    _run(_binary("initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    pg_ctl = _binary("pg_ctl")
    _run(pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start")
    try:
        yield f"postgresql://{USER}@127.0.0.1:{port}"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            _run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server: str) -> str:
    """A new, empty database on ``server``; its URI."""
    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"
