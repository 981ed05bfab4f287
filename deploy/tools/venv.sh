# Sourced by deploy/validate.sh and deploy/run-manifests.sh: the tools' virtualenv.
#
# Tools come from PyPI only (versions pinned in deploy/tools/requirements.txt) and are installed
# once into a virtualenv under $LANYARD_DEPLOY_CACHE (default ~/.cache/lanyard-deploy); later runs
# reuse it and need no network. One virtualenv per (requirements, interpreter): changing a pin
# builds a fresh one beside the old. Sets $venv; needs $deploy_dir, log and die.
requirements="$deploy_dir/tools/requirements.txt"
cache_dir="${LANYARD_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lanyard-deploy}"
python="${PYTHON:-python3}"
py_id="$("$python" -c 'import sys, platform; print(sys.version.split()[0], platform.machine())')"
venv_key="$( { cat "$requirements"; echo "$py_id"; } | sha256sum | cut -c1-16)"
venv="$cache_dir/venv-$venv_key"
if [[ ! -f "$venv/.installed" ]]; then
  log "installing the deploy tools into $venv (from PyPI, pinned in tools/requirements.txt)"
  rm -rf "$venv"
  mkdir -p "$cache_dir"
  "$python" -m venv "$venv" || die "could not create a virtualenv with $python (Debian: apt-get install python3-venv)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --requirement "$requirements"
  touch "$venv/.installed"
fi
