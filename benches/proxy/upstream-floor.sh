#!/usr/bin/env bash
# Why the proxy benchmark's upstream cannot be 3x faster than a proxy on one core: the CPU per
# request of the cheapest possible upstream (floor-upstream.c: epoll, one read and one write per
# request, no HTTP work) and of the benchmark's nginx upstream, each alone on PROXY_CORE, against
# `drover monitor` on PROXY_CORE in front of the floor upstream (which then shares LOAD_CORE
# with wrk). Per request the proxy does the socket work of two connections, the upstream of one,
# so the ratio stays near 2 whatever the upstream does.
#
#   benches/proxy/upstream-floor.sh      # needs cc, nginx, wrk and target/release/drover
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=benches/proxy/common.sh
. "$here/common.sh"
DROVER_BIN="${DROVER_BIN:-$repo/target/release/drover}"
LOAD_CORE="${LOAD_CORE:-0}"
PROXY_CORE="${PROXY_CORE:-1}"
PORT="${PORT:-29180}"
MONITOR_PORT="${MONITOR_PORT:-29181}"
ADMIN_PORT="${ADMIN_PORT:-29191}"
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"

make_work drover-upstream-floor
cc -O2 -o "$work/floor-upstream" "$here/floor-upstream.c"
[ -x "$DROVER_BIN" ] || { log "no drover binary at $DROVER_BIN (cargo build --release)"; exit 1; }
# us of CPU per request of the processes given, under wrk (64 connections) on LOAD_CORE.
measure() { # url pids...
    local url=$1 before after requests
    shift
    taskset -c "$LOAD_CORE" wrk -t1 -c64 -d1s -s "$here/post.lua" "$url" >/dev/null
    before=$(cpu_ticks "$@")
    taskset -c "$LOAD_CORE" wrk -t1 -c64 -d"${DURATION}s" -s "$here/post.lua" "$url" >"$work/wrk.txt"
    after=$(cpu_ticks "$@")
    requests=$(sed -n 's/^WRKSTATS requests=\([0-9]*\).*/\1/p' "$work/wrk.txt")
    python3 -c "import sys; print(f'{($after - $before) / $(getconf CLK_TCK) * 1e6 / $requests:.2f}')"
}
stop() { kill "$@" 2>/dev/null || true; wait "$@" 2>/dev/null || true; }

sed -e "s#@PREFIX@#$work#g" -e "s#@UPSTREAM_PORT@#$PORT#g" -e "s#@UPSTREAM_WORKERS@#1#g" \
    "$here/upstream.conf.in" >"$work/upstream.conf"
floor=() nginx=() monitor=()
for round in $(seq 1 "$ROUNDS"); do
    taskset -c "$PROXY_CORE" "$work/floor-upstream" "$PORT" & pid=$!; pids+=("$pid")
    wait_for "http://127.0.0.1:$PORT/health"
    floor+=("$(measure "http://127.0.0.1:$PORT/predict" "$pid")")
    stop "$pid"

    taskset -c "$PROXY_CORE" nginx -p "$work" -c "$work/upstream.conf" -e "$work/error.log" & pid=$!; pids+=("$pid")
    wait_for "http://127.0.0.1:$PORT/health"
    # shellcheck disable=SC2046
    nginx+=("$(measure "http://127.0.0.1:$PORT/predict" "$pid" $(pgrep -P "$pid"))")
    stop "$pid"

    taskset -c "$LOAD_CORE" "$work/floor-upstream" "$PORT" & upid=$!; pids+=("$upid")
    wait_for "http://127.0.0.1:$PORT/health"
    taskset -c "$PROXY_CORE" "$DROVER_BIN" --log-level warn monitor --listen "127.0.0.1:$MONITOR_PORT" \
        --admin-listen "127.0.0.1:$ADMIN_PORT" --upstream "127.0.0.1:$PORT" \
        --profile "$repo/examples/models/fraud/profile.json" --threads 1 >/dev/null 2>&1 & pid=$!; pids+=("$pid")
    wait_for "http://127.0.0.1:$ADMIN_PORT/healthz"
    monitor+=("$(measure "http://127.0.0.1:$MONITOR_PORT/predict" "$pid")")
    stop "$pid" "$upid"
    log "round $round: CPU us per request: floor upstream ${floor[-1]}, nginx upstream ${nginx[-1]}, drover monitor ${monitor[-1]}"
done
python3 - "${floor[*]}" "${nginx[*]}" "${monitor[*]}" <<'PY'
import statistics, sys
floor, nginx, monitor = ([float(x) for x in a.split()] for a in sys.argv[1:])
f, n, m = statistics.median(floor), statistics.median(nginx), statistics.median(monitor)
print(f"CPU per request (median of {len(floor)} rounds): floor upstream {f:.2f} us, "
      f"nginx upstream {n:.2f} us, drover monitor {m:.2f} us")
print(f"capacity of one core, upstream / monitor: floor {m / f:.2f}x, nginx {m / n:.2f}x "
      f"(the issue's 3x needs more than one upstream core)")
PY
