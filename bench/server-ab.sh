#!/usr/bin/env bash
# Telemetry server before/after: two `meshmeter` builds (A, the baseline, and B) serve the same
# load in same-run pairs, alternating, a fresh server per run; `meshmeter loadgen` from build B
# drives both and verifies every count.
#
#   A=/path/to/old/meshmeter B=target/release/meshmeter bench/server-ab.sh
#   PAIRS=4 DURATION=5 ...
#
# Figures per run: bags/s (wall clock) and bags per server CPU-second (steadier on a shared
# machine); the ratio column is B / A of the CPU figure.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-5}
PAIRS=${PAIRS:-3}
# ROWS="100 4 4;1 32 2": batch, in flight, connections per row.
IFS=";" read -r -a ROWS <<<"${ROWS:-100 4 4;1 32 2}"
A=${A:?set A to the baseline meshmeter binary}
B=${B:-$MESHMETER_BIN}
[[ -x $A && -x $B ]] || die "A=$A and B=$B must both be executables"
clock_ticks=$(getconf CLK_TCK)
seed="$REPO_DIR/examples/tcp-metrics.yaml"

cpu_seconds() {
    awk -v t="$clock_ticks" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"
}

# one_run SERVER_BIN BATCH CONCURRENCY CONNECTIONS: prints "bags_per_sec bags_per_cpu_s verified".
one_run() {
    local bin=$1 batch=$2 concurrency=$3 connections=$4
    local grpc metrics group pid before after json
    grpc=$(free_port)
    metrics=$(free_port)
    start_bg "server" "$PROXY_CPUS" "$bin" --log warn mixer \
        --grpc-addr "127.0.0.1:$grpc" --metrics-addr "127.0.0.1:$metrics" \
        --access-log "$WORK_DIR/access.log" --config-dir "$seed"
    group=$BG_PID
    wait_port "$metrics"
    pid=""
    for _ in $(seq 1 50); do
        pid=$(pgrep -g "$group" -x meshmeter | head -n 1) && [[ -n $pid ]] && break
        sleep 0.1
    done
    [[ -n $pid ]] || die "server process not found (the binary must be named meshmeter)"
    before=$(cpu_seconds "$pid")
    json=$(timeout --foreground $((DURATION + 60)) "${LOAD_PREFIX[@]}" "$B" loadgen \
        --target "127.0.0.1:$grpc" --metrics "127.0.0.1:$metrics" --batch "$batch" \
        --concurrency "$concurrency" --connections "$connections" --duration "${DURATION}s" \
        --json) || true
    after=$(cpu_seconds "$pid")
    stop_bg "$group"
    python3 - "$before" "$after" "$json" <<'PY'
import json, sys
before, after, raw = sys.argv[1:]
s = json.loads(raw)
cpu = float(after) - float(before)
print(f"{s['bags_per_sec']:.0f} {s['bags'] / cpu:.0f} {'yes' if s['verified'] else 'NO'}")
PY
}

echo "## Telemetry server A/B ($(date -u +%F), $(nproc) cores, load average at start: $START_LOADAVG)"
echo "A: $A; B: $B. Pinning: $PINNING. ${DURATION}s per run, seed + Istio default config, access log to a file."
echo
echo "| batch | in flight / connections | pair | bags/s A / B | bags per server CPU-s A / B | ratio B/A (CPU) | verified |"
echo "|---|---|---|---|---|---|---|"
for row in "${ROWS[@]}"; do
    read -r batch concurrency connections <<<"$row"
    for pair in $(seq 1 "$PAIRS"); do
        read -r wall0 cpu0 ok0 <<<"$(one_run "$A" "$batch" "$concurrency" "$connections")"
        read -r wall1 cpu1 ok1 <<<"$(one_run "$B" "$batch" "$concurrency" "$connections")"
        ratio=$(python3 -c "print(f'{$cpu1 / $cpu0:.2f}')")
        echo "| $batch | $concurrency/$connections | $pair | $wall0 / $wall1 | $cpu0 / $cpu1 | $ratio | $ok0 / $ok1 |"
    done
done
