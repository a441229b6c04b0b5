#!/usr/bin/env bash
# End-to-end check of `drover fetch-model` (the storage initializer of issue 8) against real
# local servers, run by .ci/run:
#
#   scripts/ci/fetch-e2e.sh            # from anywhere; needs python3 (venv), cargo, curl
#
# 1. A Python venv with scripts/ci/fetch-requirements.txt (moto's S3 server, MLflow,
#    scikit-learn, skops), cached at
#    ${DROVER_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drover}/fetch-venv and reused while the
#    requirements (and the Python version) are unchanged.
# 2. On free loopback ports: moto_server (S3 with IAM authentication on), an MLflow tracking
#    server (SQLite backend, local artifact root, --serve-artifacts), python -m http.server.
#    scripts/ci/fetch_fixtures.py puts the objects into S3 (a model file, a folder, a tar.gz,
#    a tar.gz with a path traversal entry) and registers a scikit-learn model in MLflow (two
#    versions, alias champion -> 1; and one whose files the registry keeps on S3).
# 3. Fetches that must work: s3 object (sha256 checked), s3 prefix, s3 tar.gz unpacked, http,
#    models:/fraud@champion, the same alias pinned to another version (not resolved again),
#    models:/fraud/2, a version stored on S3; the fetched MLflow model is loaded and predicts.
# 4. Fetches that must fail with a non-zero exit and a clear message: wrong sha256, missing
#    object, bad credentials, registry down, unknown alias, HTTP 404, path traversal in an
#    archive. Credentials never appear in the output.
#
# Environment: DROVER_CI_CACHE (cache dir), E2E_KEEP=1 keeps the temp dir. Cargo honours
# CARGO_BUILD_JOBS and CARGO_TARGET_DIR.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
STARTED=$SECONDS

log() { printf '[fetch-e2e %3ss] %s\n' "$((SECONDS - STARTED))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/drover-fetch-e2e.XXXXXX")
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    # The MLflow server runs its workers in its process group.
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    for f in moto.log mlflow.log http.log fixtures.log; do
      if [ -s "$TMP/$f" ]; then
        log "last lines of $f:"
        tail -n 25 "$TMP/$f" >&2
      fi
    done
  fi
  if [ "${E2E_KEEP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------- 1. venv
# shellcheck source=scripts/ci/venv.sh
. "$ROOT/scripts/ci/venv.sh"
ci_venv fetch-venv "$ROOT/scripts/ci/fetch-requirements.txt" 'import mlflow, moto, sklearn, skops, boto3' "MLflow and moto: a few minutes, once"

log "cargo build --bin drover"
cargo build -q --bin drover
DROVER=${CARGO_TARGET_DIR:-$ROOT/target}/debug/drover

# ------------------------------------------------------------------------------ 2. servers
read -r S3_PORT MLFLOW_PORT HTTP_PORT DOWN_PORT < <("$PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)
S3=http://127.0.0.1:$S3_PORT
MLFLOW=http://127.0.0.1:$MLFLOW_PORT
HTTP=http://127.0.0.1:$HTTP_PORT
mkdir -p "$TMP/www/models" "$TMP/mlflow-artifacts" "$TMP/fixtures"

# IAM authentication on after the four requests that create the user and its key.
INITIAL_NO_AUTH_ACTION_COUNT=4 setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" \
  >"$TMP/moto.log" 2>&1 &
PIDS+=("$!")
(cd "$TMP" && exec setsid "$VENV/bin/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" \
  --backend-store-uri "sqlite:///$TMP/mlflow.db" --artifacts-destination "$TMP/mlflow-artifacts" \
  --serve-artifacts --workers 1) >"$TMP/mlflow.log" 2>&1 &
PIDS+=("$!")
setsid "$PY" -m http.server "$HTTP_PORT" --bind 127.0.0.1 --directory "$TMP/www" \
  >"$TMP/http.log" 2>&1 &
PIDS+=("$!")

wait_for() { # wait_for NAME URL|tcp:PORT
  for _ in $(seq 1 120); do
    for pid in "${PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || die "a server (pid $pid) exited while waiting for $1"
    done
    case $2 in
      tcp:*) if (: <"/dev/tcp/127.0.0.1/${2#tcp:}") 2>/dev/null; then return 0; fi ;;
      *) if curl -s -o /dev/null --max-time 2 "$2"; then return 0; fi ;;
    esac
    sleep 0.5
  done
  die "$1 did not answer at $2 within 60 s"
}
# Only a connection: an HTTP request would use up one of moto's unauthenticated actions.
wait_for moto "tcp:$S3_PORT"
wait_for http "$HTTP/"
wait_for mlflow "$MLFLOW/health"
log "servers up: S3 $S3, MLflow $MLFLOW, HTTP $HTTP"

"$PY" "$ROOT/scripts/ci/fetch_fixtures.py" s3 --endpoint "$S3" --out "$TMP/fixtures" \
  >"$TMP/fixtures.log" 2>&1 || die "S3 fixtures (see fixtures.log)"
set -a
# shellcheck disable=SC1091
. "$TMP/fixtures/credentials.env"
set +a
SECRET=$AWS_SECRET_ACCESS_KEY
export AWS_REGION=us-east-1 MLFLOW_S3_ENDPOINT_URL=$S3
# Never ask an instance metadata service, whatever happens.
export AWS_METADATA_ENDPOINT=http://127.0.0.1:$DOWN_PORT AWS_EC2_METADATA_DISABLED=true
log "registering the model in MLflow"
"$PY" "$ROOT/scripts/ci/fetch_fixtures.py" registry --tracking-uri "$MLFLOW" \
  --out "$TMP/fixtures/registry.json" --s3-location "s3://models/mlflow" \
  >>"$TMP/fixtures.log" 2>&1 || die "MLflow fixtures (see fixtures.log)"
log "registry: $(cat "$TMP/fixtures/registry.json")"
cp "$TMP/fixtures/objects/fraud/1.0.0/model.skops" "$TMP/www/models/model.skops"
SUM=$(sha256sum <"$TMP/fixtures/objects/fraud/1.0.0/model.skops" | cut -d' ' -f1)
TAR_SUM=$(sha256sum <"$TMP/fixtures/objects/fraud/1.0.0/model.tar.gz" | cut -d' ' -f1)

# ------------------------------------------------------------------- 3. fetches that work
n=0
fetch() { # fetch NAME ARGS...: must succeed; the dest is $TMP/out/NAME
  local name=$1; shift
  local dest=$TMP/out/$name
  local t0=$SECONDS
  "$DROVER" fetch-model --dest "$dest" "$@" >"$TMP/$name.json" 2>"$TMP/$name.err" ||
    { cat "$TMP/$name.err" >&2; die "$name: fetch-model failed"; }
  n=$((n + 1))
  log "ok   $name ($((SECONDS - t0)) s): $(cat "$TMP/$name.json")"
}
same() { cmp -s "$1" "$2" || die "$1 differs from $2"; }

fetch s3-object --uri s3://models/fraud/1.0.0/model.skops --endpoint "$S3" --sha256 "$SUM"
same "$TMP/out/s3-object/model.skops" "$TMP/fixtures/objects/fraud/1.0.0/model.skops"

fetch s3-prefix --uri s3://models/fraud/folder/ --endpoint "$S3"
same "$TMP/out/s3-prefix/sub/b.bin" "$TMP/fixtures/objects/fraud/folder/sub/b.bin"
same "$TMP/out/s3-prefix/a.json" "$TMP/fixtures/objects/fraud/folder/a.json"

fetch s3-archive --uri s3://models/fraud/1.0.0/model.tar.gz --endpoint "$S3" --unpack \
  --sha256 "$TAR_SUM"
same "$TMP/out/s3-archive/model/model.skops" "$TMP/fixtures/objects/fraud/1.0.0/model.skops"
[ ! -e "$TMP/out/s3-archive/model.tar.gz" ] || die "the archive was left next to the model"

fetch http --uri "$HTTP/models/model.skops" --sha256 "$SUM"
same "$TMP/out/http/model.skops" "$TMP/fixtures/objects/fraud/1.0.0/model.skops"

ALIAS_VERSION=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["aliasVersion"])' "$TMP/fixtures/registry.json")
fetch registry-alias --uri models:/fraud@champion --registry "$MLFLOW"
grep -q "\"version\":\"$ALIAS_VERSION\"" "$TMP/registry-alias.json" || die "the alias did not resolve to version $ALIAS_VERSION"
grep -q '"location":"mlflow-artifacts:/' "$TMP/registry-alias.json" || die "expected a proxied artifact location"
for f in MLmodel model.skops; do
  [ -s "$TMP/out/registry-alias/$f" ] || die "registry-alias: $f missing from the fetched model folder"
done

# What the operator passes: the version it resolved. The alias names 1; 2 must be fetched.
fetch registry-pinned --uri models:/fraud@champion --registry "$MLFLOW" --registry-version 2
grep -q '"version":"2"' "$TMP/registry-pinned.json" || die "--registry-version 2 was not honoured"
cmp -s "$TMP/out/registry-pinned/model.skops" "$TMP/out/registry-alias/model.skops" &&
  die "the pinned version fetched the alias's files"

fetch registry-version --uri models:/fraud/2 --registry "$MLFLOW"
same "$TMP/out/registry-version/model.skops" "$TMP/out/registry-pinned/model.skops"

fetch registry-on-s3 --uri models:/fraud-s3/1 --registry "$MLFLOW" --endpoint "$S3"
grep -q '"location":"s3://models/mlflow/' "$TMP/registry-on-s3.json" || die "expected an s3:// location"
[ -s "$TMP/out/registry-on-s3/MLmodel" ] || die "registry-on-s3: MLmodel missing"

# The model container's view: MODEL_PATH holds a loadable MLflow model.
"$PY" - "$TMP/out/registry-alias" <<'EOF' || die "the fetched MLflow model does not load and predict"
import sys, numpy as np, mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
pred = model.predict(np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]))
assert list(pred) == [1, 0], pred
print("fetched model predicts", list(pred))
EOF
log "ok   the fetched MLflow model loads and predicts"

# --------------------------------------------------------------- 4. fetches that must fail
fails() { # fails NAME EXPECTED-MESSAGE ARGS...: must exit non-zero saying EXPECTED-MESSAGE
  local name=$1 expect=$2; shift 2
  local dest=$TMP/out/$name rc=0
  "$DROVER" fetch-model --dest "$dest" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || rc=$?
  [ "$rc" -ne 0 ] || die "$name: fetch-model exited 0"
  grep -q -- "$expect" "$TMP/$name.err" ||
    { cat "$TMP/$name.err" >&2; die "$name: no \"$expect\" in the message"; }
  if grep -qF -- "$SECRET" "$TMP/$name.err" "$TMP/$name.out"; then
    die "$name: the secret key was printed"
  fi
  n=$((n + 1))
  log "ok   $name fails (exit $rc): $(grep -v '^\s*$' "$TMP/$name.err" | tail -n 1)"
}

fails checksum "checksum mismatch" --uri s3://models/fraud/1.0.0/model.skops --endpoint "$S3" \
  --sha256 "$(printf '0%.0s' $(seq 64))"
[ ! -e "$TMP/out/checksum/model.skops" ] || die "checksum: a model that failed its checksum was installed"
fails missing-object "not found" --uri s3://models/fraud/9.9.9/model.skops --endpoint "$S3"
AWS_SECRET_ACCESS_KEY=not-the-key fails bad-credentials "access denied" \
  --uri s3://models/fraud/1.0.0/model.skops --endpoint "$S3"
AWS_ACCESS_KEY_ID=AKIAUNKNOWN0000000000 fails unknown-key "access denied" \
  --uri s3://models/fraud/1.0.0/model.skops --endpoint "$S3"
fails registry-down "is unavailable" --uri models:/fraud@champion \
  --registry "http://127.0.0.1:$DOWN_PORT"
fails unknown-alias "not found" --uri models:/fraud@nope --registry "$MLFLOW"
fails unknown-version "not found" --uri models:/fraud/99 --registry "$MLFLOW"
fails http-404 "not found" --uri "$HTTP/models/nope.bin"
fails path-traversal "refused archive entry" --uri s3://models/evil/model.tar.gz \
  --endpoint "$S3" --unpack
[ ! -e "$TMP/out/escaped" ] || die "path-traversal: an entry escaped the model folder"
fails bad-uri "not supported" --uri ftp://example/model.bin

log "passed: $n checks in $((SECONDS - STARTED)) s"
