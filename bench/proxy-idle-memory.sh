#!/usr/bin/env bash
# Memory per idle connection: the proxy's RSS before and after COUNT idle connections are
# opened through it (bench/idle_conns.py holds both ends), for meshmeter (splice and copy
# modes) and HAProxy in the same run, with the descriptors each connection costs. Prints one
# table. RSS does not include kernel memory such as socket and pipe buffers.
#
#   bench/proxy-idle-memory.sh
#   COUNT=2000 bench/proxy-idle-memory.sh
#
# Each connection costs the proxy two descriptors (client side and upstream side), so COUNT
# is capped at (hard fd limit - 64) / 2; the table says when the cap applied. KiB per
# connection is what to compare, not the totals.
#
# Environment: COUNT (default 10000), PIN=0, LOAD_CPUS, PROXY_CPUS, MESHMETER_BIN,
# SETUPS (default "meshmeter meshmeter-copy haproxy").
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT=${COUNT:-10000}
if ! [[ $COUNT =~ ^[0-9]+$ ]] || ((COUNT < 100 || COUNT > 100000)); then
    die "COUNT must be 100-100000, got '$COUNT'"
fi
SETUPS=${SETUPS:-meshmeter meshmeter-copy haproxy}
require haproxy taskset python3

hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((COUNT > (hard - 64) / 2)); then
    capped="capped from $COUNT: hard fd limit is $hard"
    COUNT=$(((hard - 64) / 2))
    log "COUNT $capped"
fi
# The proxies inherit this limit; raising it further needs privileges sandboxes may lack.
ulimit -n "$hard"

declare -A before after conns per fds note
stalled_any=0
for setup in $SETUPS; do
    if [[ $setup == meshmeter* ]]; then
        why=$(meshmeter_unavailable "$setup")
        if [[ -n $why ]]; then
            note[$setup]="skipped: $why"
            log "${note[$setup]}"
            continue
        fi
    fi
    upstream_port=$(free_port)
    port=$(free_port)
    # maxconn a little above COUNT: haproxy refuses connections beyond it, and sizes its fd
    # table from it at start (which the "before" reading therefore includes).
    start_proxy "$setup" "$port" "$upstream_port" $((COUNT + 16))
    proxy_pid=$BG_PID
    # start_bg execs the proxy in place, so the group leader's pid is the proxy's own.
    log "$setup: opening $COUNT idle connections"
    if out=$(timeout --foreground 180 "${LOAD_PREFIX[@]}" python3 "$BENCH_DIR/idle_conns.py" \
        --proxy-port "$port" --upstream-port "$upstream_port" --pid "$proxy_pid" \
        --count "$COUNT" 2>"$WORK_DIR/idle-$setup.err"); then
        # out: before_kib=N after_kib=N connections=N kib_per_conn=F fds_per_conn=F stalled=B
        read -r b a c k f st <<<"$out"
        before[$setup]=${b#*=}
        after[$setup]=${a#*=}
        conns[$setup]=${c#*=}
        per[$setup]=${k#*=}
        fds[$setup]=${f#*=}
        if [[ ${st#*=} == 1 ]]; then
            conns[$setup]+="*"
            stalled_any=1
        fi
    else
        note[$setup]="error: $(head -c 200 "$WORK_DIR/idle-$setup.err")"
        log "${note[$setup]}"
    fi
    stop_bg "$proxy_pid"
done

print_header "proxy-idle-memory: proxy RSS before/after $COUNT idle connections${capped:+ ($capped)}"
proxies_line "maxconn $((COUNT + 16))"
printf '%-14s | %10s %10s %7s | %8s %10s %8s\n' setup "before KiB" "after KiB" conns \
    "KiB/conn" "vs haproxy" "fds/conn"
printf '%s\n' "---------------+------------------------------+-----------------------------"
for setup in $SETUPS; do
    if [[ -n ${note[$setup]:-} ]]; then
        printf '%-14s | %s\n' "$setup" "${note[$setup]}"
        continue
    fi
    printf '%-14s | %10s %10s %7s | %8s %10s %8s\n' "$setup" "${before[$setup]}" \
        "${after[$setup]}" "${conns[$setup]}" "${per[$setup]}" \
        "$(ratio "${per[$setup]}" "${per[haproxy]:-}")" "${fds[$setup]}"
done
if ((stalled_any)); then
    printf '* the proxy stopped taking connections before %s (see fds/conn against the fd limit\n' "$COUNT"
    printf '  of %s); KiB/conn is over the connections it did forward\n' "$hard"
fi
