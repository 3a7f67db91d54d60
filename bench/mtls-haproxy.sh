#!/usr/bin/env bash
# Two mTLS sidecars against two HAProxy instances doing TLS with client-certificate
# verification (OpenSSL), and both pairs in plaintext, on the same path, in one run:
#
#   client -> proxy A (plain in, originates TLS) -> proxy B (terminates TLS, verifies the
#   client certificate) -> upstream
#
# Bulk throughput: iperf3, one stream, receiver Gbit/s (first second omitted). New connections
# per second: a client (threads on the load core) opening connections for DURATION seconds,
# each sending one byte, waiting for the upstream's echo through both proxies (so both
# handshakes completed) and closing; the table also gives the two proxies' CPU time per
# connection, which does not depend on how fast the client is.
#
# Certificates: one ECDSA P-256 root made with openssl; `meshmeter ca --ca-cert/--ca-key` issues
# the sidecars' certificates from it, openssl issues HAProxy's (P-256, the same SPIFFE URI SANs
# and usages), so both pairs verify the same chain shape. Both pairs speak TLS 1.3 only with the
# same preferences: AES-128-GCM first (meshmeter's order, which is Envoy's; HAProxy is told to
# match, OpenSSL's default putting AES-256-GCM first) and X25519 first (both libraries'
# default); both resume sessions with tickets by default.
#
#   bench/mtls-haproxy.sh                     # DURATION=5 s per measurement, ROUNDS=1
#   ROUNDS=3 DURATION=5 bench/mtls-haproxy.sh
#
# Environment: DURATION (1-30 s), ROUNDS (1-9, median shown), SETUPS (default "meshmeter-plain
# meshmeter-mtls haproxy-plain haproxy-mtls"), CLIENT_THREADS (default 8), MESHMETER_BIN, PIN=0,
# PROXY_CPUS (both proxies of a pair share it), LOAD_CPUS (client, iperf3, echo upstream).
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-5}
if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 1 || DURATION > 30)); then
    die "DURATION must be 1-30 seconds, got '$DURATION'"
fi
CLIENT_THREADS=${CLIENT_THREADS:-8}
if ! [[ $CLIENT_THREADS =~ ^[0-9]+$ ]] || ((CLIENT_THREADS < 1 || CLIENT_THREADS > 64)); then
    die "CLIENT_THREADS must be 1-64, got '$CLIENT_THREADS'"
fi
SETUPS=${SETUPS:-meshmeter-plain meshmeter-mtls haproxy-plain haproxy-mtls}
require iperf3 haproxy openssl python3 ss
why=$(meshmeter_unavailable meshmeter)
[[ -z $why ]] || die "$why"
[[ $("$MESHMETER_BIN" ca --help 2>&1) == *--ca-key* ]] ||
    die "$MESHMETER_BIN has no 'ca' subcommand with --ca-key"
hard=$(ulimit -Hn)
ulimit -n "$hard"

# --- certificates -------------------------------------------------------------------------
W=$WORK_DIR
p256=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${p256[@]}" -keyout "$W/root.key" -out "$W/root.pem" -days 7 \
    -subj "/O=cluster.local/CN=meshmeter bench root" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
    die "openssl could not make the root"
# leaf NAME SERVICE_ACCOUNT: NAME.pem holds certificate then key, as HAProxy's `crt` wants.
leaf() {
    openssl req -new "${p256[@]}" -keyout "$W/$1.key" -out "$W/$1.csr" -subj "/O=cluster.local" \
        2>/dev/null || die "openssl could not make the $1 key"
    printf '%s\n' "subjectAltName=critical,URI:spiffe://cluster.local/ns/default/sa/$2" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth,clientAuth" "basicConstraints=critical,CA:FALSE" \
        >"$W/$1.ext"
    openssl x509 -req -in "$W/$1.csr" -CA "$W/root.pem" -CAkey "$W/root.key" \
        -CAcreateserial -days 1 -sha256 -extfile "$W/$1.ext" -out "$W/$1.crt" 2>/dev/null ||
        die "openssl could not issue the $1 certificate"
    cat "$W/$1.crt" "$W/$1.key" >"$W/$1.pem"
}
leaf haproxy-client ratings
leaf haproxy-server mongodb

printf 'ratings-token-0123456789 default/ratings\nmongodb-token-0123456789 default/mongodb\n' \
    >"$W/tokens"
echo ratings-token-0123456789 >"$W/ratings.token"
echo mongodb-token-0123456789 >"$W/mongodb.token"
ca_port=$(free_port)
start_bg ca "$LOAD_CPUS" "$MESHMETER_BIN" --log warn ca --listen "127.0.0.1:$ca_port" \
    --ca-cert "$W/root.pem" --ca-key "$W/root.key" --bootstrap-token-file "$W/tokens"
wait_port "$ca_port"

# --- upstreams ------------------------------------------------------------------------------
iperf_port=$(free_port)
start_bg iperf3-server "$LOAD_CPUS" iperf3 -s -B 127.0.0.1 -p "$iperf_port"
wait_port "$iperf_port"
echo_port=$(free_port)
start_bg echo "$LOAD_CPUS" python3 -c '
import asyncio, socket, sys

async def serve(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with server:
        await server.serve_forever()

asyncio.run(main())' "$echo_port"
wait_port "$echo_port"

# --- the pairs ------------------------------------------------------------------------------
# haproxy_pair KIND A_PORT B_PORT UPSTREAM_PORT: HAProxy A forwards to B, B to the upstream;
# with KIND mtls, A originates TLS with its client certificate and verifies B's against the
# root, B requires and verifies A's. One thread each, like the sidecars' --threads 1.
TLS13_SUITES=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
haproxy_pair() {
    local kind=$1 a=$2 b=$3 up=$4 bind_ssl="" server_ssl=""
    if [[ $kind == mtls ]]; then
        bind_ssl="ssl crt $W/haproxy-server.pem ca-file $W/root.pem verify required"
        server_ssl="ssl crt $W/haproxy-client.pem ca-file $W/root.pem verify required"
    fi
    local name port next extra sx
    for name in a b; do
        if [[ $name == a ]]; then port=$a next=$b extra="" sx=$server_ssl; else
            port=$b next=$up extra=$bind_ssl sx=""
        fi
        cat >"$W/haproxy-$kind-$name.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3
    ssl-default-bind-ciphersuites $TLS13_SUITES
    ssl-default-server-ciphersuites $TLS13_SUITES

defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m

frontend bench_in
    bind 127.0.0.1:$port $extra
    default_backend bench_out

backend bench_out
    server next 127.0.0.1:$next $sx
EOF
        haproxy -c -q -f "$W/haproxy-$kind-$name.cfg" ||
            die "generated haproxy-$kind-$name.cfg is invalid"
    done
    start_bg "haproxy-$kind-b" "$PROXY_CPUS" haproxy -db -f "$W/haproxy-$kind-b.cfg"
    PAIR_PIDS=("$BG_PID")
    wait_port "$b"
    start_bg "haproxy-$kind-a" "$PROXY_CPUS" haproxy -db -f "$W/haproxy-$kind-a.cfg"
    PAIR_PIDS+=("$BG_PID")
    wait_port "$a"
}

meshmeter_pair() {
    local kind=$1 a=$2 b=$3 up=$4 a_tls=() b_tls=()
    local ca=(--ca-addr "127.0.0.1:$ca_port" --ca-root "$W/root.pem")
    if [[ $kind == mtls ]]; then
        b_tls=(--peer-authentication strict "${ca[@]}" --ca-token-file "$W/mongodb.token"
            --workload-identity cluster.local/ns/default/sa/mongodb)
        a_tls=(--reporter-kind outbound --tls-mode istio-mutual "${ca[@]}"
            --ca-token-file "$W/ratings.token" --workload-identity cluster.local/ns/default/sa/ratings)
    fi
    local common=(--log warn proxy --threads 1 --max-connections 8000)
    start_bg "meshmeter-$kind-b" "$PROXY_CPUS" "$MESHMETER_BIN" "${common[@]}" \
        --listen "127.0.0.1:$b" --upstream "127.0.0.1:$up" "${b_tls[@]}"
    PAIR_PIDS=("$BG_PID")
    wait_port "$b" 40
    start_bg "meshmeter-$kind-a" "$PROXY_CPUS" "$MESHMETER_BIN" "${common[@]}" \
        --listen "127.0.0.1:$a" --upstream "127.0.0.1:$b" "${a_tls[@]}"
    PAIR_PIDS+=("$BG_PID")
    wait_port "$a" 40
}

# start_pair SETUP UPSTREAM_PORT: starts the setup's two proxies; sets PAIR_PIDS and PAIR_PORT.
start_pair() {
    local a b
    a=$(free_port)
    b=$(free_port)
    case "$1" in
        meshmeter-plain) meshmeter_pair plain "$a" "$b" "$2" ;;
        meshmeter-mtls) meshmeter_pair mtls "$a" "$b" "$2" ;;
        haproxy-plain) haproxy_pair plain "$a" "$b" "$2" ;;
        haproxy-mtls) haproxy_pair mtls "$a" "$b" "$2" ;;
        *) die "unknown setup '$1'" ;;
    esac
    PAIR_PORT=$a
}

stop_pair() {
    local pid
    for pid in "${PAIR_PIDS[@]}"; do stop_bg "$pid"; done
}

pair_cpu() {
    python3 -c 'import sys; print(sum(map(float, sys.argv[1:])))' \
        "$(cpu_seconds "${PAIR_PIDS[0]}")" "$(cpu_seconds "${PAIR_PIDS[1]}")"
}

# --- measurements ---------------------------------------------------------------------------
gbits() {
    local port=$1 out="$W/iperf-$1.json" attempt
    for attempt in 1 2; do
        if timeout --foreground $((DURATION + 20)) "${LOAD_PREFIX[@]}" iperf3 -c 127.0.0.1 \
            -p "$port" -t "$DURATION" -O 1 --connect-timeout 3000 -J >"$out" 2>&1; then
            break
        fi
        log "iperf3 via port $port failed (attempt $attempt)"
        sleep 1
    done
    python3 -c 'import json, sys
try:
    print("%.2f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))
except (OSError, ValueError, KeyError):
    print("error")' "$out"
}

# conns PORT: prints "connections_per_second failures".
conns() {
    timeout --foreground $((DURATION + 30)) "${LOAD_PREFIX[@]}" python3 -c '
import socket, sys, threading, time
port, duration, threads = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
done, failed = [0] * threads, [0] * threads
start = time.monotonic()
deadline = start + duration

def run(i):
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(b"x")
                if s.recv(1) != b"x":
                    raise ConnectionError("no echo")
            done[i] += 1
        except OSError:
            failed[i] += 1

workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(f"{sum(done) / (time.monotonic() - start):.0f} {sum(failed)} {sum(done)}")
' "$1" "$DURATION" "$CLIENT_THREADS"
}

declare -A tput rate cpu fails
for round in $(seq 1 "$ROUNDS"); do
    for setup in $SETUPS; do
        log "round $round/$ROUNDS: $setup, throughput ${DURATION}s"
        start_pair "$setup" "$iperf_port"
        tput[$setup]+="$(gbits "$PAIR_PORT") "
        stop_pair
        log "round $round/$ROUNDS: $setup, new connections ${DURATION}s"
        start_pair "$setup" "$echo_port"
        # One connection first: certificates fetched, sessions cached, pools warm.
        conns_warm=$(DURATION=1 conns "$PAIR_PORT")
        [[ ${conns_warm%% *} != 0 ]] || die "$setup: no connection got through"
        before=$(pair_cpu)
        read -r per_s failed total < <(conns "$PAIR_PORT")
        after=$(pair_cpu)
        stop_pair
        rate[$setup]+="$per_s "
        fails[$setup]=$((${fails[$setup]:-0} + failed))
        cpu[$setup]+="$(python3 -c 'import sys
b, a, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"{(a - b) / n * 1e6:.0f}" if n else "error")' "$before" "$after" "$total") "
    done
done
for setup in $SETUPS; do
    # shellcheck disable=SC2086  # space-separated lists of figures
    tput[$setup]=$(median ${tput[$setup]})
    # shellcheck disable=SC2086
    rate[$setup]=$(median ${rate[$setup]})
    # shellcheck disable=SC2086
    cpu[$setup]=$(median ${cpu[$setup]})
done

print_header "mtls-haproxy: two proxies in a row, plaintext and mTLS, ${DURATION}s per run"
printf '# haproxy %s (%s), nbthread 1; meshmeter %s, --threads 1; both proxies of a pair on the proxy cpu\n' \
    "$(haproxy -v | head -n1 | cut -d' ' -f3)" "$(haproxy -vv | grep -m1 'Running on OpenSSL' | cut -d: -f2 | sed 's/^ *//')" \
    "$("$MESHMETER_BIN" --version | cut -d' ' -f2)"
printf '# TLS 1.3 (AES-128-GCM, X25519), ECDSA P-256 certificates from one root; conn/s: %s client threads, 1 byte echoed per connection\n' \
    "$CLIENT_THREADS"
printf '%-16s | %9s %10s | %9s %10s %14s %8s\n' setup "Gbit/s" "vs haproxy" "conn/s" \
    "vs haproxy" "pair CPU us/conn" failures
printf '%s\n' "-----------------+-----------------------+-------------------------------------------"
for setup in $SETUPS; do
    other=${setup/meshmeter/haproxy}
    printf '%-16s | %9s %10s | %9s %10s %14s %8s\n' "$setup" "${tput[$setup]}" \
        "$(ratio "${tput[$setup]}" "${tput[$other]:-}")" "${rate[$setup]}" \
        "$(ratio "${rate[$setup]}" "${rate[$other]:-}")" "${cpu[$setup]}" "${fails[$setup]}"
done
if [[ -n ${tput[meshmeter-mtls]:-} && -n ${tput[meshmeter-plain]:-} ]]; then
    printf '# meshmeter mTLS / plaintext throughput: %s\n' \
        "$(ratio "${tput[meshmeter-mtls]}" "${tput[meshmeter-plain]}")"
fi
