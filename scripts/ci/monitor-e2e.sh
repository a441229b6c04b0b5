#!/usr/bin/env bash
# End-to-end check of `drover monitor` in front of the example FastAPI fraud model
# (examples/models/fraud), run by .ci/run after `cargo test`.
#
#   scripts/ci/monitor-e2e.sh            # from anywhere; needs python3 (venv), cargo, curl
#
# 1. A Python venv with the example's requirements, cached at
#    ${DROVER_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drover}/fraud-venv and reused while the
#    requirements (and the Python version) are unchanged; the model is trained into a temp dir.
# 2. uvicorn serves the model, `drover monitor` proxies it; both on free loopback ports.
# 3. Window A: 1500 unshifted requests (5 % malformed); window B: 1500 requests with
#    amount x3 and distance_km x5. A report is fetched after each window.
#    Windows C and D (E2E_STEADY_REQUESTS each, default 600) repeat B's shift for the
#    steady-state watch.
# 4. scripts/ci/check_monitor_report.py checks the reports, `drover drift` on each window, the
#    counts against traffic.py's summaries, the latency sketch and /metrics; promtool checks
#    /metrics where it is available (installed from Debian under CI=true, skipped if that fails).
#    `drover steady` replays the reports (empty, A, B, C, D) through the planner with
#    examples/retraining.yaml: DriftDetected at D on exactly the shifted features, one
#    retraining Job.
#
# Environment: DROVER_CI_CACHE (cache dir), E2E_REQUESTS (requests per window, default 1500),
# E2E_SHIFT (window B's shifts, default "amount=3.0 distance_km=5.0"), E2E_EXPECT_DRIFT (the
# features that must drift in window B, exactly; default "amount,distance_km"), E2E_KEEP=1 keeps
# the temp dir. Cargo honours CARGO_BUILD_JOBS.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
FRAUD=$ROOT/examples/models/fraud
STARTED=$SECONDS
REQUESTS=${E2E_REQUESTS:-1500}
SHIFT=${E2E_SHIFT:-amount=3.0 distance_km=5.0}
EXPECT_DRIFT=${E2E_EXPECT_DRIFT:-amount,distance_km}

log() { printf '[monitor-e2e %3ss] %s\n' "$((SECONDS - STARTED))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/drover-monitor-e2e.XXXXXX")
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # Bounded: escalate if a process ignores SIGTERM.
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    for f in uvicorn.log monitor.log; do
      if [ -s "$TMP/$f" ]; then
        log "last lines of $f:"
        tail -n 25 "$TMP/$f" >&2
      fi
    done
  fi
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "kept $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Runs a step in the background and waits for it: bash defers traps while a foreground child
# runs, so this lets INT/TERM reach the trap at once, and the step is killed with the rest.
run() {
  "$@" &
  local pid=$! rc=0
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  unset 'PIDS[-1]'
  return "$rc"
}

# ---------------------------------------------------------------------------------- 1. venv
# shellcheck source=scripts/ci/venv.sh
. "$ROOT/scripts/ci/venv.sh"
ci_venv fraud-venv "$FRAUD/requirements.txt" 'import fastapi, uvicorn, sklearn, pandas, httpx'

log "training the model into $TMP/artifacts"
run "$PY" "$FRAUD/train.py" --out "$TMP/artifacts" >"$TMP/train.json"
log "trained: $(cat "$TMP/train.json")"

# ------------------------------------------------------------------- 2. model and monitor
log "cargo build --bin drover"
cargo build -q --bin drover
DROVER=${CARGO_TARGET_DIR:-$ROOT/target}/debug/drover

read -r MODEL_PORT SERVE_PORT ADMIN_PORT < <("$PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)
SERVE=http://127.0.0.1:$SERVE_PORT
ADMIN=http://127.0.0.1:$ADMIN_PORT

"$PY" -c 'import secrets; print(secrets.token_hex(24))' >"$TMP/token"
printf 'Authorization: Bearer %s\n' "$(cat "$TMP/token")" >"$TMP/auth-header"

# uvicorn keeps its default 5 s keep-alive: the monitor's pool drops idle connections after 1 s
# and retries once a request the model dropped on a reused connection (proxy::upstream_client).
MODEL_PATH=$TMP/artifacts/model.joblib "$PY" -m uvicorn app:app --app-dir "$FRAUD" \
  --host 127.0.0.1 --port "$MODEL_PORT" --no-access-log \
  >"$TMP/uvicorn.log" 2>&1 &
PIDS+=("$!")
RUST_LOG=${RUST_LOG:-info} "$DROVER" monitor \
  --listen "127.0.0.1:$SERVE_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --upstream "127.0.0.1:$MODEL_PORT" --profile "$TMP/artifacts/profile.json" \
  --report-token-file "$TMP/token" --model-version 1.0.0 --model-health-path /health \
  >"$TMP/monitor.log" 2>&1 &
PIDS+=("$!")

log "waiting for $ADMIN/readyz (model on :$MODEL_PORT, monitor on :$SERVE_PORT)"
ready=0
for _ in $(seq 1 60); do
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a background process (pid $pid) exited before readiness"
  done
  if curl -fs -o /dev/null --max-time 3 "$ADMIN/readyz"; then ready=1; break; fi
  sleep 0.5
done
[ "$ready" = 1 ] || die "the monitor was not ready after 60 polls of $ADMIN/readyz"
log "ready"

fetch() { # fetch PATH OUT: an authorised GET on the admin port
  curl -fsS --max-time 10 -H "@$TMP/auth-header" -o "$2" "$ADMIN$1" || die "GET $1 failed"
}
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$ADMIN/drover/report")
[ "$status" = 401 ] || die "GET /drover/report without the token answered $status, not 401"

# ----------------------------------------------------------------------------- 3. traffic
shift_flags=()
for s in $SHIFT; do shift_flags+=(--shift "$s"); done

fetch /drover/report "$TMP/report-0.json"

log "window A: $REQUESTS unshifted requests, 5 % malformed"
run "$PY" "$FRAUD/traffic.py" --url "$SERVE" --requests "$REQUESTS" --seed 1 --malformed 0.05 \
  >"$TMP/traffic-a.json"
fetch /drover/report "$TMP/report-a.json"

log "window B: $REQUESTS requests with ${shift_flags[*]}, 5 % malformed"
run "$PY" "$FRAUD/traffic.py" --url "$SERVE" --requests "$REQUESTS" --seed 2 "${shift_flags[@]}" \
  --malformed 0.05 >"$TMP/traffic-b.json"
fetch /drover/report "$TMP/report-b.json"
fetch /metrics "$TMP/metrics.txt"

STEADY_REQUESTS=${E2E_STEADY_REQUESTS:-600}
for w in c d; do
  log "window ${w^^}: $STEADY_REQUESTS requests with ${shift_flags[*]} (the steady-state watch)"
  run "$PY" "$FRAUD/traffic.py" --url "$SERVE" --requests "$STEADY_REQUESTS" --seed "$((RANDOM + 3))" \
    "${shift_flags[@]}" --malformed 0.05 >"$TMP/traffic-$w.json"
  fetch /drover/report "$TMP/report-$w.json"
done

# ------------------------------------------------------------------------------ 4. checks
PROFILE=$TMP/artifacts/profile.json
"$DROVER" drift --profile "$PROFILE" --report "$TMP/report-a.json" \
  --threshold 0.2 --min-samples 100 >"$TMP/drift-a.json"
"$DROVER" drift --profile "$PROFILE" --report "$TMP/report-b.json" --baseline "$TMP/report-a.json" \
  --threshold 0.2 --min-samples 100 >"$TMP/drift-b.json"

"$PY" "$ROOT/scripts/ci/check_monitor_report.py" \
  --profile "$PROFILE" \
  --report-a "$TMP/report-a.json" --report-b "$TMP/report-b.json" \
  --traffic-a "$TMP/traffic-a.json" --traffic-b "$TMP/traffic-b.json" \
  --drift-a "$TMP/drift-a.json" --drift-b "$TMP/drift-b.json" \
  --metrics "$TMP/metrics.txt" --prometheus-text-out "$TMP/metrics.prom" \
  --expect-drift "$EXPECT_DRIFT" --threshold 0.2

# `drover profile` on the real training CSV agrees with the profile train.py built with numpy:
# the same bins and counts, means and standard deviations to rounding.
"$DROVER" profile --input "$TMP/artifacts/train.csv" --target label --prediction prediction \
  --model-version 1.0.0 >"$TMP/profile-rust.json"
"$PY" - "$TMP/profile-rust.json" "$PROFILE" <<'PYEOF' || die "drover profile disagrees with train.py's profile"
import json, math, sys
ours, theirs = (json.load(open(p)) for p in sys.argv[1:3])
assert ours["modelVersion"] == theirs["modelVersion"]
assert [f["name"] for f in ours["features"]] == [f["name"] for f in theirs["features"]]
for a, b in zip(ours["features"], theirs["features"]):
    n = a["name"]
    assert a["kind"] == b["kind"], n
    assert a["count"] == b["count"] and a["counts"] == b["counts"], n
    if a["kind"] == "numeric":
        assert len(a["edges"]) == len(b["edges"]), n
        assert all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a["edges"], b["edges"])), n
        for k in ("mean", "std"):
            assert math.isclose(a[k], b[k], rel_tol=1e-9), (n, k)
    else:
        assert a["categories"] == b["categories"], n
print(f"profile: drover profile matches train.py on {len(ours['features'])} features")
PYEOF

# The steady-state watch (issue 6), fed from this monitor's reports: the planner judges each
# window as the operator would, with examples/retraining.yaml (consecutiveWindows 3). Windows:
# A clean, B C D shifted. DriftDetected must come at D, on the shifted features only, and the
# planner must start exactly one retraining Job.
"$DROVER" steady -f "$ROOT/examples/retraining.yaml" --profile "$PROFILE" --json \
  --report "$TMP/report-0.json" "$TMP/report-a.json" "$TMP/report-b.json" \
  "$TMP/report-c.json" "$TMP/report-d.json" >"$TMP/steady.json"
"$PY" - "$TMP/steady.json" "$EXPECT_DRIFT" <<'PYEOF' || die "the steady-state watch did not decide as expected (see $TMP/steady.json)"
import json, sys
rows = json.load(open(sys.argv[1]))
expect = set(sys.argv[2].split(","))
def fail(msg):
    print(json.dumps(rows, indent=2), file=sys.stderr)
    sys.exit(f"steady: {msg}")
if len(rows) != 4:
    fail(f"{len(rows)} windows, expected 4")
if rows[0]["verdict"] != "clean" or rows[0]["driftedFeatures"]:
    fail(f"window A (unshifted) judged {rows[0]['verdict']} {rows[0]['driftedFeatures']}")
for r in rows[1:]:
    if set(r["driftedFeatures"]) != expect:
        fail(f"window {r['window']} drifted on {r['driftedFeatures']}, expected exactly {sorted(expect)}")
if [r["driftDetected"] for r in rows] != ["False", "False", "False", "True"]:
    fail(f"DriftDetected went {[r['driftDetected'] for r in rows]}, expected True at the third shifted window only")
jobs = [j for r in rows for j in r["jobsCreated"]]
if len(jobs) != 1 or rows[3]["jobsCreated"] != jobs:
    fail(f"retraining Jobs {jobs}, expected exactly one, at window D")
if "DriftDetected" not in rows[3]["events"] or "RetrainingStarted" not in rows[3]["events"]:
    fail(f"window D events {rows[3]['events']}")
print(f"steady: DriftDetected at window D on {sorted(expect)}; one retraining Job {jobs[0]}")
PYEOF
log "steady-state watch: ok"

# promtool: Prometheus's own parser and linter over /metrics. Installed only under CI; an apt
# outage skips this one check rather than failing CI. `promtool check metrics` reads the
# classic text format (0.0.4) only; /metrics is OpenMetrics 1.0, whose counter family `x` has
# samples `x_total` (text format: family `x_total`) and which ends with `# EOF`. Fed raw, promtool
# parses it but lints every counter as "no help text". So it checks the checker's text-format
# rendering (counter HELP/TYPE renamed to `x_total`, `# EOF` dropped: nothing else changes; the
# checker verifies counter families hold only `x_total` samples).
if ! command -v promtool >/dev/null && [ "${CI:-}" = true ]; then
  log "installing promtool (apt-get install prometheus)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >"$TMP/apt.log" 2>&1; then
    log "WARNING: could not install prometheus (see below); skipping promtool check metrics"
    tail -n 5 "$TMP/apt.log" >&2
  fi
fi
if command -v promtool >/dev/null; then
  promtool check metrics <"$TMP/metrics.prom" || die "promtool check metrics rejected /metrics (as text format: $TMP/metrics.prom)"
  log "promtool check metrics: ok"
else
  log "promtool not available: /metrics not checked by promtool"
fi

log "passed in $((SECONDS - STARTED)) s"
