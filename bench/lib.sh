# shellcheck shell=bash
# shellcheck disable=SC2034  # variables here are used by the scripts that source this file
# Shared helpers for the whole-system benchmarks in bench/. Sourced, not run.
#
# Conventions every bench follows:
# - traffic only on 127.0.0.1, ports chosen at run time (free_port);
# - every process is started through start_bg, in its own session, and the EXIT trap ends
#   exactly those process groups (by id), so a bench interrupted at any point leaves nothing;
# - every wait is a bounded retry loop, every client runs under `timeout --foreground` (so a
#   Ctrl-C reaches the client too, instead of only the script).
#
# Core pinning (see bench/README.md): on a machine with at least two cores the proxy under test
# gets a core of its own (PROXY_CPUS, default 1) and the load generator and the upstream server
# share another (LOAD_CPUS, default 0), so every proxy gets the same CPU budget. PIN=0 turns
# pinning off.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
MESHMETER_BIN=${MESHMETER_BIN:-$REPO_DIR/target/release/meshmeter}
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin" ;; esac
export PATH

# Other work on the machine skews every figure; the table says how busy it was at the start.
START_LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/meshmeter-bench.XXXXXX")
BG_PIDS=()

if [[ ${PIN:-1} != 0 && $(nproc) -ge 2 ]]; then
    LOAD_CPUS=${LOAD_CPUS:-0}
    PROXY_CPUS=${PROXY_CPUS:-1}
    PINNING="proxy on cpu $PROXY_CPUS; load generator and upstream server on cpu $LOAD_CPUS"
    LOAD_PREFIX=(taskset -c "$LOAD_CPUS")
else
    LOAD_PREFIX=()
    LOAD_CPUS=""
    PROXY_CPUS=""
    PINNING="none"
fi

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Ends every process group start_bg created: TERM, a bounded wait, then KILL.
cleanup() {
    local pid i alive
    for pid in "${BG_PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for i in $(seq 1 50); do
        alive=0
        for pid in "${BG_PIDS[@]}"; do
            if kill -0 -- "-$pid" 2>/dev/null; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${BG_PIDS[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    rm -rf "$WORK_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Fails with an install hint unless every named program is on PATH.
require() {
    local p
    for p in "$@"; do
        command -v "$p" >/dev/null 2>&1 ||
            die "'$p' not found; run scripts/install-test-deps.sh first"
    done
}

# Prints a TCP port on 127.0.0.1 that was free a moment ago. Another process could take it
# before we bind it; on an otherwise idle bench machine that race is not worth more code.
free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# wait_port PORT [SECONDS]: waits until something listens on 127.0.0.1:PORT. It asks the
# kernel (ss) rather than connecting: through a proxy a probe connection would reach the
# upstream, and iperf3's server, which serves one test at a time, may still be busy with the
# probe when the real client arrives.
wait_port() {
    local port=$1 limit=${2:-10} i
    for ((i = 0; i < limit * 20; i++)); do
        if [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]; then
            return 0
        fi
        sleep 0.05
    done
    die "nothing listened on 127.0.0.1:$port within ${limit}s"
}

# pinned CPUS CMD...: runs CMD pinned to CPUS, or unpinned when pinning is off.
pinned() {
    local cpus=$1
    shift
    if [[ -n $cpus ]]; then
        exec taskset -c "$cpus" "$@"
    else
        exec "$@"
    fi
}

# start_bg LOGNAME CPUS CMD...: starts CMD in the background in a session of its own (so its
# children, e.g. socat's forks, go with it at cleanup); sets BG_PID.
start_bg() {
    local name=$1 cpus=$2
    shift 2
    # Without job control a background child is not a group leader, so setsid needs no fork
    # and the pid we get is the new process group's id.
    setsid bash -c "$(declare -f pinned); pinned \"\$@\"" _ "$cpus" "$@" \
        >"$WORK_DIR/$name.log" 2>&1 </dev/null &
    BG_PID=$!
    BG_PIDS+=("$BG_PID")
}

# stop_bg PID: ends one process group started by start_bg and waits for it (bounded).
stop_bg() {
    local pid=$1 i
    kill -TERM -- "-$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # Forget it, so cleanup never signals a group id the kernel may since have reused.
    local kept=() p
    for p in "${BG_PIDS[@]}"; do
        if [[ $p != "$pid" ]]; then kept+=("$p"); fi
    done
    BG_PIDS=("${kept[@]}")
}

# meshmeter_unavailable KIND: prints why a meshmeter column (meshmeter, meshmeter-copy)
# cannot be measured, or nothing when it can.
meshmeter_unavailable() {
    local help
    if [[ ! -x $MESHMETER_BIN ]]; then
        echo "$MESHMETER_BIN not found (build it: cargo build --release -p meshmeter)"
    elif ! help=$("$MESHMETER_BIN" proxy --help 2>&1); then
        echo "$MESHMETER_BIN has no 'proxy' subcommand yet"
    elif [[ $1 == meshmeter-copy && $help != *--copy-mode* ]]; then
        echo "$MESHMETER_BIN proxy has no --copy-mode flag"
    fi
}

# write_haproxy_cfg FILE LISTEN_PORT UPSTREAM_PORT MAXCONN [EXTRA]: the configuration a
# careful operator would give a plain TCP forwarder: one thread (it gets one core, like every
# proxy here), no logging, no health checks, default buffers. EXTRA is one more line for the
# defaults section (the splice variant adds `option splice-auto`; plain haproxy does not
# splice, which is its default).
write_haproxy_cfg() {
    cat >"$1" <<EOF
global
    nbthread 1
    maxconn $4

defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    ${5:-}

frontend bench_in
    bind 127.0.0.1:$2
    default_backend bench_out

backend bench_out
    server upstream 127.0.0.1:$3
EOF
}

# start_proxy KIND LISTEN_PORT UPSTREAM_PORT [MAXCONN]: starts one proxy under test on
# PROXY_CPUS and waits until it accepts; sets BG_PID. KIND is meshmeter (its default copy
# mode, splice), meshmeter-copy (--copy-mode copy), haproxy, haproxy-splice or socat.
start_proxy() {
    local kind=$1 lport=$2 uport=$3 maxconn=${4:-4096} extra=()
    case "$kind" in
        meshmeter | meshmeter-copy)
            if [[ $kind == meshmeter-copy ]]; then extra=(--copy-mode copy); fi
            start_bg "$kind" "$PROXY_CPUS" "$MESHMETER_BIN" --log warn proxy \
                --listen "127.0.0.1:$lport" --upstream "127.0.0.1:$uport" "${extra[@]}"
            ;;
        haproxy | haproxy-splice)
            local line=""
            if [[ $kind == haproxy-splice ]]; then line="option splice-auto"; fi
            write_haproxy_cfg "$WORK_DIR/$kind.cfg" "$lport" "$uport" "$maxconn" "$line"
            haproxy -c -q -f "$WORK_DIR/$kind.cfg" || die "generated $kind.cfg is invalid"
            # -db: stay in the foreground as one process, so BG_PID is the proxy itself.
            start_bg "$kind" "$PROXY_CPUS" haproxy -db -f "$WORK_DIR/$kind.cfg"
            ;;
        socat)
            start_bg socat "$PROXY_CPUS" socat "TCP-LISTEN:$lport,bind=127.0.0.1,fork,reuseaddr" \
                "TCP:127.0.0.1:$uport"
            ;;
        *) die "unknown proxy kind '$kind'" ;;
    esac
    wait_port "$lport"
}

# ratio A B: prints A/B with two decimals, or "-" when either is missing or B is zero.
ratio() {
    python3 -c 'import sys
a, b = sys.argv[1], sys.argv[2]
try:
    a, b = float(a), float(b)
    print(f"{a / b:.2f}x" if b else "-")
except ValueError:
    print("-")' "$1" "$2"
}

# ROUNDS: how many times every column is measured; rounds are interleaved (all columns once,
# then again), so drift in machine load spreads over every column, and tables show the median.
ROUNDS=${ROUNDS:-1}
if ! [[ $ROUNDS =~ ^[0-9]+$ ]] || ((ROUNDS < 1 || ROUNDS > 9)); then
    die "ROUNDS must be 1-9, got '$ROUNDS'"
fi

# median VALUES...: the median of the numeric values, "error" when none is numeric.
median() {
    python3 -c 'import statistics, sys
vals, places = [], 0
for v in sys.argv[1:]:
    try:
        vals.append(float(v))
        places = max(places, len(v.partition(".")[2]))
    except ValueError:
        pass
print("%.*f" % (places, statistics.median(vals)) if vals else "error")' "$@"
}

# Prints the one-line description of the proxies' configurations for a table header.
proxies_line() {
    printf '# haproxy %s: mode tcp, nbthread 1%s; haproxy-splice adds option splice-auto\n' \
        "$(haproxy -v | head -n1 | cut -d' ' -f3)" "${1:+, $1}"
    printf '# meshmeter: default copy mode (splice); meshmeter-copy: --copy-mode copy; no --mixer\n'
}

# Prints the machine facts every table starts with.
print_header() {
    printf '# %s\n' "$1"
    printf '# date: %s; host: %s cores, %s; kernel %s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" \
        "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
        "$(uname -r)"
    printf '# load average at start: %s; pinning: %s%s\n' "$START_LOADAVG" "$PINNING" \
        "$( ((ROUNDS == 1)) || echo "; rounds: $ROUNDS, median shown")"
    if python3 -c 'import sys; sys.exit(float(sys.argv[1]) <= 1.0)' "${START_LOADAVG%% *}"; then
        printf '# WARNING: the machine was busy (1-minute load above 1): figures are noisy\n'
    fi
}

# cpu_seconds PID: user+system CPU time the process has used.
cpu_seconds() {
    awk -v t="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"
}

# mixer_run SERVER_BIN BATCH CONCURRENCY CONNECTIONS [LOADGEN ARGS...]: one fresh telemetry
# server (pinned like a proxy under test, seed + Istio default config, access log to a file)
# driven by `loadgen` from $MESHMETER_BIN for $DURATION seconds; prints
# "bags_per_sec bags_per_server_cpu_second verified".
mixer_run() {
    local bin=$1 batch=$2 concurrency=$3 connections=$4
    shift 4
    local grpc metrics group before after json pid=""
    grpc=$(free_port)
    metrics=$(free_port)
    start_bg "server" "$PROXY_CPUS" "$bin" --log warn mixer \
        --grpc-addr "127.0.0.1:$grpc" --metrics-addr "127.0.0.1:$metrics" \
        --access-log "$WORK_DIR/access.log" --config-dir "$REPO_DIR/examples/tcp-metrics.yaml"
    group=$BG_PID
    wait_port "$metrics"
    for _ in $(seq 1 50); do
        pid=$(pgrep -g "$group" -x meshmeter | head -n 1) && [[ -n $pid ]] && break
        sleep 0.1
    done
    if [[ -z $pid ]]; then
        # mixer_run runs in a command substitution: the EXIT trap of the script does not see
        # this group, so end it here.
        kill -TERM -- "-$group" 2>/dev/null || true
        die "server process not found (the binary must be named meshmeter)"
    fi
    before=$(cpu_seconds "$pid")
    json=$(timeout --foreground $((DURATION + 60)) "${LOAD_PREFIX[@]}" "$MESHMETER_BIN" loadgen \
        --target "127.0.0.1:$grpc" --metrics "127.0.0.1:$metrics" --batch "$batch" \
        --concurrency "$concurrency" --connections "$connections" --duration "${DURATION}s" \
        --json "$@") || true
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
