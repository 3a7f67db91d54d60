#!/usr/bin/env bash
# Runs every meshmeter test: the one test command of the README, and what CI runs.
#
#   scripts/test.sh           install test deps, lints, normal suite, then the #[ignore]d suite
#   scripts/test.sh --quick   lints and normal suite only (no installs, no external servers)
#
# Steps:
#   1. scripts/install-test-deps.sh: prometheus, promtool, redis, haproxy, iperf3, socat from
#      Debian's packages (idempotent; skipped with --quick).
#   2. cargo fmt --all --check: formatting.
#   3. cargo clippy --workspace --all-targets -- -D warnings: every lint is an error.
#   4. cargo doc --no-deps --workspace with RUSTDOCFLAGS=-D warnings: docs build, links resolve.
#   5. cargo test --workspace: the normal suite; needs no external server.
#   6. cargo test --workspace --tests -- --ignored: the end-to-end and heavy tests, which find
#      prometheus, promtool, redis-server and haproxy on PATH. They run on step 4's debug
#      build: a second, optimised build of every test target cost more time than the tests
#      gain from it (the whole script stays under 15 minutes from a clean clone on 2 cores).
#      `--tests` keeps doctests out of this step: `--ignored` would otherwise run the
#      ```ignore examples, which are ignored because they are not meant to compile on their
#      own.
#
# Every step runs even when an earlier one fails (except that the ignored suite is skipped when
# the installs failed), so one CI run shows every failure. A summary ends the output.
#
# Exit codes: 0 all steps passed, 1 some step failed, 2 bad usage.
set -euo pipefail

usage() {
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
}

quick=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'test.sh: unknown argument: %s\n' "$arg" >&2; usage >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [[ -n ${CI:-} ]]; then
    export CARGO_TERM_COLOR=never
    # A clean clone builds once; incremental artefacts would only cost disk and time.
    export CARGO_INCREMENTAL=0
fi
# haproxy is installed to /usr/sbin, which a non-login shell may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin" ;; esac
export PATH
# Tests that hold thousands of sockets need more than the usual 1024 descriptors; the hard
# limit is as far as an unprivileged raise goes.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

names=()
results=()
times=()
failed=0

# run_step NAME CMD...: runs one step, records pass/fail and wall time; never exits.
run_step() {
    local name=$1 start rc
    shift
    printf '\n==> %s: %s\n' "$name" "$*"
    start=$SECONDS
    set +e
    "$@"
    rc=$?
    set -e
    names+=("$name")
    times+=("$((SECONDS - start))s")
    if ((rc == 0)); then
        results+=("ok")
    else
        results+=("FAILED (exit $rc)")
        failed=1
    fi
    return "$rc"
}

skip_step() {
    names+=("$1")
    results+=("skipped ($2)")
    times+=("-")
}

if ((quick)); then
    skip_step "install test deps" "--quick"
else
    run_step "install test deps" bash scripts/install-test-deps.sh || true
fi

run_step "cargo fmt --check" cargo fmt --all --check || true
run_step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings || true
run_step "cargo doc" env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace || true
run_step "cargo test (normal suite)" cargo test --workspace || true

if ((quick)); then
    skip_step "cargo test --ignored (end-to-end)" "--quick"
elif [[ ${results[0]} != ok ]]; then
    skip_step "cargo test --ignored (end-to-end)" "test deps missing"
else
    run_step "cargo test --ignored (end-to-end)" \
        cargo test --workspace --tests -- --ignored || true
fi

printf '\n==> summary\n'
for i in "${!names[@]}"; do
    printf '  %-36s %-22s %s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
done
printf '  %-36s %-22s %s\n' "total" "" "${SECONDS}s"
if ((failed)); then
    printf 'test.sh: FAILED\n'
    exit 1
fi
printf 'test.sh: all steps passed\n'
