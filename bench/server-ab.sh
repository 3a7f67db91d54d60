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
MESHMETER_BIN=$B # loadgen comes from build B
[[ -x $A && -x $B ]] || die "A=$A and B=$B must both be executables"
echo "## Telemetry server A/B ($(date -u +%F), $(nproc) cores, load average at start: $START_LOADAVG)"
echo "A: $A; B: $B. Pinning: $PINNING. ${DURATION}s per run, seed + Istio default config, access log to a file."
echo
echo "| batch | in flight / connections | pair | bags/s A / B | bags per server CPU-s A / B | ratio B/A (CPU) | verified |"
echo "|---|---|---|---|---|---|---|"
for row in "${ROWS[@]}"; do
    read -r batch concurrency connections <<<"$row"
    for pair in $(seq 1 "$PAIRS"); do
        read -r wall0 cpu0 ok0 <<<"$(mixer_run "$A" "$batch" "$concurrency" "$connections")"
        read -r wall1 cpu1 ok1 <<<"$(mixer_run "$B" "$batch" "$concurrency" "$connections")"
        ratio=$(python3 -c "print(f'{$cpu1 / $cpu0:.2f}')")
        echo "| $batch | $concurrency/$connections | $pair | $wall0 / $wall1 | $cpu0 / $cpu1 | $ratio | $ok0 / $ok1 |"
    done
done
