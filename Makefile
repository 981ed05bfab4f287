# The commands the README documents. Each target is a line or two; the scripts hold the logic.
.DEFAULT_GOAL := help
.PHONY: help run test e2e lint fmt bench fuzz deny proto-lint deploy-lint deploy-run ci

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

run: ## Run all three services in one process on the embedded default (SQLite in ./data)
	cargo run --locked -p lanyard -- serve

test: ## Run every test (Postgres-backed ones too when a server answers; required under CI)
	scripts/test

e2e: ## Sign-in end to end against real peers: oidc-provider, openid-client, Authlib, Chromium (e2e/README.md)
	scripts/e2e

lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	cargo fmt --all

bench: ## Benchmark Authorize against a no-op gRPC floor, release build, checked with h2load (flags in BENCH_ARGS; BENCHMARKS.md)
	@command -v h2load >/dev/null 2>&1 || apt-get install -y -q nghttp2-client || \
		echo "bench: h2load could not be installed; the report says what it could not check"
	cargo run --release --locked -p lanyard-bench -- $(BENCH_ARGS)

fuzz: ## Run every cargo-fuzz target for FUZZ_SECONDS each (default 60; nightly, installs cargo-fuzz)
	scripts/fuzz

deny: ## cargo-deny: licenses, banned crates, duplicate versions, sources (ARGS=advisories online)
	scripts/deny $(ARGS)

proto-lint: ## buf lint (STANDARD) on proto/
	scripts/proto-lint

deploy-lint: ## Render and validate the Kubernetes manifests and lint the Dockerfile, offline
	deploy/validate.sh

deploy-run: ## Start the overlays here from their manifests (local Postgres, Redis) and run a story
	deploy/run-manifests.sh --self-check

ci: ## What CI runs
	bash .ci/run
