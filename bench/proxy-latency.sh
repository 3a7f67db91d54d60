#!/usr/bin/env bash
# Request latency and request rate through each proxy, measured with redis-benchmark GET
# against a redis-server the script starts on 127.0.0.1: one client (latency p50/p99, the
# cost one proxy hop adds to a round trip) and 50 clients (requests per second), for direct,
# meshmeter, HAProxy and socat, all in the same run. Prints one table.
#
#   bench/proxy-latency.sh
#   REQUESTS_C1=50000 REQUESTS_C50=300000 bench/proxy-latency.sh
#
# Environment: REQUESTS_C1 (default 30000), REQUESTS_C50 (default 200000), ROUNDS (1-9,
# median shown), PIN=0, LOAD_CPUS, PROXY_CPUS, MESHMETER_BIN, SETUPS (default
# "direct meshmeter meshmeter-copy haproxy haproxy-splice socat").
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS_C1=${REQUESTS_C1:-30000}
REQUESTS_C50=${REQUESTS_C50:-200000}
for n in "$REQUESTS_C1" "$REQUESTS_C50"; do
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1000 || n > 2000000)); then
        die "request counts must be 1000-2000000, got '$n'"
    fi
done
SETUPS=${SETUPS:-direct meshmeter meshmeter-copy haproxy haproxy-splice socat}
# A run slower than this is broken, not slow: it is cut off and shown as an error.
RUN_LIMIT=120
require redis-server redis-benchmark redis-cli haproxy socat taskset python3

# bench PORT CLIENTS REQUESTS: prints redis-benchmark's CSV data line for GET, or nothing.
bench() {
    local out="$WORK_DIR/redis-$1-$2.csv"
    if ! timeout --foreground "$RUN_LIMIT" "${LOAD_PREFIX[@]}" redis-benchmark \
        -h 127.0.0.1 -p "$1" -c "$2" -n "$3" -t get --csv >"$out" 2>&1; then
        log "redis-benchmark via port $1 with $2 clients failed: $(head -c 300 "$out")"
        return 0
    fi
    grep '^"GET"' "$out" | tr -d '"' || true
}

# field CSV N: the Nth comma-separated field (1 = test name), or "error".
field() {
    local v
    v=$(cut -d, -f"$2" <<<"$1")
    printf '%s\n' "${v:-error}"
}

redis_port=$(free_port)
start_bg redis-server "$LOAD_CPUS" redis-server --bind 127.0.0.1 --port "$redis_port" \
    --save '' --appendonly no --daemonize no
redis_pid=$BG_PID
wait_port "$redis_port"
# redis-benchmark's GET reads the key its SET writes; store it once so GETs return a value.
timeout --foreground 30 redis-benchmark -h 127.0.0.1 -p "$redis_port" -c 1 -n 1 -t set -q >/dev/null ||
    die "could not SET the benchmark key"

declare -A p50 p99 rps note
for round in $(seq 1 "$ROUNDS"); do
    for setup in $SETUPS; do
        port=$redis_port
        proxy_pid=""
        if [[ $setup == meshmeter* ]]; then
            why=$(meshmeter_unavailable "$setup")
            if [[ -n $why ]]; then
                note[$setup]="skipped: $why"
                ((round > 1)) || log "${note[$setup]}"
                continue
            fi
        fi
        if [[ $setup != direct ]]; then
            port=$(free_port)
            start_proxy "$setup" "$port" "$redis_port"
            proxy_pid=$BG_PID
        fi
        log "round $round/$ROUNDS: $setup: c=1, n=$REQUESTS_C1"
        line=$(bench "$port" 1 "$REQUESTS_C1")
        # CSV fields: test, rps, avg, min, p50, p95, p99, max (latencies in ms).
        p50[$setup]+="$(field "$line" 5) "
        p99[$setup]+="$(field "$line" 7) "
        log "round $round/$ROUNDS: $setup: c=50, n=$REQUESTS_C50"
        line=$(bench "$port" 50 "$REQUESTS_C50")
        rps[$setup]+="$(field "$line" 2) "
        if [[ -n $proxy_pid ]]; then stop_bg "$proxy_pid"; fi
    done
done
# shellcheck disable=SC2086  # the values are space-separated lists of figures
for setup in "${!rps[@]}"; do
    p50[$setup]=$(median ${p50[$setup]})
    p99[$setup]=$(median ${p99[$setup]})
    rps[$setup]=$(median ${rps[$setup]})
done
stop_bg "$redis_pid"

# A latency ratio above 1 is slower; a rate ratio below 1 is slower.
print_header "proxy-latency: redis-benchmark $(redis-benchmark --version | cut -d' ' -f2) GET; c=1 n=$REQUESTS_C1 (latency ms), c=50 n=$REQUESTS_C50 (requests/s)"
proxies_line ""
printf '%-14s | %8s %8s %8s %8s | %10s %9s %9s\n' setup "p50 ms" "x direct" "p99 ms" \
    "x direct" "rps c=50" "vs direct" "vs haproxy"
printf '%s\n' "---------------+-------------------------------------+-------------------------------"
for setup in $SETUPS; do
    if [[ -n ${note[$setup]:-} ]]; then
        printf '%-14s | %s\n' "$setup" "${note[$setup]}"
        continue
    fi
    printf '%-14s | %8s %8s %8s %8s | %10s %9s %9s\n' "$setup" \
        "${p50[$setup]}" "$(ratio "${p50[$setup]}" "${p50[direct]:-}")" \
        "${p99[$setup]}" "$(ratio "${p99[$setup]}" "${p99[direct]:-}")" \
        "${rps[$setup]}" "$(ratio "${rps[$setup]}" "${rps[direct]:-}")" \
        "$(ratio "${rps[$setup]}" "${rps[haproxy]:-}")"
done
