#!/usr/bin/env bash
# Start the rendered overlays here, as a cluster would run them, and tell them a short story.
#
#   deploy/run-manifests.sh [production] [dev]     (default: both)
#   deploy/run-manifests.sh --self-check           (also: each breakage below must fail the run)
#
# For each overlay: render it with kustomize (kubectl's built-in, pinned like validate.sh's), then
# tools/run_manifests.py starts the locally built `lanyard` for every container that runs the image
# (migration Job and init containers first, then each Deployment) with exactly the environment,
# arguments and mounted files the manifests give it, Secrets from tools/test-values.yaml, Service
# names mapped to loopback ports. The Job must exit 0, every Deployment must pass its probes, then
# tools/story.py calls the services through their Services' addresses. Any missing key, wrong
# port, unknown setting or failed call fails the run.
#
# Needs Postgres on 127.0.0.1:5432 (trust auth, user postgres: a fresh database per run, dropped
# after) and Redis on 127.0.0.1:6379, plus psql.
#
# Environment:
#   LANYARD_BIN           the binary to start (default: build target/debug/lanyard with cargo)
#   LANYARD_DEPLOY_CACHE  tool cache directory (see validate.sh)
#   PYTHON                interpreter used to create the virtualenv (default: python3)
set -euo pipefail

deploy_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$deploy_dir")"
self_check=false
overlays=()
for arg in "$@"; do
  if [[ "$arg" == --self-check ]]; then self_check=true; else overlays+=("$arg"); fi
done
[[ ${#overlays[@]} -gt 0 ]] || overlays=(production dev)

log() { printf '==> %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# shellcheck source=tools/venv.sh
source "$deploy_dir/tools/venv.sh"
command -v psql >/dev/null || die "psql is needed to create and drop the test database (apt-get install postgresql-client)"

binary="${LANYARD_BIN:-}"
if [[ -z "$binary" ]]; then
  log "cargo build -p lanyard"
  (cd "$repo_dir" && cargo build --locked -p lanyard)
  binary="$repo_dir/target/debug/lanyard"
fi
[[ -x "$binary" ]] || die "no binary at $binary"

render_dir="$(mktemp -d)"
trap 'rm -rf "$render_dir"' EXIT
run() {
  "$venv/bin/python" "$deploy_dir/tools/run_manifests.py" \
    --rendered "$render_dir/$1.yaml" --overlay "$1" --binary "$binary" \
    --values "$deploy_dir/tools/test-values.yaml" --dockerfile "$deploy_dir/Dockerfile" \
    --proto-dir "$repo_dir/proto" "${@:2}"
}
for overlay in "${overlays[@]}"; do
  log "render overlays/$overlay"
  "$venv/bin/kubectl" kustomize "$deploy_dir/kubernetes/overlays/$overlay" >"$render_dir/$overlay.yaml"
  run "$overlay"
done
if $self_check; then
  # The run is only worth something if it fails on the mistakes it claims to catch.
  [[ -f "$render_dir/production.yaml" ]] ||
    "$venv/bin/kubectl" kustomize "$deploy_dir/kubernetes/overlays/production" >"$render_dir/production.yaml"
  for breakage in missing-secret-key wrong-target-port wrong-service-port dead-setting probe-on-wrong-service \
    cleartext-peer tls-secret-without-key; do
    if run production --break "$breakage" >"$render_dir/$breakage.log" 2>&1; then
      cat "$render_dir/$breakage.log"
      die "self-check: the run passed with $breakage"
    fi
    printf 'self-check: %s fails the run: %s\n' "$breakage" "$(grep -m1 '^FAIL' "$render_dir/$breakage.log")"
  done
fi
printf 'OK: %s started from their manifests and passed the story%s\n' "${overlays[*]}" \
  "$($self_check && echo '; every self-check breakage failed the run')"
