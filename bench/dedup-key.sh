#!/usr/bin/env bash
# The cost of retry deduplication: the telemetry server's ingest rate with a deduplication key
# on every request (`loadgen --report-id`, as every meshmeter proxy sends) against the same
# load without one, in same-run pairs (alternating, a fresh server per run).
#
#   bench/dedup-key.sh                 # PAIRS=3 pairs per row, DURATION=5 seconds per run
#   PAIRS=5 DURATION=8 bench/dedup-key.sh
#
# Two figures per run: bags/s (wall clock, swings with other load on the machine) and bags per
# server CPU-second (what one core of the server does; steadier on a shared machine). The
# ratio column is with-key / without-key of the CPU figure.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-5}
PAIRS=${PAIRS:-3}
# ROWS="100 4 4;1 32 2": batch, in flight, connections per row.
IFS=";" read -r -a ROWS <<<"${ROWS:-100 4 4;1 32 2}"
[[ -x $MESHMETER_BIN ]] || die "$MESHMETER_BIN not found (cargo build --release -p meshmeter)"
echo "## Deduplication key per request ($(date -u +%F), $(nproc) cores, load average at start: $START_LOADAVG)"
echo "Pinning: $PINNING. ${DURATION}s per run, seed + Istio default config, access log to a file."
echo
echo "| batch | in flight / connections | pair | bags/s without / with key | bags per server CPU-s without / with key | ratio (CPU) | verified |"
echo "|---|---|---|---|---|---|---|"
for row in "${ROWS[@]}"; do
    read -r batch concurrency connections <<<"$row"
    for pair in $(seq 1 "$PAIRS"); do
        read -r wall0 cpu0 ok0 <<<"$(mixer_run "$MESHMETER_BIN" "$batch" "$concurrency" "$connections")"
        read -r wall1 cpu1 ok1 <<<"$(mixer_run "$MESHMETER_BIN" "$batch" "$concurrency" "$connections" --report-id)"
        ratio=$(python3 -c "print(f'{$cpu1 / $cpu0:.2f}')")
        echo "| $batch | $concurrency/$connections | $pair | $wall0 / $wall1 | $cpu0 / $cpu1 | $ratio | $ok0 / $ok1 |"
    done
done
