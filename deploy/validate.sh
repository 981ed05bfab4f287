#!/usr/bin/env bash
# Render every kustomization under deploy/kubernetes and validate it offline; lint the Dockerfile.
#
#   deploy/validate.sh
#
# Steps, each fatal on failure:
#   1. hadolint deploy/Dockerfile
#   2. for the base and every overlay: render with kustomize (kubectl's built-in, pinned), then
#      a. validate every object strictly (no unknown fields) against the Kubernetes OpenAPI schemas
#         of each version in K8S_VERSIONS (kubernetes-validate, schemas shipped in the wheel);
#      b. tools/check_manifests.py: references resolve, selectors select, hardening, probes, secrets
#         by reference only, namespace applied, TLS wiring, production image by digest; the
#         Prometheus Operator's ServiceMonitor and PrometheusRule (no schema here): their shape,
#         and that every metric an alert names is one the code under crates/ records.
#
# Tools come from PyPI only (versions pinned in deploy/tools/requirements.txt) and are installed
# once into a virtualenv under $LANYARD_DEPLOY_CACHE (default ~/.cache/lanyard-deploy); later runs
# reuse it and need no network. Needs python3 (3.9+) with the venv module.
#
# Environment:
#   K8S_VERSIONS          Kubernetes versions to validate against (default: "1.31.0 1.37.0",
#                         the oldest this deployment supports and the newest schemas available)
#   LANYARD_DEPLOY_CACHE  tool cache directory
#   LANYARD_RENDER_DIR    keep the rendered manifests there (default: a temporary directory)
#   PYTHON                interpreter used to create the virtualenv (default: python3)
set -euo pipefail

deploy_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kustomize_root="$deploy_dir/kubernetes"
repo_dir="$(dirname "$deploy_dir")"
k8s_versions="${K8S_VERSIONS:-1.31.0 1.37.0}"

log() { printf '==> %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------------
# shellcheck source=tools/venv.sh
source "$deploy_dir/tools/venv.sh"
kubectl="$venv/bin/kubectl"
hadolint="$venv/bin/hadolint"
validate="$venv/bin/kubernetes-validate"
vpython="$venv/bin/python"
log "tools: $("$kubectl" version --client 2>/dev/null | tr '\n' ' '); hadolint $("$hadolint" --version | awk '{print $NF}'); kubernetes-validate $("$validate" --version)"

if [[ -n "${LANYARD_RENDER_DIR:-}" ]]; then
  render_dir="$LANYARD_RENDER_DIR"
  mkdir -p "$render_dir"
else
  render_dir="$(mktemp -d)"
  trap 'rm -rf "$render_dir"' EXIT
fi

failures=0

# --- Dockerfile ----------------------------------------------------------------------------------
log "hadolint deploy/Dockerfile"
if "$hadolint" --no-color --failure-threshold info "$deploy_dir/Dockerfile"; then
  echo "deploy/Dockerfile: no hadolint findings"
else
  failures=$((failures + 1))
fi

# --- kustomizations ------------------------------------------------------------------------------
targets=("base")
for overlay in "$kustomize_root"/overlays/*/; do
  [[ -f "$overlay/kustomization.yaml" ]] && targets+=("overlays/$(basename "$overlay")")
done
[[ ${#targets[@]} -gt 1 ]] || die "no overlays found under $kustomize_root/overlays"

for target in "${targets[@]}"; do
  dir="$kustomize_root/$target"
  out="$render_dir/${target//\//-}.yaml"
  log "render $target"
  if ! "$kubectl" kustomize "$dir" >"$out"; then
    printf 'ERROR %s: kustomize could not render it\n' "$target"
    failures=$((failures + 1))
    continue
  fi
  printf '%s: rendered %s objects\n' "$target" "$(grep -c '^kind:' "$out")"
  # The Prometheus Operator's kinds have no Kubernetes schema: check_manifests.py checks them.
  core="$render_dir/${target//\//-}.core.yaml"
  "$vpython" -c 'import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and not d["apiVersion"].startswith("monitoring.coreos.com/")]
yaml.safe_dump_all(docs, open(sys.argv[2], "w"), sort_keys=False)' "$out" "$core"

  for version in $k8s_versions; do
    log "schema-validate $target against Kubernetes $version (strict)"
    # kubernetes-validate exits 0 for a kind it has no schema for, with a WARN: treat that as failure.
    if ! report="$("$validate" --strict --quiet --kubernetes-version "$version" "$core" 2>&1)"; then
      printf '%s\n' "$report"
      failures=$((failures + 1))
    elif [[ -n "$report" ]]; then
      printf '%s\n' "$report"
      if grep -q '^\(WARN\|ERROR\)' <<<"$report"; then failures=$((failures + 1)); fi
    else
      printf '%s: valid against Kubernetes %s\n' "$target" "$version"
    fi
  done

  log "check $target (tools/check_manifests.py)"
  extra=()
  [[ "$target" == "base" ]] && extra+=(--allow-untagged-images)
  # What runs in production is pinned by digest.
  [[ "$target" == "overlays/production" || "$target" == "overlays/monitoring" ]] && extra+=(--require-digest)
  "$vpython" "$deploy_dir/tools/check_manifests.py" "${extra[@]}" --metrics-from="$repo_dir/crates" "$out" "$dir" ||
    failures=$((failures + 1))
done

if ((failures > 0)); then
  die "$failures check(s) failed"
fi
printf 'OK: Dockerfile lint, %d kustomizations rendered, schema-valid against Kubernetes %s, checks passed\n' \
  "${#targets[@]}" "${k8s_versions// /, }"
