"""Ray actor round trips per HTTP request: add a memory, search a cube, chat over a cube.

    cd <repo> && PYTHONPATH=<repo> .venv/bin/python benchmarks/hops.py [--repo <repo>] [--models DIR]

How it counts: before ``ray.init`` the script writes a ``sitecustomize.py`` (source below, ``SITE``) to
``/tmp/hops/site`` and puts that folder first on ``PYTHONPATH`` (then the repo, so its packages win
over an editable install elsewhere), with ``HOPS_LOG`` naming a log file. Every Ray worker process
inherits that environment from the raylet, so each one wraps ``ray.actor.ActorHandle._actor_method_call``
(the stub every ``handle.method.remote()`` and ``.options(..).remote()`` goes through) and appends one
line per actor method call: ``time  pid  caller  TargetClass.method``. The caller is the calling
actor's class (and name); the Serve ingress replica is ``ServeReplica:<app>:<deployment>``. Actor
creations (``+new Class``) and named-actor lookups (``get_actor:name``, a GCS round trip) are logged
too but are not actor calls. A request's calls are the lines written between just before it and
0.5 s after its response. Idle windows of the same length measure the background (Serve's own
periodic calls), which the summary keeps apart from the app's calls.

Only the public HTTP API, the config and ``start`` are used; the imports try the layouts of several
versions of the code.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

HOPS_DIR = Path(os.environ.get("HOPS_DIR", "/tmp/hops"))
ADMIN_KEY = "mrk_000000000000_the-hops-benchmarks-administrator-key"
SERVE_INTERNAL = ("ServeController", "ProxyActor", "ServeReplica")
SETTLE_S = 0.5

SITE = r"""
import os, sys
_LOG = os.environ.get("HOPS_LOG")

def _install():
    import importlib.abc, importlib.machinery
    state = {"label": None, "fh": None, "info": False}

    def label():
        if state["label"]:
            return state["label"]
        try:
            import ray
            w = ray._private.worker.global_worker
            if w.mode == ray.SCRIPT_MODE:
                state["label"] = "driver"
                return "driver"
            ctx = ray.get_runtime_context()
            if ctx.get_actor_id() is None:
                return "task"  # not cached: the worker may become an actor later
            name = ctx.get_actor_name() or ""
            cls = ctx.current_actor._ray_actor_creation_function_descriptor.class_name
            state["label"] = f"{cls}[{name}]" if name else cls
            return state["label"]
        except Exception as exc:
            return f"?{type(exc).__name__}"

    def write(what):
        import time
        try:
            if state["fh"] is None:
                state["fh"] = open(_LOG, "a", buffering=1)
            lab = label()
            if not state["info"] and lab != "task" and not lab.startswith("?"):
                state["info"] = True
                mods = {m: getattr(sys.modules.get(m), "__file__", None) for m in ("memos_ray", "actors", "serve")}
                mods = {m: f for m, f in mods.items() if f}
                state["fh"].write(f"{time.time():.6f}\t{os.getpid()}\t{lab}\t#info {mods}\n")
            state["fh"].write(f"{time.time():.6f}\t{os.getpid()}\t{lab}\t{what}\n")
        except Exception:
            pass

    def patch(ray_mod):
        import ray.actor as ra
        orig_call = ra.ActorHandle._actor_method_call
        def _actor_method_call(self, method_name, *args, **kwargs):
            try:
                cls = self._ray_actor_creation_function_descriptor.class_name
            except Exception:
                cls = "?"
            write(f"{cls}.{method_name}")
            return orig_call(self, method_name, *args, **kwargs)
        ra.ActorHandle._actor_method_call = _actor_method_call
        orig_new = ra.ActorClass._remote
        def _remote(self, *args, **kwargs):
            try:
                cls = self.__ray_metadata__.class_name
            except Exception:
                cls = "?"
            write(f"+new {cls}")
            return orig_new(self, *args, **kwargs)
        ra.ActorClass._remote = _remote
        orig_get = ray_mod.get_actor
        def get_actor(name, *args, **kwargs):
            write(f"get_actor:{name}")
            return orig_get(name, *args, **kwargs)
        ray_mod.get_actor = get_actor

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname != "ray":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            orig_exec = loader.exec_module
            def exec_module(module):
                orig_exec(module)
                try:
                    patch(module)
                except Exception as exc:
                    sys.stderr.write(f"hops: patch failed: {exc!r}\n")
            loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder())

if _LOG:
    _install()
"""


def _repo_root(given: str | None) -> Path:
    if given:
        return Path(given).resolve()
    here = Path(__file__).resolve().parents[1]
    return here if (here / "memos_ray").is_dir() else Path.cwd().resolve()


def _free_port() -> int:
    for port in range(8700, 9700):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 8700-9699")


def _imports() -> tuple[Any, Any, Any]:
    """(MemosConfig, start, hash_key) wherever this version of the code keeps them."""
    try:
        from memos_ray.config import MemosConfig
    except ImportError:
        from memos_ray.core.config import MemosConfig  # type: ignore[no-redef]
    start = None
    for mod in ("serve.app", "serve.main", "serve"):
        try:
            start = __import__(mod, fromlist=["start"]).start
            break
        except (ImportError, AttributeError):
            continue
    if start is None:
        raise ImportError("no start(config) in serve.app / serve.main / serve")
    hash_key = None
    for mod in ("memos_ray.identity", "memos_ray.governance.identity", "memos_ray.governance"):
        try:
            hash_key = __import__(mod, fromlist=["hash_key"]).hash_key
            break
        except (ImportError, AttributeError):
            continue
    if hash_key is None:
        hash_key = lambda key: hashlib.sha256(key.encode()).hexdigest()  # noqa: E731
    return MemosConfig, start, hash_key


class Log:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.info: dict[tuple[str, str], str] = {}

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def since(self, offset: int) -> list[tuple[str, str, str]]:
        """(pid, caller, call) of the lines written after ``offset``."""
        if not self.path.exists():
            return []
        with self.path.open() as f:
            f.seek(offset)
            text = f.read()
        out = []
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) != 4:
                continue
            _, pid, caller, call = parts
            if call.startswith("#info"):
                self.info[(pid, caller)] = call
                continue
            out.append((pid, caller, call))
        return out

    def all_info(self) -> dict[tuple[str, str], str]:
        self.since(0)
        return self.info


def _is_serve_internal(caller: str, call: str) -> bool:
    target = call.split(".", 1)[0]
    return target.startswith(SERVE_INTERNAL) or caller.startswith(("ServeController", "ProxyActor"))


def _is_call(call: str) -> bool:
    return not call.startswith(("+new ", "get_actor:"))


def _ingress(caller: str) -> bool:
    return caller.startswith("ServeReplica:")


def summarize(lines: list[tuple[str, str, str]]) -> dict[str, Any]:
    calls = [(c, k) for _, c, k in lines if _is_call(k)]
    other = [(c, k) for _, c, k in lines if not _is_call(k)]
    ingress_app = collections.Counter(k for c, k in calls if _ingress(c) and not _is_serve_internal(c, k))
    ingress_serve = collections.Counter(k for c, k in calls if _ingress(c) and _is_serve_internal(c, k))
    all_app = collections.Counter(f"{_short(c)} -> {k}" for c, k in calls if not _is_serve_internal(c, k))
    serve_internal = collections.Counter(f"{_short(c)} -> {k}" for c, k in calls if _is_serve_internal(c, k))
    lookups = collections.Counter(f"{_short(c)} {k}" for c, k in other)
    return {
        "ingress_app": ingress_app,
        "ingress_serve": ingress_serve,
        "all_app": all_app,
        "serve_internal": serve_internal,
        "lookups": lookups,
    }


def _short(caller: str) -> str:
    if caller.startswith("ServeReplica:"):
        return "ingress"
    return caller.split("[", 1)[0]


def _fmt(counter: collections.Counter[str]) -> str:
    if not counter:
        return "-"
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(counter.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", help="the checkout to measure (default: this file's, else the cwd)")
    parser.add_argument("--models", help="converted-LLM cache (default: <repo>/.memos-ray/models)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each warm request")
    args = parser.parse_args()

    repo = _repo_root(args.repo)
    sys.path.insert(0, str(repo))
    HOPS_DIR.mkdir(parents=True, exist_ok=True)
    site = HOPS_DIR / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITE)
    log_path = HOPS_DIR / f"calls-{os.getpid()}.log"
    log_path.unlink(missing_ok=True)
    os.environ["HOPS_LOG"] = str(log_path)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(site), str(repo)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )

    import httpx
    import ray
    from ray import serve

    import memos_ray

    MemosConfig, start, hash_key = _imports()
    print(f"repo {repo}; driver's memos_ray: {memos_ray.__file__}; ray {ray.__version__}", flush=True)
    models = Path(args.models) if args.models else repo / ".memos-ray" / "models"
    log = Log(log_path)

    data = Path(tempfile.mkdtemp(prefix="memos-hops-"))
    port = _free_port()
    config = MemosConfig.model_validate(
        {
            "namespace": "memos_hops",
            "storage": {"data_dir": str(data)},
            "directory": {"max_live_cubes": 8},
            "serve": {"port": port},
            "llm": {"dtype": "float32", "cache_dir": str(models)},
            "workers": {"count": 2, "num_cpus": 0.25},
            "governance": {"admin_key_sha256": hash_key(ADMIN_KEY)},
        }
    )
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        namespace="memos_hops",
        log_to_driver=False,
        _temp_dir=str(HOPS_DIR / "ray"),
    )
    results: list[tuple[str, dict[str, Any], float, str]] = []
    try:
        t0 = time.perf_counter()
        url = start(config)
        print(f"started in {time.perf_counter() - t0:.1f}s at {url}", flush=True)
        admin = httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        r = admin.post("/v1/principals", json={"id": "hops-user", "kind": "user"})
        assert r.status_code == 201, r.text
        r = admin.post("/v1/keys", json={"principal": "hops-user", "label": "hops"})
        assert r.status_code == 201, r.text
        user = httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {r.json()['key']}"})
        r = user.post("/v1/cubes", json={"name": "hops"})
        assert r.status_code == 201, r.text
        cube = r.json()["id"]
        facts = [
            "Alice's favourite colour is green.",
            "Alice lives in Lisbon with her cat Miso.",
            "Alice works as a marine biologist.",
            "Alice is allergic to peanuts.",
            "Bob is Alice's brother and plays the cello.",
            "Alice ran the Berlin marathon in 2023.",
            "Alice prefers tea over coffee.",
            "Alice's birthday is on the 4th of March.",
            "Alice speaks Portuguese, English and some Japanese.",
            "Alice drives a small electric car.",
            "Alice's best friend is called Priya.",
            "Alice studied at the University of Porto.",
            "Alice is learning to sail on weekends.",
            "Alice keeps a vegetable garden on her balcony.",
            "Alice reads a lot of science fiction.",
            "Alice visited Kyoto last spring.",
            "Alice's cat Miso is eleven years old.",
            "Alice volunteers at the aquarium on Sundays.",
            "Alice dislikes loud restaurants.",
            "Alice plans to move to the Azores one day.",
        ]
        for i, text in enumerate(facts):
            tags = ["pinned"] if i < 4 else []
            r = user.post(f"/v1/cubes/{cube}/memories", json={"text": text, "tags": tags})
            assert r.status_code == 201, r.text
        time.sleep(SETTLE_S)

        def measure(name: str, fn: Any) -> None:
            offset = log.mark()
            t = time.perf_counter()
            note = fn()
            took = time.perf_counter() - t
            time.sleep(SETTLE_S)
            results.append((name, summarize(log.since(offset)), took, note))
            print(f"measured {name} ({took * 1000:.0f} ms) {note}", flush=True)

        def idle() -> str:
            time.sleep(0.2)
            return ""

        def add(n: int) -> Any:
            def go() -> str:
                r = user.post(f"/v1/cubes/{cube}/memories", json={"text": f"Alice's note number {n}: buy stamps."})
                assert r.status_code == 201, r.text
                return ""

            return go

        def search() -> str:
            r = user.post(f"/v1/cubes/{cube}/search", json={"query": "Where does Alice live?", "top_k": 5})
            assert r.status_code == 200, r.text
            return f"{len(r.json()['hits'])} hits"

        question = "What pet does Alice have, and where does she live?"

        def chat() -> str:
            body = {"cube_ids": [cube], "messages": [{"role": "user", "content": question}], "top_k": 5}
            r = user.post("/v1/chat", json=body)
            assert r.status_code == 200, r.text
            kv = r.json().get("kv") or {}
            return f"kv={kv.get('status')} worker={kv.get('worker')}"

        for _ in range(args.repeat):
            measure("idle (0.2 s + settle)", idle)
        for i in range(args.repeat):
            measure("add memory", add(i))
        for _ in range(args.repeat):
            measure("search cube", search)
        measure("chat (first, cold)", chat)
        for _ in range(args.repeat):
            measure("chat (warm, same question)", chat)

        print()
        print("Where each calling process imported the packages from (first line it logged):")
        for (pid, caller), info in sorted(log.all_info().items(), key=lambda kv: kv[0][1]):
            print(f"  pid {pid:>7} {caller}: {info[len('#info ') :]}")
        report(results)
        admin.close()
        user.close()
    finally:
        try:
            serve.shutdown()
        except Exception as exc:
            print(f"serve.shutdown: {exc!r}")
        try:
            from actors.runtime import shutdown_runtime

            shutdown_runtime(config)
        except Exception as exc:
            print(f"shutdown_runtime: {exc!r}")
        ray.shutdown()
    return 0


def report(results: list[tuple[str, dict[str, Any], float, str]]) -> None:
    print()
    print("=" * 100)
    print("Actor method calls per HTTP request (app = calls to/from memos actors; Serve's own calls apart)")
    print("=" * 100)
    for name, s, took, note in results:
        ingress = sum(s["ingress_app"].values())
        total = sum(s["all_app"].values())
        print(f"\n## {name}   [{took * 1000:.0f} ms{'; ' + note if note else ''}]")
        print(f"  ingress replica -> memos actors: {ingress}")
        print(f"      {_fmt(s['ingress_app'])}")
        print(f"  all processes, memos actor calls: {total}")
        for k, n in sorted(s["all_app"].items()):
            print(f"      {n:>3}  {k}")
        print(f"  Serve-internal calls in the window: {sum(s['serve_internal'].values())}  {_fmt(s['serve_internal'])}")
        if s["lookups"]:
            print(f"  not actor calls (GCS): {_fmt(s['lookups'])}")
    print()
    print("Summary (first measurement of each kind; later ones in brackets when they differ)")
    print(f"  {'request':<28} {'ingress':>8} {'all procs':>10} {'serve-int.':>11}")
    seen: dict[str, list[tuple[int, int, int]]] = {}
    for name, s, _, _ in results:
        seen.setdefault(name, []).append(
            (sum(s["ingress_app"].values()), sum(s["all_app"].values()), sum(s["serve_internal"].values()))
        )
    for name, rows in seen.items():
        first = rows[0]
        cols = []
        for j in range(3):
            vals = sorted({r[j] for r in rows[1:]} - {first[j]})
            cols.append(f"{first[j]}" + (f" [{','.join(map(str, vals))}]" if vals else ""))
        print(f"  {name:<28} {cols[0]:>8} {cols[1]:>10} {cols[2]:>11}")


if __name__ == "__main__":
    sys.exit(main())
