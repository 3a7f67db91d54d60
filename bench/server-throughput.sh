#!/usr/bin/env bash
# Telemetry server throughput and footprint: bags/s, CPU-seconds per million bags, RSS idle and
# under load, at batch 100 and batch 1, with the server pinned to one core and the load
# generator (`meshmeter loadgen`, which verifies every count) on the other.
#
#   bench/server-throughput.sh            # DURATION=10 seconds per row
#   DURATION=5 bench/server-throughput.sh
#
# Rows (in flight / connections: 32/32 is one connection per sender, so the server reads and
# writes once per request; 32/2 multiplexes the senders as HTTP/2 streams of two connections,
# as Istio's proxies send reports):
#   seed        examples/tcp-metrics.yaml only (the configuration Istio's Mixer was measured
#               with: the attribute manifests and the seed's two metrics)
#   seed+istio  the same plus Istio's default TCP telemetry (four more metrics with 16 labels
#               and the TCP access log, written to a file)
# Baseline: Istio Mixer 1.1.7 measured on this machine kind (cannot run here: no Go toolchain
# or Mixer binary in the registries): ~47,000 bags/s at batch 100, ~9,900 at batch 1, RSS 44 MB
# idle and 55-76 MB under load.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
[[ -x $MESHMETER_BIN ]] || die "$MESHMETER_BIN not found (cargo build --release -p meshmeter)"

# status_kib PID FIELD: a /proc/PID/status field in KiB (VmRSS, VmHWM).
status_kib() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# server_pid GROUP: the meshmeter process in the process group started by start_bg (the
# group leader itself, once bash and taskset have exec'd into it).
server_pid() {
    pgrep -g "$1" -x meshmeter | head -n 1
}

run_row() {
    local label=$1 batch=$2 concurrency=$3 connections=$4
    shift 4
    local grpc metrics pid group idle before after json
    grpc=$(free_port)
    metrics=$(free_port)
    start_bg "server-$label-$batch" "$PROXY_CPUS" "$MESHMETER_BIN" --log warn mixer \
        --grpc-addr "127.0.0.1:$grpc" --metrics-addr "127.0.0.1:$metrics" \
        --access-log "$WORK_DIR/access-$label-$batch.log" "$@"
    group=$BG_PID
    wait_port "$metrics"
    pid=$(server_pid "$group")
    [[ -n $pid ]] || die "server process not found"
    sleep 1
    idle=$(status_kib "$pid" VmRSS)
    before=$(cpu_seconds "$pid")
    json=$(timeout --foreground $((DURATION + 60)) "${LOAD_PREFIX[@]}" "$MESHMETER_BIN" loadgen \
        --target "127.0.0.1:$grpc" --metrics "127.0.0.1:$metrics" --batch "$batch" \
        --concurrency "$concurrency" --connections "$connections" --duration "${DURATION}s" --json) || true
    after=$(cpu_seconds "$pid")
    local hwm
    hwm=$(status_kib "$pid" VmHWM)
    stop_bg "$group"
    python3 - "$label" "$batch" "$concurrency/$connections" "$idle" "$hwm" "$before" "$after" "$json" <<'PY'
import json, sys
label, batch, conc, idle, hwm, before, after, raw = sys.argv[1:]
try:
    s = json.loads(raw)
except ValueError:
    print(f"| {label} | {batch} | {conc} | loadgen failed: {raw[:80]!r} | | | | | |")
    sys.exit(0)
cpu = float(after) - float(before)
bags = s["bags"]
per_million = cpu / bags * 1e6 if bags else float("nan")
per_core = bags / cpu if cpu else float("nan")
print(f"| {label} | {batch} | {conc} | {s['bags_per_sec']:,.0f} | {per_core:,.0f} | {per_million:.2f} | "
      f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f} | {int(idle)/1024:.1f} / {int(hwm)/1024:.1f} | "
      f"{s['errors']} | {'yes' if s['verified'] else 'NO'} |")
PY
}

seed="$REPO_DIR/examples/tcp-metrics.yaml"
echo "## Telemetry server ($(date -u +%F), $(nproc) cores, load average at start: $START_LOADAVG)"
echo "Pinning: server on cpu ${PROXY_CPUS:-any}, loadgen on cpu ${LOAD_CPUS:-any}. ${DURATION}s per row, 8-attribute bags (mixc's seed bag), 4 label combinations."
echo
echo "| config | batch | in flight / connections | bags/s (wall) | bags per server CPU-second | server CPU-s per million bags | Report p50 / p99 ms | RSS idle / peak MiB | errors | verified |"
echo "|---|---|---|---|---|---|---|---|---|---|"
run_row seed 100 4 4 --config-dir "$seed" --no-default-config
run_row seed 1 32 32 --config-dir "$seed" --no-default-config
run_row seed 1 32 2 --config-dir "$seed" --no-default-config
run_row seed+istio 100 4 4 --config-dir "$seed"
run_row seed+istio 1 32 32 --config-dir "$seed"
run_row seed+istio 1 32 2 --config-dir "$seed"
echo
echo "Baseline (Istio Mixer 1.1.7, same machine kind, from the issue): 47,000 bags/s at batch 100, 9,900 at batch 1 on one core; RSS 44 MB idle, 55-76 MB under load."

# A floor for the one-request-per-connection rows: redis-server, a single-threaded server
# built for tiny requests, pinned the same way and driven by redis-benchmark GET with 32
# connections, one request in flight on each: its requests per CPU-second are what one
# read and one write per request leave on this machine, before any HTTP/2 or gRPC.
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
    port=$(free_port)
    start_bg redis-floor "$PROXY_CPUS" redis-server --bind 127.0.0.1 --port "$port" \
        --save '' --appendonly no --daemonize no
    group=$BG_PID
    wait_port "$port"
    pid=$(pgrep -g "$group" -x redis-server | head -n 1)
    timeout --foreground 30 redis-benchmark -h 127.0.0.1 -p "$port" -n 1 -t set -q >/dev/null
    requests=300000
    before=$(cpu_seconds "$pid")
    timeout --foreground 120 "${LOAD_PREFIX[@]}" redis-benchmark -h 127.0.0.1 -p "$port" \
        -c 32 -n "$requests" -t get -q >/dev/null
    after=$(cpu_seconds "$pid")
    stop_bg "$group"
    python3 -c "import sys; cpu=float(sys.argv[2])-float(sys.argv[1]); print(f'Floor, same run: redis-server GET, 32 connections x 1 request in flight: {int(sys.argv[3])/cpu:,.0f} requests per server CPU-second.')" "$before" "$after" "$requests"
else
    echo "Floor: skipped (redis-server not installed; scripts/install-test-deps.sh installs it)."
fi
