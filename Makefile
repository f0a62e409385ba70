# Khala — the project's interface. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= uv
RUN := $(UV) run --frozen --no-sync
PYTEST_ARGS ?=

# Tests use the machine's servers when reachable, else testcontainers (Docker).
TEST_ENV = source scripts/test-env.sh &&

.PHONY: help install proto proto-check lint typecheck deploy-check drill-rebuild drill-backup-restore drill-rollback drill-canary test-chaos test-fuzz bench bench-full bench-pipeline bench-readme test-web test-ts test test-unit test-integration test-e2e run demo clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

install: ## Install uv (if missing), the locked workspace into .venv, and promtool (Debian) if missing
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@./scripts/install-system-tools.sh

proto: install ## Regenerate libs/khala-proto from proto/
	./scripts/gen-proto.sh

proto-check: install ## buf lint + buf breaking against the released image + generated code and docs tables up to date
	./scripts/proto-check.sh

# Service and lib sources: what the copied-logic check reads.
SOURCES := services/control/src/khala_control services/runtime/src/khala_runtime \
	services/projector/src/khala_projector services/khala-gateway/src/khala_gateway \
	libs/khala-common/src/khala_common

lint: install ## ruff format --check, ruff check (complexity gate C901 <= 10), layer contracts, copied logic
	$(RUN) ruff format --check .
	$(RUN) ruff check .
	$(RUN) lint-imports --no-logo
	$(RUN) pylint --rcfile pyproject.toml $(SOURCES)

typecheck: install ## mypy --strict on every service, lib and the Python client
	$(RUN) mypy --strict

# Mutation testing (docs/mutation.md): the five packages are staged under
# $(MUTATION_DIR)/src with their unit tests (mutmut 3 needs one src/ root), then
# mutmut runs there with [tool.mutmut] of pyproject.toml.
MUTATION_DIR := build/mutation
MUTATION_CHILDREN ?= 2

.PHONY: mutation
mutation: install ## Mutation score of the pure domain modules (mutmut, 2 children): bench/results/mutation.{json,md}
	rm -rf $(MUTATION_DIR) && mkdir -p $(MUTATION_DIR)/src
	cp -r libs/khala-common/src/khala_common services/control/src/khala_control \
		services/runtime/src/khala_runtime services/projector/src/khala_projector \
		services/khala-gateway/src/khala_gateway $(MUTATION_DIR)/src/
	cp -r --parents conftest.py pyproject.toml libs/khala-common/tests services/control/tests \
		services/runtime/tests services/projector/tests services/khala-gateway/tests $(MUTATION_DIR)/
	cd $(MUTATION_DIR) && $(CURDIR)/.venv/bin/mutmut run --max-children $(MUTATION_CHILDREN)
	$(RUN) python scripts/mutation_report.py $(MUTATION_DIR)

test-unit: install ## Unit tests (nothing running needed)
	$(RUN) pytest -m "not integration and not e2e" $(PYTEST_ARGS)

test-integration: install ## Integration tests on real Postgres and RabbitMQ
	$(TEST_ENV) $(RUN) pytest -m integration $(PYTEST_ARGS)

test-e2e: install ## End-to-end tests: the four services as processes
	$(TEST_ENV) $(RUN) pytest tests/e2e $(PYTEST_ARGS)

deploy-check: install ## Render and validate k8s overlays, promtool rules, compose, Dockerfiles, RabbitMQ definitions
	./scripts/deploy-check.sh

test-chaos: install ## Long chaos run (~10 min, >= 1M frames): SIGKILL every service and the private RabbitMQ and Postgres under load
	$(TEST_ENV) $(RUN) pytest -m chaos tests/chaos -rP $(PYTEST_ARGS)

.PHONY: test-chaos-ci
test-chaos-ci: install ## Chaos in CI (~3 min): SIGKILL every service, RabbitMQ and Postgres (private servers) at seeded random moments under load
	$(TEST_ENV) $(RUN) pytest -m chaos_ci tests/chaos -rP $(PYTEST_ARGS)

test-fuzz: install ## Long fuzz run: hypothesis connections, then 1M seeded mutated WebSocket messages against a live gateway
	$(TEST_ENV) KHALA_FUZZ_MESSAGES=1000000 KHALA_FUZZ_MIN_MESSAGES=1000000 KHALA_FUZZ_SECONDS=3600 $(RUN) pytest -m "fuzz or fuzz_ci" tests/fuzz -rP $(PYTEST_ARGS)

.PHONY: test-drills
test-drills: install ## Drills as tests (rebuild under traffic, backup/restore) and the bench harnesses at tiny sizes
	cd bench/peers/socketio && npm ci --silent --no-audit --no-fund
	$(TEST_ENV) $(RUN) pytest -m drills tests/drills -rA $(PYTEST_ARGS)

.PHONY: test-fuzz-ci
test-fuzz-ci: install ## Seeded 90 s live WebSocket fuzz slice (>= 20k messages) beside normal clients whose streams are checked
	$(TEST_ENV) $(RUN) pytest -m fuzz_ci tests/fuzz -rP $(PYTEST_ARGS)

bench: install ## Benchmarks, quick version: the pipeline benchmark, then Khala vs NATS vs Socket.IO; writes bench/results/ and README's table
	$(TEST_ENV) $(RUN) python bench/pipeline.py --quick
	cd bench/peers/socketio && npm ci --silent --no-audit --no-fund
	$(TEST_ENV) $(RUN) python bench/run.py --quick
	$(RUN) python bench/readme_table.py --mode quick

bench-full: install ## Benchmarks, full version (60 s per pipeline rate, 50k idle sockets, larger loads)
	$(TEST_ENV) $(RUN) python bench/pipeline.py --full
	cd bench/peers/socketio && npm ci --silent --no-audit --no-fund
	$(TEST_ENV) $(RUN) python bench/run.py --full
	$(RUN) python bench/readme_table.py --mode full

bench-pipeline: install ## Pipeline benchmark only (quick; BENCH_ARGS="--full" or "--projectors 2 --gateways 2")
	$(TEST_ENV) $(RUN) python bench/pipeline.py $(if $(BENCH_ARGS),$(BENCH_ARGS),--quick)

bench-readme: install ## Regenerate README's performance table from bench/results/*.json (MODE=quick|full)
	$(RUN) python bench/readme_table.py --mode $(if $(MODE),$(MODE),quick)

test-web: install ## Browser client module unit tests (node --test)
	node --test clients/web/tests/

test-ts: install ## TypeScript SDK (clients/ts): npm ci, generated code up to date, build, unit and golden-fixture tests (live and Chromium tests run in test-e2e)
	cd clients/ts && npm ci --silent --no-audit --no-fund
	./scripts/ts-gen-check.sh
	cd clients/ts && npm run --silent build && node --test test/

test: install proto-check lint typecheck deploy-check test-web test-ts ## Everything: proto-check, lint, types, deploy checks, web, TypeScript SDK, unit, integration and e2e tests
	$(TEST_ENV) $(RUN) pytest $(PYTEST_ARGS)

drill-rebuild: install ## Drill: projection rebuild under live traffic; clients stay consistent
	$(RUN) python scripts/drills/drill_rebuild.py

drill-backup-restore: install ## Drill: pg_dump/pg_restore; clients resume or get a deterministic stale_cursor(cursor_ahead)
	$(RUN) python scripts/drills/drill_backup_restore.py

drill-rollback: install ## Drill: SIGTERM + restart gateway and projector under traffic; nothing lost; migrate is idempotent
	$(RUN) python scripts/drills/drill_rollback.py

drill-canary: install ## Drill: a gateway canary of the previous version (git worktree) beside HEAD; clients move between them, nothing lost
	$(RUN) python scripts/drills/drill_canary.py

run: install ## Start Postgres/RabbitMQ checks, migrate, run all four services (Ctrl-C stops)
	$(RUN) python scripts/stack.py run

demo: install ## Sign in, create a run, append events and print the live frames (uses `make run` if up)
	$(RUN) python scripts/demo.py

clean: ## Remove local state (.venv, logs)
	rm -rf .venv .khala .mypy_cache .ruff_cache
