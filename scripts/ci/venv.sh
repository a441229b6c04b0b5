# shellcheck shell=bash
# Sourced by the CI scripts: a cached Python virtualenv per requirements file.
#
#   ci_venv NAME REQUIREMENTS "import a, b" "what installing costs"
#
# creates or reuses ${DROVER_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drover}/NAME, keyed by
# the requirements file and the Python version (and checked by importing the packages), and
# sets VENV to it and PY to its python. One writer at a time: concurrent CI runs on one machine share the
# cache. The caller defines log().
ci_venv() {
  local name=$1 requirements=$2 imports=$3 cost=${4:-}
  local cache=${DROVER_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drover}
  local want
  VENV=$cache/$name
  mkdir -p "$cache"
  want=$({ sha256sum <"$requirements"; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
  (
    flock 9
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.requirements-hash" 2>/dev/null)" = "$want" ] &&
      "$VENV/bin/python" -c "$imports" 2>/dev/null; then
      log "reusing the venv $VENV"
    else
      log "creating the venv $VENV${cost:+ ($cost)}"
      rm -rf "$VENV"
      python3 -m venv "$VENV"
      "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
      echo "$want" >"$VENV/.requirements-hash"
    fi
  ) 9>"$cache/$name.lock"
  # shellcheck disable=SC2034 # read by the caller
  PY=$VENV/bin/python
}
