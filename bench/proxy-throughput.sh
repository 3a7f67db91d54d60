#!/usr/bin/env bash
# Bulk TCP throughput through each proxy, measured with iperf3 on 127.0.0.1: one stream and
# 16 parallel streams, for direct loopback (no proxy), meshmeter, HAProxy and socat, all in
# the same run. Prints one table.
#
#   bench/proxy-throughput.sh            # DURATION=5 seconds per measurement
#   DURATION=10 bench/proxy-throughput.sh
#
# Environment: DURATION (seconds, 1-30), ROUNDS (1-9, median shown), PIN=0 (no core
# pinning), LOAD_CPUS, PROXY_CPUS, MESHMETER_BIN (default target/release/meshmeter), SETUPS
# (default "direct meshmeter meshmeter-copy haproxy haproxy-splice socat").
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-5}
if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 1 || DURATION > 30)); then
    die "DURATION must be 1-30 seconds, got '$DURATION'"
fi
SETUPS=${SETUPS:-direct meshmeter meshmeter-copy haproxy haproxy-splice socat}
STREAMS=(1 16)
require iperf3 haproxy socat taskset python3

# iperf3 -J output -> receiver-side Gbit/s (what arrived, not what was queued).
gbits_from_json() {
    python3 -c 'import json, sys
try:
    end = json.load(open(sys.argv[1]))["end"]
    print("%.2f" % (end["sum_received"]["bits_per_second"] / 1e9))
except (OSError, ValueError, KeyError):
    print("error")' "$1"
}

# measure PORT STREAMS: prints Gbit/s for one iperf3 client run against 127.0.0.1:PORT.
measure() {
    local port=$1 streams=$2 out="$WORK_DIR/iperf-$1-$2.json"
    # -O 1 omits the first second (slow start, proxy warm-up) from the result.
    local attempt
    # A second attempt: iperf3's server refuses a client while it is still tearing down the
    # previous test, a race of the tool, not of the proxy.
    for attempt in 1 2; do
        if timeout --foreground $((DURATION + 20)) "${LOAD_PREFIX[@]}" iperf3 -c 127.0.0.1 \
            -p "$port" -t "$DURATION" -O 1 -P "$streams" --connect-timeout 3000 -J \
            >"$out" 2>&1; then
            break
        fi
        log "iperf3 via port $port with $streams streams failed (attempt $attempt):" \
            "$(grep -m1 '"error"' "$out" || head -c 300 "$out")"
        sleep 1
    done
    gbits_from_json "$out"
}

upstream_port=$(free_port)
start_bg iperf3-server "$LOAD_CPUS" iperf3 -s -B 127.0.0.1 -p "$upstream_port"
iperf_pid=$BG_PID
wait_port "$upstream_port"

declare -A result note
for round in $(seq 1 "$ROUNDS"); do
    for setup in $SETUPS; do
        port=$upstream_port
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
            start_proxy "$setup" "$port" "$upstream_port"
            proxy_pid=$BG_PID
        fi
        for s in "${STREAMS[@]}"; do
            log "round $round/$ROUNDS: $setup, $s stream(s), ${DURATION}s"
            result[$setup,$s]+="$(measure "$port" "$s") "
        done
        if [[ -n $proxy_pid ]]; then stop_bg "$proxy_pid"; fi
    done
done
for key in "${!result[@]}"; do
    # shellcheck disable=SC2086  # the value is a space-separated list of figures
    result[$key]=$(median ${result[$key]})
done
stop_bg "$iperf_pid"

print_header "proxy-throughput: iperf3 $(iperf3 --version | head -n1 | cut -d' ' -f2), ${DURATION}s per run (first second omitted), receiver Gbit/s"
proxies_line ""
printf '%-14s | %12s %9s %9s | %12s %9s %9s\n' setup "1 str Gb/s" "vs direct" "vs haproxy" \
    "16 str Gb/s" "vs direct" "vs haproxy"
printf '%s\n' "---------------+----------------------------------+----------------------------------"
for setup in $SETUPS; do
    if [[ -n ${note[$setup]:-} ]]; then
        printf '%-14s | %s\n' "$setup" "${note[$setup]}"
        continue
    fi
    row=$(printf '%-14s |' "$setup")
    for s in "${STREAMS[@]}"; do
        v=${result[$setup,$s]:-error}
        row+=$(printf ' %12s %9s %9s |' "$v" "$(ratio "$v" "${result[direct,$s]:-}")" \
            "$(ratio "$v" "${result[haproxy,$s]:-}")")
    done
    row=${row%|}
    printf '%s\n' "${row% }"
done
