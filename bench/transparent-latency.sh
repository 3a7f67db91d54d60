#!/usr/bin/env bash
# Redis GET latency (redis-benchmark, one client) through the sidecar between two network
# namespaces, same run, rounds interleaved:
#
#   direct        client -> pod:6379 (redis)
#   explicit      client -> pod:6380 (meshmeter proxy --listen, as root) -> 127.0.0.1:6379
#   transparent   client -> pod:6381 -> capture -> pod sidecar (uid 1337) -> redis on 6381
#   two-sidecars  client -> capture -> client sidecar (uid 1337) -> pod:6382 -> capture
#                 -> pod sidecar -> redis on 6382 (the seed's shape: a sidecar on each side)
#
#   sudo bench/transparent-latency.sh
#   sudo ROUNDS=3 REQUESTS=20000 MESHMETER_BIN=target/debug/meshmeter bench/transparent-latency.sh
#
# Needs root, iproute2, iptables, setpriv, redis-server and redis-benchmark. Environment:
# REQUESTS (default 10000), ROUNDS (1-9, median shown), PIN=0, LOAD_CPUS, PROXY_CPUS,
# MESHMETER_BIN. Every sidecar runs `--threads 1` on the proxy core. The namespaces are
# deleted on exit, however the script ends.
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${REQUESTS:-10000}
if ! [[ $REQUESTS =~ ^[0-9]+$ ]] || ((REQUESTS < 100 || REQUESTS > 1000000)); then
    die "REQUESTS must be 100-1000000, got '$REQUESTS'"
fi
require redis-server redis-benchmark ip iptables-restore setpriv python3
[[ -x $MESHMETER_BIN ]] || die "$MESHMETER_BIN not built (cargo build --release, or set MESHMETER_BIN)"

NS_CLIENT="mmlat$$c"
NS_POD="mmlat$$p"
CLIENT_IP=10.215.0.1
POD_IP=10.215.0.2
SETUPS=(direct explicit transparent two-sidecars)
declare -A port=([direct]=6379 [explicit]=6380 [transparent]=6381 [two-sidecars]=6382)

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
# The pod captures inbound 6381 and 6382; the client captures outbound traffic to 6382 only.
ip netns exec "$NS_POD" "$MESHMETER_BIN" capture --inbound-ports 6381,6382 >/dev/null ||
    die "meshmeter capture failed in the pod"
ip netns exec "$NS_CLIENT" "$MESHMETER_BIN" capture --inbound-ports 1 \
    --exclude-outbound-ports 6379,6380,6381 >/dev/null || die "meshmeter capture failed in the client"

SIDECAR=(setpriv --reuid 1337 --regid 1337 --clear-groups "$MESHMETER_BIN" proxy --transparent
    --threads 1 --metrics-addr 127.0.0.1:15020)
for p in 6379 6381 6382; do
    start_bg "redis-$p" "$LOAD_CPUS" ip netns exec "$NS_POD" redis-server --port "$p" \
        --save "" --appendonly no --protected-mode no
done
start_bg explicit "$PROXY_CPUS" ip netns exec "$NS_POD" "$MESHMETER_BIN" proxy \
    --listen 0.0.0.0:6380 --upstream 127.0.0.1:6379 --threads 1 --metrics-addr 127.0.0.1:15021
start_bg pod-sidecar "$PROXY_CPUS" ip netns exec "$NS_POD" "${SIDECAR[@]}"
start_bg client-sidecar "$PROXY_CPUS" ip netns exec "$NS_CLIENT" "${SIDECAR[@]}"

# Bounded wait until every setup answers, then store the key redis-benchmark's GET reads.
for setup in "${SETUPS[@]}"; do
    for i in $(seq 1 100); do
        if timeout 5 ip netns exec "$NS_CLIENT" redis-cli -h "$POD_IP" -p "${port[$setup]}" \
            set key:__rand_int__ xxx >/dev/null 2>&1; then
            break
        fi
        ((i < 100)) || die "$setup (port ${port[$setup]}) never answered"
        sleep 0.1
    done
done

declare -A p50 p99
for round in $(seq 1 "$ROUNDS"); do
    for setup in "${SETUPS[@]}"; do
        log "round $round/$ROUNDS: $setup, c=1, n=$REQUESTS"
        out="$WORK_DIR/$setup.csv"
        if ! timeout --foreground 300 "${LOAD_PREFIX[@]}" ip netns exec "$NS_CLIENT" \
            redis-benchmark -h "$POD_IP" -p "${port[$setup]}" -c 1 -n "$REQUESTS" -t get \
            --csv >"$out" 2>&1; then
            log "redis-benchmark via $setup failed: $(head -c 300 "$out")"
        fi
        line=$(grep '^"GET"' "$out" | tr -d '"' || true)
        # CSV fields: test, rps, avg, min, p50, p95, p99, max (latencies in ms).
        p50[$setup]+="$(cut -d, -f5 <<<"${line:-,,,,error}") "
        p99[$setup]+="$(cut -d, -f7 <<<"${line:-,,,,,,error}") "
    done
done
for setup in "${SETUPS[@]}"; do
    # shellcheck disable=SC2086  # space-separated lists of figures
    p50[$setup]=$(median ${p50[$setup]})
    # shellcheck disable=SC2086
    p99[$setup]=$(median ${p99[$setup]})
done
# Both sidecars must have carried the traffic, not been bypassed.
accepted() {
    ip netns exec "$1" bash -c 'exec 3<>/dev/tcp/127.0.0.1/15020; printf "GET /metrics HTTP/1.0\r\n\r\n" >&3; cat <&3' |
        awk '/^meshmeter_proxy_connections_accepted_total /{print $2}'
}

print_header "transparent-latency: redis-benchmark GET, c=1, n=$REQUESTS; $(basename "$MESHMETER_BIN") at $MESHMETER_BIN"
printf '# connections accepted: pod sidecar %s, client sidecar %s\n' "$(accepted "$NS_POD")" \
    "$(accepted "$NS_CLIENT")"
printf '%-13s | %8s %12s %12s | %8s %12s\n' setup "p50 ms" "+us vs expl" "x transparent" "p99 ms" "x explicit"
printf '%s\n' "--------------+------------------------------------+----------------------"
for setup in "${SETUPS[@]}"; do
    added=$(python3 -c 'import sys
try:
    print("%+.0f" % ((float(sys.argv[1]) - float(sys.argv[2])) * 1000))
except ValueError:
    print("-")' "${p50[$setup]}" "${p50[explicit]}")
    printf '%-13s | %8s %12s %12s | %8s %12s\n' "$setup" "${p50[$setup]}" "$added" \
        "$(ratio "${p50[$setup]}" "${p50[transparent]}")" "${p99[$setup]}" \
        "$(ratio "${p99[$setup]}" "${p99[explicit]}")"
done
