#!/usr/bin/env bash
# Installs the external servers and tools that meshmeter's end-to-end tests and whole-system
# benchmarks run against, from Debian's packages:
#
#   prometheus, promtool        package prometheus
#   redis-server                package redis-server
#   redis-cli, redis-benchmark  package redis-tools
#   haproxy                     package haproxy
#   iperf3                      package iperf3
#   socat                       package socat
#   iptables-restore            package iptables   (transparent capture, netns tests)
#   ip                          package iproute2   (netns tests)
#   setpriv                     package util-linux (runs the netns tests' sidecars as uid 1337)
#   openssl                     package openssl    (hostile mTLS clients)
#   python3                     package python3    (hostile mTLS clients)
#
# and, from PyPI into a venv at ~/.cache/meshmeter/kubernetes-validate (MESHMETER_KV_VENV),
# `kubernetes-validate`, which checks `meshmeter install` / `meshmeter inject` output against
# Kubernetes' schemas (crates/cli/tests/k8s_validate.rs). It is optional: when it cannot be
# installed a warning says so and that test skips.
#
# Idempotent: a program already on PATH is not reinstalled, and when nothing is missing apt is
# not touched at all. Needs root (or sudo) only when something is missing.
#
# Packaged daemons must not be started: there is no init system on CI or developer machines,
# and a packaged prometheus/redis/haproxy would hold the default ports and skew benchmarks.
# A policy-rc.d that answers 101 ("action forbidden") makes invoke-rc.d and deb-systemd-invoke
# skip the start; any daemon that appears during the install anyway is stopped by pid.
#
# Exit codes: 0 everything present and runnable, 1 an install or check failed (the package or
# program is named on stderr).
set -euo pipefail

# "program package" pairs; the program is what the tests look up on PATH.
readonly NEEDED=(
    "prometheus prometheus"
    "promtool prometheus"
    "redis-server redis-server"
    "redis-cli redis-tools"
    "redis-benchmark redis-tools"
    "haproxy haproxy"
    "iperf3 iperf3"
    "socat socat"
    "iptables-restore iptables"
    "ip iproute2"
    "setpriv util-linux"
    "openssl openssl"
    "python3 python3"
)
# Programs a package may start as a service behind our back.
readonly DAEMONS=(prometheus redis-server haproxy iperf3)

# haproxy lives in /usr/sbin, which a non-login shell may not have on PATH.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin" ;; esac
case ":$PATH:" in *:/sbin:*) ;; *) PATH="$PATH:/sbin" ;; esac
export PATH

log() { printf 'install-test-deps: %s\n' "$*"; }
die() { printf 'install-test-deps: error: %s\n' "$*" >&2; exit 1; }

# Prints a program's version line, proving the binary actually runs (not only that a file is
# there). Returns non-zero when it cannot run.
version_of() {
    local out
    case "$1" in
        haproxy) out=$(haproxy -v 2>&1) ;;
        ip) out=$(ip -V 2>&1) ;;
        openssl) out=$(openssl version 2>&1) ;;
        socat) out=$(socat -V 2>&1 | grep -m1 'socat version') ;;
        *) out=$("$1" --version 2>&1) ;;
    esac || return 1
    printf '%s\n' "$out" | head -n1
}

# Pids of the daemon programs currently running, one per line, sorted as comm(1) needs.
daemon_pids() {
    local d
    for d in "${DAEMONS[@]}"; do
        pgrep -x "$d" 2>/dev/null || true
    done | sort
}

missing_pkgs=()
for pair in "${NEEDED[@]}"; do
    read -r prog pkg <<<"$pair"
    if command -v "$prog" >/dev/null 2>&1; then
        continue
    fi
    log "missing program '$prog' (Debian package '$pkg')"
    case " ${missing_pkgs[*]-} " in *" $pkg "*) ;; *) missing_pkgs+=("$pkg") ;; esac
done

if ((${#missing_pkgs[@]} > 0)); then
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${missing_pkgs[*]}"
        SUDO=(sudo -n)
    fi

    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# meshmeter install-test-deps: forbid service starts during install\nexit 101\n' |
            "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        created_policy=1
    fi
    # shellcheck disable=SC2317  # called by the EXIT trap
    remove_policy() {
        if ((created_policy)); then "${SUDO[@]}" rm -f "$policy"; fi
    }
    trap remove_policy EXIT

    before=$(daemon_pids)

    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
        -o Dpkg::Options::=--force-confold)
    log "apt-get update"
    "${SUDO[@]}" apt-get "${apt_opts[@]}" update -qq </dev/null ||
        die "apt-get update failed"
    for pkg in "${missing_pkgs[@]}"; do
        # Captured first: grep -q closing the pipe early would fail the pipeline (pipefail).
        policy_out=$(apt-cache policy "$pkg" 2>/dev/null || true)
        if ! grep -q 'Candidate: [^(]' <<<"$policy_out"; then
            die "Debian package '$pkg' has no installation candidate (check apt sources)"
        fi
    done
    log "apt-get install ${missing_pkgs[*]}"
    # One package at a time, so a failure names the package that caused it.
    for pkg in "${missing_pkgs[@]}"; do
        if ! "${SUDO[@]}" apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "$pkg" \
            </dev/null >/tmp/install-test-deps.$$.log 2>&1; then
            cat /tmp/install-test-deps.$$.log >&2
            rm -f /tmp/install-test-deps.$$.log
            die "could not install Debian package '$pkg'"
        fi
        rm -f /tmp/install-test-deps.$$.log
        log "installed $pkg"
    done

    # A daemon that appeared during the install and was reparented to init is a packaged
    # service: stop exactly those pids. One with a live parent belongs to someone else (a test
    # running beside us) and is left alone.
    after=$(daemon_pids)
    stray=""
    for pid in $(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after")); do
        ppid=$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ' || true)
        if [[ $ppid == 1 ]]; then
            stray+="$pid "
        else
            log "leaving pid $pid alone: started during the install, but by pid ${ppid:-?}"
        fi
    done
    if [[ -n $stray ]]; then
        for pid in $stray; do
            log "stopping service started by the package: pid $pid ($(cat /proc/"$pid"/comm 2>/dev/null || echo gone))"
            "${SUDO[@]}" kill "$pid" 2>/dev/null || true
        done
        for _ in $(seq 1 50); do
            alive=0
            for pid in $stray; do
                if kill -0 "$pid" 2>/dev/null; then alive=1; fi
            done
            ((alive)) || break
            sleep 0.1
        done
        for pid in $stray; do
            "${SUDO[@]}" kill -9 "$pid" 2>/dev/null || true
        done
    fi
else
    log "all programs already installed; nothing to do"
fi

# kubernetes-validate (optional; see the header).
kv_venv=${MESHMETER_KV_VENV:-$HOME/.cache/meshmeter/kubernetes-validate}
if [[ -x $kv_venv/bin/kubernetes-validate ]]; then
    log "ok  kubernetes-validate in $kv_venv"
else
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
        log "apt-get install python3-venv (for kubernetes-validate)"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
            --no-install-recommends python3-venv </dev/null >/dev/null 2>&1 || true
    fi
    if python3 -m venv "$kv_venv" >/dev/null 2>&1 &&
        "$kv_venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate \
            >/tmp/install-test-deps.$$.log 2>&1; then
        log "installed kubernetes-validate into $kv_venv"
    else
        cat /tmp/install-test-deps.$$.log >&2 2>/dev/null || true
        log "warning: could not install kubernetes-validate from PyPI; the schema test will skip"
    fi
    rm -f /tmp/install-test-deps.$$.log
fi

failed=0
for pair in "${NEEDED[@]}"; do
    read -r prog pkg <<<"$pair"
    if ! command -v "$prog" >/dev/null 2>&1; then
        printf 'install-test-deps: error: %s (package %s) is not on PATH after install\n' \
            "$prog" "$pkg" >&2
        failed=1
        continue
    fi
    if ! v=$(version_of "$prog"); then
        printf 'install-test-deps: error: %s (package %s) does not run: %s\n' "$prog" "$pkg" "$v" >&2
        failed=1
        continue
    fi
    log "ok  $(printf '%-16s' "$prog") $v"
done
exit "$failed"
