# rollgate — one entry point. `make demo` shows it working; `make test` is what CI runs.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Slow artefacts are cached outside the repository, keyed by version (see scripts/lib.sh).
export ROLLGATE_CACHE ?= $(HOME)/.cache/rollgate
export CARGO_TARGET_DIR ?= $(shell . scripts/lib.sh && echo $$CARGO_TARGET_DIR)
CARGO ?= cargo

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## check the toolchain and install missing system packages
	@command -v $(CARGO) >/dev/null || { echo "error: Rust is required: install it with rustup (https://rustup.rs), then run make again" >&2; exit 1; }
	@. scripts/lib.sh && apt_install curl

.PHONY: test
test: deps lint crds-check reference-check chart-check bench-gate-check unit ## everything CI checks: format, clippy, generated files and tables, all tests

.PHONY: lint
lint: ## cargo fmt --check and clippy with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy -p rollgate-e2e --features e2e --all-targets --locked -- -D warnings

.PHONY: unit
unit: ## unit and integration tests of every crate
	$(CARGO) test --workspace --locked

.PHONY: crds
crds: ## regenerate manifests/crds/ (and the chart's copy) from the Rust types
	$(CARGO) run -q --locked -p rollgate -- crds > manifests/crds/rollgate.yaml
	cp manifests/crds/rollgate.yaml charts/rollgate/crds/rollgate.yaml

.PHONY: crds-check
crds-check: ## fail when manifests/crds/ is stale
	@$(CARGO) run -q --locked -p rollgate -- crds | diff -u manifests/crds/rollgate.yaml - \
	  || { echo "manifests/crds/rollgate.yaml is stale: run make crds" >&2; exit 1; }
	@diff -u manifests/crds/rollgate.yaml charts/rollgate/crds/rollgate.yaml \
	  || { echo "charts/rollgate/crds/ is stale: run make crds" >&2; exit 1; }

.PHONY: reference
reference: ## regenerate docs/reference.md (the spec reference) from the CRD schema
	$(CARGO) run -q --locked -p rollgate -- crds --reference > docs/reference.md

.PHONY: reference-check
reference-check: ## fail when docs/reference.md is stale
	@$(CARGO) run -q --locked -p rollgate -- crds --reference | diff -u docs/reference.md - \
	  || { echo "docs/reference.md is stale: run make reference" >&2; exit 1; }

.PHONY: chart-check
chart-check: ## helm lint and helm template of charts/rollgate; its RBAC rules are manifests/controller/ rules
	bash scripts/chart-check.sh

.PHONY: demo
demo: deps ## the product end to end: local control plane, v2 promoted, v3 rolled back (root)
	bash scripts/demo.sh

.PHONY: demo-refserver
demo-refserver: deps ## refserver alone: traffic, metrics, faults by hot reload, graceful stop
	bash scripts/demo-refserver.sh

.PHONY: bench
bench: deps ## refserver vs bare hyper, Go net/http and fasthttp: requests/s (wrk) and CPU per request at a fixed rate (a report, not a test)
	bash scripts/bench-refserver.sh

.PHONY: bench-h2
bench-h2: deps ## the same over HTTP/2 + TLS 1.3: refserver vs bare hyper and Go net/http, requests/s (h2load) and CPU per request (a report)
	bash scripts/bench-refserver-h2.sh

.PHONY: bench-scale
bench-scale: deps ## the controller at ROLLOUTS (1 000) Rollouts, REPLICAS replicas, on the local control plane: latency, CPU, memory (root; a report)
	REPLICAS=$(REPLICAS) SHARDS=$(SHARDS) PODS=$(PODS) bash scripts/bench-scale.sh $(ROLLOUTS)

.PHONY: bench-cpu
bench-cpu: deps ## CPU of one active rollout: rollgate beside Flagger v1.36.1 at the same interval and traffic (root; a report)
	WINDOW=$(WINDOW) bash scripts/bench-cpu.sh

BENCH_GATE = $(CARGO) run -q --release --locked -p rollgate-gate-bench -- --runs 1000 --seed 20261127

.PHONY: bench-gate
bench-gate: ## verdict quality of the gate vs Flagger/Argo-style rules; writes the table into docs/gate.md
	$(BENCH_GATE) --update docs/gate.md

.PHONY: bench-gate-check
bench-gate-check: ## fail when the table in docs/gate.md is not what `make bench-gate` reproduces
	tmp=$$(mktemp); cp docs/gate.md "$$tmp"; trap 'rm -f "$$tmp"' EXIT; \
	$(BENCH_GATE) --update "$$tmp"; \
	diff -u docs/gate.md "$$tmp" || { echo "docs/gate.md: the benchmark table is stale; run make bench-gate" >&2; exit 1; }

.PHONY: e2e
e2e: deps ## the end-to-end suite on the local control plane (needs root; builds what is missing)
	bash e2e/scripts/run-e2e.sh

.PHONY: images
images: deps ## container images FROM scratch with buildah (rollgate, refserver, podinfo, coredns, pause): OCI archives in the cache
	bash scripts/images.sh

.PHONY: cluster-up
cluster-up: ## start the local control plane and leave it running (source the printed env file)
	bash e2e/scripts/cluster.sh up

.PHONY: cluster-down
cluster-down: ## stop the local control plane
	bash e2e/scripts/cluster.sh down

.PHONY: toolchain
toolchain: ## build (or reuse) the control-plane binaries from Go modules
	bash e2e/scripts/build-toolchain.sh
