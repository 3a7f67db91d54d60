#!/usr/bin/env bash
# Bulk TCP throughput through the sidecar in transparent mode (capture + `proxy --transparent`)
# against explicit mode (`--listen`/`--upstream`) and no proxy, same run, rounds interleaved.
# Two network namespaces joined by a veth pair: the client namespace runs iperf3 -c, the server
# namespace ("the pod") runs the iperf3 servers and the sidecars:
#
#   direct       client -> pod:5201 (iperf3)
#   explicit     client -> pod:5202 (meshmeter proxy --listen, as root) -> 127.0.0.1:5201
#   transparent  client -> pod:5203 -> capture (--inbound-ports 5203) -> :15006
#                (meshmeter proxy --transparent, as uid 1337) -> pod:5203 (a second iperf3)
#
#   sudo bench/transparent-throughput.sh                  # DURATION=3 s per run, ROUNDS=1
#   sudo ROUNDS=3 MESHMETER_BIN=target/debug/meshmeter bench/transparent-throughput.sh
#
# Needs root, iproute2, iptables, setpriv and iperf3. Environment: DURATION (1-30), ROUNDS
# (1-9, median shown), PIN=0, LOAD_CPUS, PROXY_CPUS, MESHMETER_BIN. Both proxies get the same
# flags and the same core. The namespaces are deleted on exit, however the script ends.
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-3}
if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 1 || DURATION > 30)); then
    die "DURATION must be 1-30 seconds, got '$DURATION'"
fi
require iperf3 ip iptables-restore setpriv python3
[[ -x $MESHMETER_BIN ]] || die "$MESHMETER_BIN not built (cargo build --release, or set MESHMETER_BIN)"

NS_CLIENT="mmbench$$c"
NS_POD="mmbench$$p"
CLIENT_IP=10.214.0.1
POD_IP=10.214.0.2
STREAMS=(1 8)
SETUPS=(direct explicit transparent)

remove_namespaces() {
    ip netns del "$NS_CLIENT" 2>/dev/null || true
    ip netns del "$NS_POD" 2>/dev/null || true
}
# Processes first (lib.sh's cleanup), then the namespaces they ran in.
trap 'cleanup; remove_namespaces' EXIT

ip netns add "$NS_CLIENT" || die "cannot create a network namespace (needs root)"
ip netns add "$NS_POD"
for ns in "$NS_CLIENT" "$NS_POD"; do ip -n "$ns" link set lo up; done
ip -n "$NS_CLIENT" link add eth0 type veth peer name eth0 netns "$NS_POD"
ip -n "$NS_CLIENT" addr add "$CLIENT_IP/24" dev eth0
ip -n "$NS_POD" addr add "$POD_IP/24" dev eth0
ip -n "$NS_CLIENT" link set eth0 up
ip -n "$NS_POD" link set eth0 up
ip netns exec "$NS_POD" "$MESHMETER_BIN" capture --inbound-ports 5203 >/dev/null ||
    die "meshmeter capture failed in $NS_POD"

in_pod() { ip netns exec "$NS_POD" "$@"; }
PROXY_FLAGS=(--metrics-addr 127.0.0.1:15020 --threads 1)
start_bg iperf3-a "$LOAD_CPUS" ip netns exec "$NS_POD" iperf3 -s -p 5201
start_bg iperf3-b "$LOAD_CPUS" ip netns exec "$NS_POD" iperf3 -s -p 5203
start_bg explicit "$PROXY_CPUS" ip netns exec "$NS_POD" "$MESHMETER_BIN" proxy \
    --listen 0.0.0.0:5202 --upstream 127.0.0.1:5201 --metrics-addr 127.0.0.1:15021 --threads 1
start_bg transparent "$PROXY_CPUS" ip netns exec "$NS_POD" setpriv --reuid 1337 --regid 1337 \
    --clear-groups "$MESHMETER_BIN" proxy --transparent "${PROXY_FLAGS[@]}"

# Bounded wait until every port accepts, from the client namespace.
for port in 5201 5202 5203; do
    for i in $(seq 1 100); do
        if ip netns exec "$NS_CLIENT" bash -c "exec 3<>/dev/tcp/$POD_IP/$port" 2>/dev/null; then
            break
        fi
        ((i < 100)) || die "port $port in the pod never accepted"
        sleep 0.1
    done
done

measure() {
    local port=$1 streams=$2 out="$WORK_DIR/iperf-$1-$2.json" attempt
    for attempt in 1 2; do
        if timeout --foreground $((DURATION + 20)) "${LOAD_PREFIX[@]}" ip netns exec "$NS_CLIENT" \
            iperf3 -c "$POD_IP" -p "$port" -t "$DURATION" -O 1 -P "$streams" -J >"$out" 2>&1; then
            break
        fi
        log "iperf3 to port $port, $streams stream(s) failed (attempt $attempt)"
        sleep 1
    done
    python3 -c 'import json, sys
try:
    print("%.2f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))
except (OSError, ValueError, KeyError):
    print("error")' "$out"
}

declare -A port=([direct]=5201 [explicit]=5202 [transparent]=5203) result
for round in $(seq 1 "$ROUNDS"); do
    for setup in "${SETUPS[@]}"; do
        for s in "${STREAMS[@]}"; do
            log "round $round/$ROUNDS: $setup, $s stream(s), ${DURATION}s"
            result[$setup,$s]+="$(measure "${port[$setup]}" "$s") "
        done
    done
done
for key in "${!result[@]}"; do
    # shellcheck disable=SC2086  # a space-separated list of figures
    result[$key]=$(median ${result[$key]})
done
# The transparent sidecar must have forwarded every run, not been bypassed.
accepted=$(in_pod bash -c 'exec 3<>/dev/tcp/127.0.0.1/15020; printf "GET /metrics HTTP/1.0\r\n\r\n" >&3; cat <&3' |
    awk '/^meshmeter_proxy_connections_accepted_total /{print $2}')

print_header "transparent-throughput: iperf3, ${DURATION}s per run (first second omitted), receiver Gbit/s; $(basename "$MESHMETER_BIN") at $MESHMETER_BIN"
printf '# transparent sidecar accepted %s connections (per run: iperf3 control + one per stream; plus 1 readiness probe)\n' "${accepted:-?}"
printf '%-12s | %10s %13s | %10s %13s\n' setup "1 str Gb/s" "vs explicit" "8 str Gb/s" "vs explicit"
printf '%s\n' "-------------+--------------------------+--------------------------"
for setup in "${SETUPS[@]}"; do
    row=$(printf '%-12s |' "$setup")
    for s in "${STREAMS[@]}"; do
        v=${result[$setup,$s]:-error}
        row+=$(printf ' %10s %13s |' "$v" "$(ratio "$v" "${result[explicit,$s]:-}")")
    done
    printf '%s\n' "${row%|}"
done
