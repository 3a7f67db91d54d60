#!/usr/bin/env bash
# The control plane's fan-out: SIDECARS simulated sidecars (each its own HTTP/2 stream and
# connection) connected to one `meshmeter control` (catalog from a workloads file with
# SERVICES services of ENDPOINTS endpoints each, sidecars spread over SHAPES namespaces), then
# CHANGES changes (one endpoint more, written to the file): the time from the write to the last
# sidecar's acknowledgement of the update it caused (the file poll, settle and reload are
# included: --reload-interval 100ms; then, of that, from the first sidecar's ack to the last
# one's), and the control plane's RSS. Targets (issue 17): every
# sidecar updated within 1 s, RSS at most 100 MB.
#
#   cargo build --release -p meshmeter
#   cargo build --release -p meshmeter-control --example control_fanout
#   bench/control-fanout.sh
#   SIDECARS=200 bench/control-fanout.sh
#
# Environment: SIDECARS (1000), SHAPES (20), SERVICES (50), ENDPOINTS (20), CHANGES (3),
# PIN=0, LOAD_CPUS, PROXY_CPUS (the control plane's core), MESHMETER_BIN, FANOUT_BIN.
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIDECARS=${SIDECARS:-1000}
SHAPES=${SHAPES:-20}
SERVICES=${SERVICES:-50}
ENDPOINTS=${ENDPOINTS:-20}
CHANGES=${CHANGES:-3}
FANOUT_BIN=${FANOUT_BIN:-$REPO_DIR/target/release/examples/control_fanout}
for v in SIDECARS SHAPES SERVICES ENDPOINTS CHANGES; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive number, got '${!v}'"
done
((SERVICES <= 1000)) || die "SERVICES must be at most 1000"
[[ -x $MESHMETER_BIN ]] || die "$MESHMETER_BIN not found (cargo build --release -p meshmeter)"
[[ -x $FANOUT_BIN ]] ||
    die "$FANOUT_BIN not found (cargo build --release -p meshmeter-control --example control_fanout)"
"$MESHMETER_BIN" control --help >/dev/null 2>&1 || die "$MESHMETER_BIN has no 'control' subcommand"
require ss python3

# One descriptor per sidecar connection on each side, plus some.
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((SIDECARS > hard - 256)); then
    die "SIDECARS=$SIDECARS needs more descriptors than the hard limit ($hard) allows"
fi
ulimit -n "$hard"

file=$WORK_DIR/workloads.yaml
"$FANOUT_BIN" init "$file" "$SERVICES" "$ENDPOINTS"
port=$(free_port)
start_bg control "$PROXY_CPUS" "$MESHMETER_BIN" --log warn control \
    --listen "127.0.0.1:$port" --workloads "$file" --reload-interval 100ms
control_pid=$BG_PID
wait_port "$port" 30
log "control plane on 127.0.0.1:$port (pid $control_pid); connecting $SIDECARS sidecars"
out=$(timeout --foreground 600 "${LOAD_PREFIX[@]}" "$FANOUT_BIN" run "127.0.0.1:$port" "$file" \
    "$control_pid" "$SIDECARS" "$SHAPES" "$CHANGES" "$SERVICES" "$ENDPOINTS") ||
    die "the load generator failed: $out; control plane log: $(tail -c 400 "$WORK_DIR/control.log")"
declare -A r
while IFS='=' read -r k v; do r[$k]=$v; done <<<"$out"

print_header "control-fanout: $SIDECARS sidecars, one change pushed to all"
printf '# %s services x %s endpoints (%s), %s workload shapes; control plane on cpu %s\n' \
    "$SERVICES" "$ENDPOINTS" "${r[endpoints]}" "$SHAPES" "${PROXY_CPUS:-any}"
printf '%-44s | %10s | %s\n' measure value target
printf '%s\n' "---------------------------------------------+------------+--------"
printf '%-44s | %7s ms | %s\n' "initial sync (connect to last full view)" "${r[initial_sync_ms]}" "-"
for ((i = 1; i <= CHANGES; i++)); do
    printf '%-44s | %7s ms | %s\n' "change $i: file write to last sidecar's ack" "${r[round${i}_ms]}" "<= 1000 ms"
    printf '%-44s | %7s ms | %s\n' "  of which first to last sidecar's ack" "${r[round${i}_spread_ms]}" "-"
done
printf '%-44s | %7s MB | %s\n' "control plane RSS after the initial sync" "$((r[rss_synced_kib] / 1024))" "<= 100 MB"
printf '%-44s | %7s MB | %s\n' "control plane RSS at the end" "$((r[rss_end_kib] / 1024))" "<= 100 MB"
printf '%-44s | %7s MB | %s\n' "control plane peak RSS (VmHWM)" "$((r[rss_peak_kib] / 1024))" "<= 100 MB"
