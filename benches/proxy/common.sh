# shellcheck shell=bash
# Shared by benches/proxy/run.sh and benches/proxy/upstream-floor.sh (sourced, not run).

log() { printf '%s\n' "$*" >&2; }

# A temporary directory for the run (`work`) and the background processes to stop (`pids`,
# appended to by the caller), both cleaned up when the script exits, however it exits.
make_work() { # name
    work="$(mktemp -d "/tmp/$1.XXXXXX")"
    chmod 755 "$work"
    pids=()
    trap cleanup EXIT
}
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}

# Waits (up to 10 s) until the URL answers 2xx to a GET, or to a small JSON POST.
wait_for() { # url [post]
    for _ in $(seq 1 100); do
        if [ "${2:-}" = post ]; then
            curl -fsS -o /dev/null -X POST -H 'content-type: application/json' \
                -d '{"amount": 1}' "$1" 2>/dev/null && return 0
        else
            curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        fi
        sleep 0.1
    done
    log "$1 did not come up"
    exit 1
}

# CPU time (user + system, in clock ticks) the processes have used; a process that is gone
# counts nothing.
cpu_ticks() { # pids...
    local total=0 pid f
    for pid in "$@"; do
        f=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + ${f% *} + ${f#* }))
    done
    echo "$total"
}
