#!/usr/bin/env bash
# Request latency and request rate through each proxy, measured with redis-benchmark GET
# against a redis-server the script starts on 127.0.0.1: one client (latency p50/p99, the
# cost one proxy hop adds to a round trip) and 50 clients (requests per second, and the
# proxy's own CPU time per request), for direct, meshmeter, HAProxy and socat, all in the same
# run. Prints one table.
#
# With pinning, the c=50 rate is bounded by the load core (redis-server and redis-benchmark
# share it), so it moves with how the proxy's timing batches their work, and with host noise.
# The CPU column (user + system time of the proxy process during the c=50 run, from
# /proc/PID/stat, divided by the requests) is the proxy's own cost and varies far less; it
# decides the rate whenever the proxy's core is shared.
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

# cpu_ticks PID: user + system CPU time of the process so far, in clock ticks, or nothing when
# it is gone. The fields are counted after the command name, which may contain spaces.
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    awk '{print $12 + $13}' <<<"${stat##*) }"
}

# us_per_request TICKS_BEFORE TICKS_AFTER REQUESTS: CPU microseconds per request, or "-".
us_per_request() {
    python3 -c 'import os, sys
try:
    before, after, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    hz = os.sysconf("SC_CLK_TCK")
    print(f"{(after - before) * 1e6 / hz / n:.2f}")
except ValueError:
    print("-")' "$1" "$2" "$3"
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

declare -A p50 p99 rps cpu note
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
        # socat forks a process per connection, whose time its parent only sees once reaped.
        ticks=""
        if [[ -n $proxy_pid && $setup != socat ]]; then ticks=$(cpu_ticks "$proxy_pid"); fi
        line=$(bench "$port" 50 "$REQUESTS_C50")
        rps[$setup]+="$(field "$line" 2) "
        if [[ -n $ticks ]]; then
            cpu[$setup]+="$(us_per_request "$ticks" "$(cpu_ticks "$proxy_pid")" "$REQUESTS_C50") "
        fi
        if [[ -n $proxy_pid ]]; then stop_bg "$proxy_pid"; fi
    done
done
# shellcheck disable=SC2086  # the values are space-separated lists of figures
for setup in "${!rps[@]}"; do
    p50[$setup]=$(median ${p50[$setup]})
    p99[$setup]=$(median ${p99[$setup]})
    rps[$setup]=$(median ${rps[$setup]})
    cpu[$setup]=$(median ${cpu[$setup]:-})
done
stop_bg "$redis_pid"

# A latency ratio above 1 is slower; a rate ratio below 1 is slower.
print_header "proxy-latency: redis-benchmark $(redis-benchmark --version | cut -d' ' -f2) GET; c=1 n=$REQUESTS_C1 (latency ms), c=50 n=$REQUESTS_C50 (requests/s)"
proxies_line ""
printf '%-14s | %8s %8s %8s %8s | %10s %9s %9s | %10s %9s\n' setup "p50 ms" "x direct" "p99 ms" \
    "x direct" "rps c=50" "vs direct" "vs haproxy" "cpu us/req" "x haproxy"
printf '%s\n' "---------------+-------------------------------------+-------------------------------+---------------------"
for setup in $SETUPS; do
    if [[ -n ${note[$setup]:-} ]]; then
        printf '%-14s | %s\n' "$setup" "${note[$setup]}"
        continue
    fi
    # A CPU ratio above 1 costs more than HAProxy.
    c=${cpu[$setup]}
    [[ $c == error ]] && c=-
    printf '%-14s | %8s %8s %8s %8s | %10s %9s %9s | %10s %9s\n' "$setup" \
        "${p50[$setup]}" "$(ratio "${p50[$setup]}" "${p50[direct]:-}")" \
        "${p99[$setup]}" "$(ratio "${p99[$setup]}" "${p99[direct]:-}")" \
        "${rps[$setup]}" "$(ratio "${rps[$setup]}" "${rps[direct]:-}")" \
        "$(ratio "${rps[$setup]}" "${rps[haproxy]:-}")" \
        "$c" "$(ratio "$c" "${cpu[haproxy]:-}")"
done
