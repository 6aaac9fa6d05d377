# The two commands: `make run` starts everything, `make test` tests everything.
# Both install what they need (uv, Python deps, Kafka jars, PostgreSQL) idempotently.

SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
STACK := bash deploy/local/stack.sh
# The local broker's port also tells the clients where it is (an external
# KAFKA_BOOTSTRAP_SERVERS wins, and then stack.sh starts no broker).
WITH_KAFKA := KAFKA_BOOTSTRAP_SERVERS=$${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$${KAFKA_PORT:-19092}}
PY := $(WITH_KAFKA) $(UV) run --locked --no-sync python

.PHONY: help install stack topics run stop test test-unit test-integration lint fmt typecheck schemas bench bench-compare profile clean test-scram stack-scram k8s-tools manifests config-table test-chaos chaos \
	prometheus-tools dashboards dashboards-check dashboards-preview rules-test

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(UV):
	@echo "uv not found: installing it from PyPI for this user"
	python3 -m pip install --user --quiet uv || python3 -m pip install --user --quiet --break-system-packages uv

install: $(UV) ## install Python 3.11 deps of every package into .venv (from uv.lock)
	@$(UV) sync --locked --quiet --compile-bytecode

stack: install ## start local Kafka + PostgreSQL (or check the external ones) and create topics
	@$(STACK) up
	@$(PY) -m fulfilment_kit.messaging.admin ensure-topics

topics: install ## create any missing topic (and DLQ topic)
	@$(PY) -m fulfilment_kit.messaging.admin ensure-topics

# KAFKA_SECURITY=scram (`make run KAFKA_SECURITY=scram`): on the SCRAM + ACL broker of
# `make stack-scram`, every service as its own Kafka user (deploy/local/kafka-user.sh).
ifeq ($(KAFKA_SECURITY),scram)
run: install prometheus-tools ## start the whole system in the foreground (Ctrl-C or `make stop` to end); KAFKA_SECURITY=scram: SASL/SCRAM + ACLs
	@$(STACK) pg-up
	@$(SCRAM_STACK) kafka-up
	@eval "$$($(SCRAM_STACK) env)" && $(UV) run --locked --no-sync python -m fulfilment_kit.messaging.admin ensure-topics
	@echo ">>> Prometheus (scraping every service, alert rules loaded): $$(bash deploy/local/prometheus.sh up)"
	@eval "$$($(SCRAM_STACK) env)" && bash deploy/local/run.sh
else
run: stack prometheus-tools
	@echo ">>> Prometheus (scraping every service, alert rules loaded): $$(bash deploy/local/prometheus.sh up)"
	@$(WITH_KAFKA) bash deploy/local/run.sh
endif

stop: ## stop the services and the local Kafka + PostgreSQL
	@bash deploy/local/run.sh stop
	@bash deploy/local/prometheus.sh down
	@$(STACK) down
	@$(SCRAM_STACK) kafka-down

lint: install ## ruff lint + format check
	@$(UV) run --no-sync ruff check .
	@$(UV) run --no-sync ruff format --check .

fmt: install ## format and fix what ruff can
	@$(UV) run --no-sync ruff format .
	@$(UV) run --no-sync ruff check --fix .

typecheck: install ## mypy (strict on the kit and the domain modules)
	@$(UV) run --no-sync mypy
	@$(UV) run --no-sync mypy --strict deploy/grafana/dashboards.py

schemas: install ## regenerate the committed JSON Schemas and AsyncAPI document
	@$(PY) -m fulfilment_kit.contracts.schema_files

test-unit: install ## unit + contract tests (no servers needed)
	@$(UV) run --no-sync pytest -q tests/unit tests/contract

test-integration: stack ## integration tests against the real (plaintext) Kafka + PostgreSQL; SCRAM: make test-scram
	@$(WITH_KAFKA) $(UV) run --no-sync pytest -q -m "not kafka_security" tests/integration

prometheus-tools: ## install Debian's prometheus + promtool if missing
	@bash deploy/local/prometheus.sh ensure

dashboards: install ## regenerate the Grafana dashboards' JSON and ConfigMaps from deploy/grafana/dashboards.py
	@$(UV) run --no-sync python deploy/grafana/dashboards.py

dashboards-check: install ## fail if the committed dashboards drifted from the code
	@$(UV) run --no-sync python deploy/grafana/dashboards.py --check

rules-test: prometheus-tools ## promtool check + unit tests of the alert rules
	@promtool check rules deploy/prometheus/rules/*.yml
	@promtool test rules deploy/prometheus/tests/*.yml

dashboards-preview: stack prometheus-tools ## e2e traffic, then every panel rendered from Prometheus to PNG
	@FULFIL_DASHBOARD_PREVIEW_DIR=$${FULFIL_DASHBOARD_PREVIEW_DIR:-$(CURDIR)/.local/dashboards-preview} \
		$(WITH_KAFKA) $(UV) run --no-sync pytest -q -p no:cacheprovider tests/e2e/test_observability.py -k panels
	@echo "PNGs in $${FULFIL_DASHBOARD_PREVIEW_DIR:-$(CURDIR)/.local/dashboards-preview}"

k8s-tools: install ## kustomize + kubeconform (pinned, into .local/bin) and the Kubernetes schemas
	@bash deploy/k8s/tools.sh

manifests: install ## regenerate the consumer registry and deploy/k8s/base from the code (topics, ACLs, rules, dashboards)
	@$(UV) run --no-sync python deploy/consumers.py
	@$(UV) run --no-sync python deploy/k8s/generate.py
	@$(UV) run --no-sync python deploy/config_table.py

config-table: install ## regenerate README.md's configuration table from the settings classes
	@$(UV) run --no-sync python deploy/config_table.py

# The integration suite runs on the SCRAM + ACL broker (every service process its own Kafka
# user, the test fixtures the admin); everything else on the plaintext one. Once each.
test: lint typecheck k8s-tools stack prometheus-tools ## everything: lint, types, unit, contract, e2e on plaintext Kafka; integration on SCRAM + ACLs
	@$(WITH_KAFKA) $(UV) run --no-sync pytest -q -p no:cacheprovider -m "not kafka_security and not chaos" \
		--ignore=tests/integration --ignore=tests/chaos tests
	@$(MAKE) --no-print-directory test-scram
	@$(MAKE) --no-print-directory test-chaos

# --- chaos ------------------------------------------------------------------------------
# Replicas killed, added and removed, Kafka and PostgreSQL restarted, the card provider slow,
# poison injected, while orders flow; then the invariants and the table (docs/reliability.md).
# It stops and starts this checkout's own broker and database (never anyone else's).
CHAOS = $(WITH_KAFKA) $(UV) run --no-sync pytest -q -p no:cacheprovider -m chaos tests/chaos

test-chaos: stack ## the CI-sized chaos run (600 orders, every fault once; the end of `make test`)
	@CHAOS_ORDERS=$${CHAOS_ORDERS:-600} $(CHAOS)

chaos: stack ## the full chaos run (3000 orders; every replica of every process killed in turn)
	@CHAOS_ORDERS=$${CHAOS_ORDERS:-3000} $(CHAOS)

# --- Kafka SASL/SCRAM + ACLs ------------------------------------------------------------
# A second local broker in SCRAM mode (own state dir, ports KAFKA_PORT+2 and +3 unless
# KAFKA_SCRAM_PORT / KAFKA_SCRAM_CONTROLLER_PORT say otherwise), sharing the Kafka jars.
SCRAM_STACK = env -u KAFKA_BOOTSTRAP_SERVERS FULFIL_STATE_DIR=$(CURDIR)/.local/scram \
	FULFIL_KAFKA_LIBS=$(CURDIR)/.local/kafka/libs KAFKA_SECURITY=scram \
	KAFKA_PORT=$${KAFKA_SCRAM_PORT:-$$(( $${KAFKA_PORT:-19092} + 2 ))} \
	KAFKA_CONTROLLER_PORT=$${KAFKA_SCRAM_CONTROLLER_PORT:-$$(( $${KAFKA_PORT:-19092} + 3 ))} $(STACK)
# The whole integration suite (the ACL tests included), every service its own Kafka user.
SCRAM_TESTS = tests/integration

stack-scram: install ## start (or reuse) the SCRAM + ACL broker; prints its settings
	@$(SCRAM_STACK) kafka-up
	@$(SCRAM_STACK) env

test-scram: stack ## the integration suite (ACL tests included) on the SCRAM + ACL broker
	@$(SCRAM_STACK) kafka-up
	@eval "$$($(SCRAM_STACK) env)" && $(UV) run --no-sync pytest -q -p no:cacheprovider $(SCRAM_TESTS)

bench: stack ## benchmarks (prints figures; record them in BENCHMARKS.md)
	@$(PY) -m bench

# BASE=<git ref> and/or REPLICAS=N; ROUNDS (3), ORDERS (400), RATE (paced run, orders/s) and
# BENCH_ARGS (passed on to every `python -m bench`) are optional. See BENCHMARKS.md.
bench-compare: stack ## BASE=<ref> vs the working tree (or REPLICAS=N vs 1), alternating runs: medians + ratios
	@$(PY) -m bench.compare $(if $(BASE),--base '$(BASE)') $(if $(REPLICAS),--replicas $(REPLICAS)) \
		$(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(ORDERS),--orders $(ORDERS)) $(if $(RATE),--rate $(RATE)) $(BENCH_ARGS)

# GIL=1 for py-spy --gil; PROFILE_SERVICES=orders,inventory (default all); ORDERS (1000);
# PROFILE_FORMAT=speedscope|flamegraph|raw. Files in .local/profiles/<stamp>/.
profile: stack ## py-spy on each service under the benchmark's load: flamegraph/speedscope files in .local/profiles/
	@$(PY) -m bench --profile --skip-ceilings --skip-rebuild --orders $(or $(ORDERS),1000) $(if $(GIL),--gil) \
		$(if $(PROFILE_SERVICES),--profile-services $(PROFILE_SERVICES)) \
		$(if $(PROFILE_FORMAT),--profile-format $(PROFILE_FORMAT)) $(BENCH_ARGS)

clean: stop ## stop everything and delete local state (.local)
	rm -rf .local
