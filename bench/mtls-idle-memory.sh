#!/usr/bin/env bash
# Sidecar memory per idle connection with mutual TLS: a client sidecar originating mTLS
# (--tls-mode istio-mutual) and a server sidecar terminating it (--peer-authentication strict),
# with `meshmeter ca` issuing their certificates, against the same two sidecars in plaintext,
# in one run. COUNT connections are opened through each pair (one byte echoed on each, so
# every handshake has completed) and held idle; the table shows each sidecar's RSS before and
# after, and the mTLS/plaintext ratio of KiB per connection. RSS leaves out kernel socket
# buffers.
#
#   bench/mtls-idle-memory.sh
#   COUNT=1000 MESHMETER_BIN=target/debug/meshmeter bench/mtls-idle-memory.sh
#
# Environment: COUNT (default 1000), MESHMETER_BIN, PIN=0, PROXY_CPUS, LOAD_CPUS.
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT=${COUNT:-1000}
if ! [[ $COUNT =~ ^[0-9]+$ ]] || ((COUNT < 10 || COUNT > 20000)); then
    die "COUNT must be 10-20000, got '$COUNT'"
fi
require socat python3 ss
why=$(meshmeter_unavailable meshmeter)
[[ -z $why ]] || die "$why"
[[ $("$MESHMETER_BIN" ca --help 2>&1) == *bootstrap-token-file* ]] ||
    die "$MESHMETER_BIN has no 'ca' subcommand"
hard=$(ulimit -Hn)
ulimit -n "$hard"

printf 'ratings-token-0123456789 default/ratings\nmongodb-token-0123456789 default/mongodb\n' \
    >"$WORK_DIR/tokens"
echo ratings-token-0123456789 >"$WORK_DIR/ratings.token"
echo mongodb-token-0123456789 >"$WORK_DIR/mongodb.token"
ca_port=$(free_port)
start_bg ca "" "$MESHMETER_BIN" ca --listen "127.0.0.1:$ca_port" \
    --bootstrap-token-file "$WORK_DIR/tokens" --write-root-cert "$WORK_DIR/root.pem"
wait_port "$ca_port"
echo_port=$(free_port)
start_bg echo "${LOAD_CPUS:-}" socat "TCP-LISTEN:$echo_port,bind=127.0.0.1,fork,reuseaddr,backlog=4096" EXEC:cat
wait_port "$echo_port"

common=(--threads 1 --max-connections $((COUNT + 16)) --log "${SIDECAR_LOG:-error}")
ca=(--ca-addr "127.0.0.1:$ca_port" --ca-root "$WORK_DIR/root.pem")
declare -A port pid
for name in mtls-server mtls-client plain-server plain-client; do port[$name]=$(free_port); done
sidecar() {
    local name=$1
    shift
    start_bg "$name" "${PROXY_CPUS:-}" "$MESHMETER_BIN" proxy "${common[@]}" \
        --listen "127.0.0.1:${port[$name]}" "$@"
    pid[$name]=$BG_PID
    wait_port "${port[$name]}" 40
}
sidecar mtls-server --upstream "127.0.0.1:$echo_port" --peer-authentication strict "${ca[@]}" \
    --ca-token-file "$WORK_DIR/mongodb.token" --workload-identity cluster.local/ns/default/sa/mongodb
sidecar mtls-client --upstream "127.0.0.1:${port[mtls-server]}" --reporter-kind outbound \
    --tls-mode istio-mutual "${ca[@]}" --ca-token-file "$WORK_DIR/ratings.token" \
    --workload-identity cluster.local/ns/default/sa/ratings
sidecar plain-server --upstream "127.0.0.1:$echo_port"
sidecar plain-client --upstream "127.0.0.1:${port[plain-server]}"

rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
declare -A before after
for name in "${!pid[@]}"; do before[$name]=$(rss "${pid[$name]}"); done
log "opening $COUNT idle connections through each pair"
timeout --foreground 300 python3 - "$COUNT" "${port[mtls-client]}" "${port[plain-client]}" \
    "$WORK_DIR/held" <<'PY' &
import socket, sys, time
count, ports, flag = int(sys.argv[1]), sys.argv[2:4], sys.argv[4]
held = []
for port in ports:
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", int(port)))
        s.sendall(b"x")
        held.append(s)
for s in held:
    assert s.recv(1) == b"x"
open(flag, "w").close()
time.sleep(600)
PY
client=$!
for _ in $(seq 1 3000); do
    [[ -e $WORK_DIR/held ]] && break
    kill -0 "$client" 2>/dev/null || break
    sleep 0.1
done
if [[ ! -e $WORK_DIR/held ]]; then
    tail -n 3 "$WORK_DIR"/*-server.log "$WORK_DIR"/*-client.log >&2
    die "the connections were not all established"
fi
sleep 1
for name in "${!pid[@]}"; do after[$name]=$(rss "${pid[$name]}"); done
kill "$client" 2>/dev/null || true

print_header "mtls-idle-memory: sidecar RSS before/after $COUNT idle connections, mTLS vs plaintext"
printf '# meshmeter %s, --threads 1; mTLS: TLS 1.3, ECDSA P-256 workload certificates\n' \
    "$("$MESHMETER_BIN" --version | cut -d' ' -f2)"
printf '%-13s | %10s %10s | %8s | %s\n' sidecar "before KiB" "after KiB" KiB/conn "mTLS/plain"
printf '%s\n' "--------------+-----------------------+----------+-----------"
for side in server client; do
    for kind in plain mtls; do
        name=$kind-$side
        per=$(python3 -c 'import sys
b, a, n = map(float, sys.argv[1:4])
print(f"{(a - b) / n:.1f}")' "${before[$name]}" "${after[$name]}" "$COUNT")
        declare "per_$kind=$per"
        ratio_text=""
        [[ $kind == mtls ]] && ratio_text=$(ratio "$per_mtls" "$per_plain")
        printf '%-13s | %10s %10s | %8s | %s\n' "$name" "${before[$name]}" "${after[$name]}" \
            "$per" "$ratio_text"
    done
done
