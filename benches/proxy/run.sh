#!/usr/bin/env bash
# Proxy benchmark: `drover monitor` against nginx as a plain reverse proxy, in one run, on the
# same upstream, on loopback only.
#
#   benches/proxy/run.sh                 # build the release binary, then measure
#   ROUNDS=3 DURATION=10 CONNECTIONS=64 benches/proxy/run.sh
#   DROVER_BIN=/path/to/drover SKIP_BUILD=1 benches/proxy/run.sh   # measure another build
#
# Layout (cores as taskset lists; each overridable): the proxy under test alone on PROXY_CORE
# (`drover monitor --threads 1`, nginx `worker_processes 1`), wrk on LOAD_CORES (one thread per
# core), the upstream (nginx answering a fixed JSON prediction, one worker per core) on
# UPSTREAM_CORES. By machine size:
#   2 cores:   wrk and the upstream share core 0, the proxy on core 1;
#   3-5 cores: wrk on core 0, the proxy on core 1, the upstream on core 2;
#   6+ cores:  wrk on cores 0-1, the proxy on core 2, the upstream on cores 3-5.
# The saturated p99 is the proxies' own only when the load side is not what paces the run: the
# upstream on cores of its own and at least 3x either proxy's capacity (what the issue asks
# for). Per request a proxy does the socket work of two connections where the upstream does
# one, so one upstream core is only ~2x a proxy core and the 3x needs 3 upstream cores, i.e.
# a machine with 6 or more; on smaller ones the saturated p99 is shown as informational. The
# direct run (wrk -> upstream) measures what the load side can drive; the table shows each
# proxy's CPU per request on its own core, how busy that core was, and the capacity that gives
# (1e6 / CPU us per request): a comparison the load side cannot cap.
#
# Each target is measured ROUNDS times, interleaved (direct, monitor, nginx, direct, ...), and
# the table shows the median of each figure. Then the same again with every connection pacing
# itself (PACED_DELAY_MS between requests, 1 ms by default): the same offered load for every
# target, below saturation, where the added p99 compares the proxies rather than the load
# side's core. Then side by side (SIDE_BY_SIDE=0 skips): the monitor and nginx driven at the
# same time on the proxy core, so the machine's drift (CPU per request moves by 20 % within
# seconds here) hits both, for a capacity ratio it cannot skew. The monitor runs with the fraud
# example's reference profile, so every request and response is parsed and recorded; after
# the run its /drover/report must show rows and features. See docs/monitor.md#performance.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=benches/proxy/common.sh
. "$here/common.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
WARMUP="${WARMUP:-2}"
# Paced rounds: each connection waits PACED_DELAY_MS before its next request, so every target
# gets the same offered load below saturation (0 skips them).
PACED_DELAY_MS="${PACED_DELAY_MS:-1}"
UPSTREAM_PORT="${UPSTREAM_PORT:-28080}"
MONITOR_PORT="${MONITOR_PORT:-28081}"
ADMIN_PORT="${ADMIN_PORT:-28091}"
NGINX_PORT="${NGINX_PORT:-28082}"
cores="$(nproc)"
if [ "$cores" -ge 6 ]; then
    LOAD_CORES="${LOAD_CORES:-0-1}" PROXY_CORE="${PROXY_CORE:-2}" UPSTREAM_CORES="${UPSTREAM_CORES:-3-5}"
elif [ "$cores" -ge 3 ]; then
    LOAD_CORES="${LOAD_CORES:-0}" PROXY_CORE="${PROXY_CORE:-1}" UPSTREAM_CORES="${UPSTREAM_CORES:-2}"
else
    LOAD_CORES="${LOAD_CORES:-0}" PROXY_CORE="${PROXY_CORE:-1}" UPSTREAM_CORES="${UPSTREAM_CORES:-$LOAD_CORES}"
fi
# The cores of a taskset list ("0-1", "3,5"), one per line.
expand_cores() {
    local part
    for part in ${1//,/ }; do
        if [[ "$part" == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
    done
}
count_cores() { expand_cores "$1" | wc -l; }
LOAD_THREADS="$(count_cores "$LOAD_CORES")"
UPSTREAM_WORKERS="$(count_cores "$UPSTREAM_CORES")"
# The upstream's cores are its own when wrk and the proxy run on none of them.
if expand_cores "$LOAD_CORES,$PROXY_CORE" | grep -qxF -f <(expand_cores "$UPSTREAM_CORES"); then
    UPSTREAM_OWN_CORES=0
else
    UPSTREAM_OWN_CORES=1
fi
PROFILE="${PROFILE:-$repo/examples/models/fraud/profile.json}"
DROVER_BIN="${DROVER_BIN:-$repo/target/release/drover}"


# --- tools -------------------------------------------------------------------------------
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    log "installing nginx and wrk (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
fi
for tool in nginx wrk taskset curl python3; do
    command -v "$tool" >/dev/null || { log "missing tool: $tool"; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
    log "needs 2 cores (load generator on core(s) $LOAD_CORES, proxy on core $PROXY_CORE)"
    exit 1
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building the release binary (cargo build --release --bin drover -j1)"
    (cd "$repo" && cargo build --release --bin drover -j1 --quiet)
fi
[ -x "$DROVER_BIN" ] || { log "no drover binary at $DROVER_BIN"; exit 1; }

make_work drover-proxy-bench

for port in "$UPSTREAM_PORT" "$MONITOR_PORT" "$ADMIN_PORT" "$NGINX_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        log "port $port is already in use; set *_PORT to free ones"
        exit 1
    fi
done

render() {
    sed -e "s#@PREFIX@#$work#g" -e "s#@UPSTREAM_PORT@#$UPSTREAM_PORT#g" \
        -e "s#@PROXY_PORT@#$NGINX_PORT#g" -e "s#@UPSTREAM_WORKERS@#$UPSTREAM_WORKERS#g" "$1" >"$2"
}
render "$here/upstream.conf.in" "$work/upstream.conf"
render "$here/nginx-proxy.conf.in" "$work/nginx-proxy.conf"

# --- servers -----------------------------------------------------------------------------
taskset -c "$UPSTREAM_CORES" nginx -p "$work" -c "$work/upstream.conf" -e "$work/upstream-error.log" \
    2>>"$work/upstream.stderr" &
upstream_pid=$!
pids+=("$upstream_pid")
wait_for "http://127.0.0.1:$UPSTREAM_PORT/health"

taskset -c "$PROXY_CORE" "$DROVER_BIN" --log-level warn monitor \
    --listen "127.0.0.1:$MONITOR_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --upstream "127.0.0.1:$UPSTREAM_PORT" --profile "$PROFILE" --threads 1 \
    >"$work/monitor.stdout" 2>"$work/monitor.stderr" &
monitor_pid=$!
pids+=("$monitor_pid")
wait_for "http://127.0.0.1:$MONITOR_PORT/predict" post

taskset -c "$PROXY_CORE" nginx -p "$work" -c "$work/nginx-proxy.conf" -e "$work/proxy-error.log" \
    2>>"$work/proxy.stderr" &
nginx_pid=$!
pids+=("$nginx_pid")
wait_for "http://127.0.0.1:$NGINX_PORT/predict" post

# Every process of a target: the monitor is one process; nginx is its master and worker(s);
# for the direct runs, the upstream's (its CPU per request is what "3x faster" is judged by).
target_pids() {
    case "$1" in
    direct) echo "$upstream_pid" $(pgrep -P "$upstream_pid" || true) ;;
    monitor) echo "$monitor_pid" ;;
    nginx) echo "$nginx_pid" $(pgrep -P "$nginx_pid" || true) ;;
    *) echo "" ;;
    esac
}
status_kib() { # pid field
    awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}
url_of() {
    case "$1" in
    direct) echo "http://127.0.0.1:$UPSTREAM_PORT/predict" ;;
    monitor) echo "http://127.0.0.1:$MONITOR_PORT/predict" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT/predict" ;;
    esac
}
run_wrk() { # url seconds [delay ms]
    WRK_DELAY_MS="${3:-0}" taskset -c "$LOAD_CORES" \
        wrk -t"$LOAD_THREADS" -c"$CONNECTIONS" -d"$2s" --latency -s "$here/post.lua" "$1"
}

log "load before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other work on these cores skews the figures)"
for target in direct monitor nginx; do
    run_wrk "$(url_of "$target")" "$WARMUP" >/dev/null
done

results="$work/results.tsv"
: >"$results"
hz=$(getconf CLK_TCK)
for round in $(seq 1 "$ROUNDS"); do
    for target in direct monitor nginx; do
        # shellcheck disable=SC2046
        before=$(cpu_ticks $(target_pids "$target"))
        out="$work/wrk-$target-$round.txt"
        # Nothing else of this script runs while wrk does: a process started meanwhile (an
        # RSS poll every half second did, during the monitor's rounds only) lands on a core of
        # the run and shows up in that target's tail. The peak is read after the round
        # (VmHWM, the kernel's high-water mark of resident memory).
        run_wrk "$(url_of "$target")" "$DURATION" >"$out"
        rss_max=0
        [ "$target" = monitor ] && rss_max=$(status_kib "$monitor_pid" VmHWM)
        # shellcheck disable=SC2046
        after=$(cpu_ticks $(target_pids "$target"))
        stats=$(grep '^WRKSTATS' "$out") || { log "wrk printed no summary:"; cat "$out" >&2; exit 1; }
        log "round $round $target: $(grep 'Requests/sec' "$out" | tr -s ' ')"
        printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$((after - before))" "$rss_max" "$stats" >>"$results"
    done
done

paced="$work/paced.tsv"
: >"$paced"
if [ "$PACED_DELAY_MS" != 0 ]; then
    for round in $(seq 1 "$ROUNDS"); do
        for target in direct monitor nginx; do
            out="$work/paced-$target-$round.txt"
            run_wrk "$(url_of "$target")" "$DURATION" "$PACED_DELAY_MS" >"$out"
            stats=$(grep '^WRKSTATS' "$out") || { log "wrk printed no summary:"; cat "$out" >&2; exit 1; }
            log "paced round $round $target: $(grep 'Requests/sec' "$out" | tr -s ' ')"
            printf '%s\t%s\t%s\n' "$round" "$target" "$stats" >>"$paced"
        done
    done
fi

# Side by side: wrk drives the monitor and nginx at the same time, both on PROXY_CORE, so
# whatever the machine does meanwhile (it drifts between a fast and a slow mode within
# seconds, which moves CPU per request by 20 %) happens to both. The kernel shares the core
# between them; each one's CPU per request over the same seconds gives a capacity ratio that
# drift cannot skew (SIDE_BY_SIDE=0 skips these rounds).
side="$work/side.tsv"
: >"$side"
if [ "${SIDE_BY_SIDE:-1}" != 0 ]; then
    for round in $(seq 1 "$ROUNDS"); do
        # shellcheck disable=SC2046
        m_before=$(cpu_ticks $(target_pids monitor)) n_before=$(cpu_ticks $(target_pids nginx))
        run_wrk "$(url_of monitor)" "$DURATION" >"$work/side-monitor-$round.txt" &
        m_wrk=$!
        run_wrk "$(url_of nginx)" "$DURATION" >"$work/side-nginx-$round.txt" &
        n_wrk=$!
        wait "$m_wrk" "$n_wrk"
        # shellcheck disable=SC2046
        m_after=$(cpu_ticks $(target_pids monitor)) n_after=$(cpu_ticks $(target_pids nginx))
        for target in monitor nginx; do
            stats=$(grep '^WRKSTATS' "$work/side-$target-$round.txt") ||
                { log "wrk printed no summary:"; cat "$work/side-$target-$round.txt" >&2; exit 1; }
            if [ "$target" = monitor ]; then ticks=$((m_after - m_before)); else ticks=$((n_after - n_before)); fi
            printf '%s\t%s\t%s\t%s\n' "$round" "$target" "$ticks" "$stats" >>"$side"
        done
        log "side-by-side round $round: monitor $(grep 'Requests/sec' "$work/side-monitor-$round.txt" | tr -s ' '), nginx $(grep 'Requests/sec' "$work/side-nginx-$round.txt" | tr -s ' ')"
    done
fi

hwm=$(status_kib "$monitor_pid" VmHWM)
rss_idle=$(status_kib "$monitor_pid" VmRSS)
curl -fsS "http://127.0.0.1:$ADMIN_PORT/drover/report" >"$work/report.json"

python3 - "$results" "$work/report.json" "$hz" "$hwm" "$rss_idle" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$LOAD_CORES" "$paced" "$PACED_DELAY_MS" "$UPSTREAM_CORES" "$UPSTREAM_WORKERS" "$UPSTREAM_OWN_CORES" "$side" <<'EOF'
import json, statistics, sys

(path, report_path, hz, hwm, rss_idle, rounds, duration, conns, load_cores, paced_path, pace,
 upstream_cores, upstream_workers, upstream_own_cores, side_path) = sys.argv[1:]
hz, hwm, rss_idle = int(hz), int(hwm), int(rss_idle)
upstream_own_cores = upstream_own_cores == "1"
# On cores of its own, each upstream worker has a core: its capacity is that many cores'.
# Sharing the load side's core, one core's worth at most.
upstream_scale = int(upstream_workers) if upstream_own_cores else 1
def wrk_stats(stats):
    """The figures of a WRKSTATS line (post.lua), with req/s."""
    kv = {k: float(v) for k, v in (p.split("=") for p in stats.split()[1:])}
    kv["rps"] = kv["requests"] / (kv["duration_us"] / 1e6)
    return kv

runs = {}
for line in open(path):
    rnd, target, ticks, rss, stats = line.rstrip("\n").split("\t")
    kv = wrk_stats(stats)
    kv["errors"] = sum(kv[k] for k in ("connect", "read", "write", "status", "timeout"))
    kv["cpu_us_per_req"] = int(ticks) / hz * 1e6 / kv["requests"]
    # Share of the proxy's core it used: near 100 % means the proxy, not the load side, set
    # the pace; 1e6 / CPU per request is what one core of it can serve (its capacity).
    kv["busy"] = int(ticks) / hz / (kv["duration_us"] / 1e6)
    kv["capacity"] = 1e6 / kv["cpu_us_per_req"] if kv["cpu_us_per_req"] else 0.0
    if target == "direct":
        kv["capacity"] *= upstream_scale
    runs.setdefault(target, []).append(kv)

def med(target, key):
    return statistics.median(r[key] for r in runs[target])

d, m, n = (lambda k, t=t: med(t, k) for t in ("direct", "monitor", "nginx"))
added = {t: med(t, "p99_us") - d("p99_us") for t in ("monitor", "nginx")}
print(f"\n### drover monitor vs nginx — POST /predict, ~250-byte JSON, {conns} connections, "
      f"{duration} s x {rounds} rounds (median)\n")
print("| target | req/s | p50 | p99 | added p99 vs direct | CPU per request "
      "| CPU busy | capacity | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for t, label in (("direct", "direct to upstream (nginx `return 200`)"),
                 ("monitor", "through `drover monitor` (profiled)"),
                 ("nginx", "through nginx `proxy_pass`")):
    # For the direct runs: the upstream's own CPU per request, busy share and capacity.
    cpu = f"{med(t, 'cpu_us_per_req'):.1f} µs"
    add = "—" if t == "direct" else f"{added[t] / 1000:+.3f} ms"
    busy = f"{med(t, 'busy') * 100:.0f} %"
    cap = f"{med(t, 'capacity'):,.0f} req/s"
    errors = int(sum(r["errors"] for r in runs[t]))
    print(f"| {label} | {med(t, 'rps'):,.0f} | {med(t, 'p50_us') / 1000:.3f} ms | "
          f"{med(t, 'p99_us') / 1000:.3f} ms | {add} | {cpu} | {busy} | {cap} | {errors} |")

print()
print("| ratio / figure | value | target |")
print("|---|---:|---|")
# The saturated p99 is the proxies' own when the load side is not what paces the run: either
# wrk and the upstream can drive 3x the faster proxy, or they have separate cores and the
# upstream is 3x faster than either proxy (then the proxy's core is the bottleneck).
upstream_3x = d("capacity") >= 3 * max(m("capacity"), n("capacity"))
load_headroom = d("rps") >= 3 * max(m("rps"), n("rps")) or (
    upstream_own_cores and upstream_3x)
# Rounds are interleaved, so each round's monitor and nginx runs are seconds apart: the
# per-round ratio cancels slow drifts of the machine (other VMs, frequency), which move both.
paired = statistics.median(
    nr["cpu_us_per_req"] / mr["cpu_us_per_req"]
    for mr, nr in zip(runs["monitor"], runs["nginx"]) if mr["cpu_us_per_req"])
rows = [
    ("monitor / nginx throughput", f"{m('rps') / n('rps'):.2f}", ">= 1.00", m("rps") >= n("rps")),
    ("monitor / nginx capacity, per round then median", f"{paired:.2f}", ">= 1.00",
     paired >= 1.0),
    ("monitor / nginx capacity (1e6 / CPU per request)", f"{m('capacity') / n('capacity'):.2f}",
     ">= 1.00", m("capacity") >= n("capacity")),
    # Saturated, the p99 is the load side's too unless it can drive 3x the faster proxy
    # (then the paced rounds below give the verdict): shown, judged only with that headroom.
    ("monitor added p99 / nginx added p99, saturated"
     + ("" if load_headroom else " (informational: load side bound)"),
     f"{added['monitor'] / 1000:+.3f} ms / {added['nginx'] / 1000:+.3f} ms",
     "monitor <= nginx" if load_headroom else "", added["monitor"] <= added["nginx"]),
    # Paired within each round, as the capacity above: the machine's drift moves both.
    ("saturated p99, monitor minus nginx in the same round: median; rounds at or below",
     f"{statistics.median(mr['p99_us'] - nr['p99_us'] for mr, nr in zip(runs['monitor'], runs['nginx'])) / 1000:+.3f} ms; "
     f"{sum(mr['p99_us'] <= nr['p99_us'] for mr, nr in zip(runs['monitor'], runs['nginx']))}"
     f" of {len(runs['monitor'])}", "", True),
    ("monitor resident memory under load (VmHWM, the peak)",
     f"{hwm / 1024:.1f} MiB", "<= 32 MiB", hwm <= 32 * 1024),
    ("upstream 3x faster: upstream capacity / monitor capacity",
     f"{d('capacity') / m('capacity'):.2f}x", ">= 3x", d("capacity") >= 3 * m("capacity")),
    ("upstream 3x faster: upstream capacity / nginx capacity",
     f"{d('capacity') / n('capacity'):.2f}x", ">= 3x", d("capacity") >= 3 * n("capacity")),
    ("load side: direct req/s / monitor req/s (informational)", f"{d('rps') / m('rps'):.2f}x",
     "", True),
]
for name, value, target, ok in rows:
    mark = ("✅" if ok else "❌") if target else ""
    print(f"| {name} | {value} | {target} {mark} |")

if not load_headroom:
    why = ("wrk and the upstream share core(s) %s" % load_cores if not upstream_own_cores else
           "the upstream (%s worker(s) on core(s) %s) is not 3x either proxy" %
           (upstream_workers, upstream_cores))
    print("\nNote: %s, so req/s and the saturated latency are partly the load side's; capacity "
          "(CPU per request on the proxy's own core) and the paced latency below are the "
          "comparisons it cannot cap. Per request a proxy does the socket work of two "
          "connections where the upstream does one: one upstream core is about 2x a proxy core, "
          "and the 3x needs 3 upstream cores of their own (6 cores in all)." % why)
paced = {}
for line in open(paced_path):
    rnd, target, stats = line.rstrip("\n").split("\t")
    kv = wrk_stats(stats)
    paced.setdefault(target, []).append(kv)
if paced:
    def pm(t, k):
        return statistics.median(r[k] for r in paced[t])
    print(f"\n### Same offered load for every target: each connection waits {pace} ms between "
          f"requests (median of {rounds} rounds)\n")
    print("| target | req/s | p50 | p90 | p99 | added p99 vs direct |")
    print("|---|---:|---:|---:|---:|---:|")
    for t in ("direct", "monitor", "nginx"):
        add = "—" if t == "direct" else f"{(pm(t, 'p99_us') - pm('direct', 'p99_us')) / 1000:+.3f} ms"
        print(f"| {t} | {pm(t, 'rps'):,.0f} | {pm(t, 'p50_us') / 1000:.3f} ms | "
              f"{pm(t, 'p90_us') / 1000:.3f} ms | {pm(t, 'p99_us') / 1000:.3f} ms | {add} |")
    am = pm("monitor", "p99_us") - pm("direct", "p99_us")
    an = pm("nginx", "p99_us") - pm("direct", "p99_us")
    ok = am <= an
    print(f"\n| monitor added p99 / nginx added p99 at equal load | {am / 1000:+.3f} ms / "
          f"{an / 1000:+.3f} ms | monitor <= nginx {'✅' if ok else '❌'} |")
    print("- per round p99 (ms): " + "; ".join(
        f"{t} " + ", ".join(f"{r['p99_us'] / 1000:.3f}" for r in paced[t])
        for t in ("direct", "monitor", "nginx")))

side = {}
for line in open(side_path):
    rnd, target, ticks, stats = line.rstrip("\n").split("\t")
    kv = wrk_stats(stats)
    kv["cpu_us_per_req"] = int(ticks) / hz * 1e6 / kv["requests"] if kv["requests"] else 0.0
    side.setdefault(target, []).append(kv)
if side:
    ratios = [nr["cpu_us_per_req"] / mr["cpu_us_per_req"]
              for mr, nr in zip(side["monitor"], side["nginx"]) if mr["cpu_us_per_req"]]
    ratio = statistics.median(ratios)
    print(f"\n### Side by side: monitor and nginx driven at the same time on the proxy core "
          f"(median of {rounds} rounds)\n")
    print("| target | req/s | p99 | CPU per request |")
    print("|---|---:|---:|---:|")
    for t in ("monitor", "nginx"):
        print(f"| {t} | {statistics.median(r['rps'] for r in side[t]):,.0f} | "
              f"{statistics.median(r['p99_us'] for r in side[t]) / 1000:.3f} ms | "
              f"{statistics.median(r['cpu_us_per_req'] for r in side[t]):.1f} µs |")
    print(f"\n| monitor / nginx capacity, same seconds (nginx CPU per request / monitor's, "
          f"per round then median) | {ratio:.2f} | >= 1.00 {'✅' if ratio >= 1.0 else '❌'} |")
    print("- per round: " + ", ".join(f"{r:.3f}" for r in ratios))

print("\nPer round (req/s, p99 ms, CPU µs per request):")
for t in ("direct", "monitor", "nginx"):
    print(f"- {t}: " + ", ".join(
        f"{r['rps']:,.0f} / {r['p99_us'] / 1000:.3f} / {r['cpu_us_per_req']:.1f}" for r in runs[t]))

report = json.load(open(report_path))
features = report.get("features", {})
total = sum(r["requests"] for r in runs["monitor"])
print(f"\nMonitor report: rows={report.get('rows')}, features={sorted(features)}, "
      f"feature values counted (amount)={features.get('amount', {}).get('count')}, "
      f"unknown feature values={report.get('counters', {}).get('unknownFeatures')}, "
      f"requests measured through the monitor={int(total)}; RSS after the run {rss_idle / 1024:.1f} MiB")
ok = (report.get("rows", 0) > 0 and {"amount", "channel"} <= set(features)
      and report.get("prediction") is not None)
if not ok:
    print("ERROR: the monitor's report does not show parsed requests")
    sys.exit(1)
if any(sum(r["errors"] for r in runs[t]) for t in runs):
    print("WARNING: wrk counted errors or non-2xx answers (see the errors column)")
EOF
