#!/usr/bin/env python3
"""Opens COUNT idle TCP connections through a proxy and reports the proxy's memory cost.

The script plays both ends: a child process listens on the proxy's upstream port and holds
every connection the proxy opens to it, and this process opens COUNT connections to the proxy.
The ends are separate processes so each needs only COUNT descriptors (the hard fd limit may
be too low for one process holding both). The proxy's RSS is read from /proc before (after a
warm-up connection, so one-time lazy allocations are not charged to the connections) and once
all COUNT connections have reached the upstream and RSS has settled.

If the proxy stops taking connections (no progress for STALL_S seconds, e.g. it ran out of
descriptors), the measurement is taken over the connections that did reach the upstream and
the line says `stalled=1`.

Prints one line: `before_kib=N after_kib=N connections=N kib_per_conn=F fds_per_conn=F
stalled=0|1` (connections = those that reached the upstream).
Exit codes: 0 measured, 1 not even the warm-up connection got through, 2 usage.
"""

import argparse
import multiprocessing
import os
import resource
import socket
import sys
import time

# How long all connections may take to reach the upstream; far above what a working proxy
# needs for 10,000 connections on loopback.
ESTABLISH_TIMEOUT_S = 90.0
# No new connection reaching the upstream for this long means the proxy has stopped taking
# them (refusing, or out of descriptors).
STALL_S = 5.0


def rss_kib(pid):
    """The VmRSS of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def holder(listener, conn, count):
    """Upstream end: accepts and keeps connections; answers each `count?` query on `conn`."""
    raise_fd_limit(count + 64)
    listener.settimeout(0.05)
    held = []
    while True:
        try:
            s, _ = listener.accept()
            held.append(s)
        except socket.timeout:
            pass
        while conn.poll():
            msg = conn.recv()
            if msg == "count":
                conn.send(len(held))
            elif msg == "drop":
                for s in held:
                    s.close()
                held.clear()
                conn.send(0)
            elif msg == "exit":
                return


def query(conn, msg):
    conn.send(msg)
    return conn.recv()


def wait_accepted(conn, want, deadline):
    """Waits until the upstream holds `want` connections. False on the deadline or a stall."""
    last, last_change = -1, time.monotonic()
    while True:
        got = query(conn, "count")
        if got >= want:
            return True
        now = time.monotonic()
        if got != last:
            last, last_change = got, now
        if now > deadline or now - last_change > STALL_S:
            return False
        time.sleep(0.02)


def settled_rss(pid):
    """RSS once two readings 300 ms apart agree within 1% (bounded to ~5 s)."""
    last = rss_kib(pid)
    for _ in range(16):
        time.sleep(0.3)
        now = rss_kib(pid)
        if abs(now - last) <= max(last // 100, 4):
            return now
        last = now
    return last


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxy-port", type=int, required=True, help="port the proxy listens on")
    ap.add_argument("--upstream-port", type=int, required=True,
                    help="port the proxy forwards to; this script listens there")
    ap.add_argument("--pid", type=int, required=True, help="pid of the proxy process")
    ap.add_argument("--count", type=int, default=10000, help="connections to open")
    args = ap.parse_args()
    if not 1 <= args.count <= 100000:
        ap.error("--count must be 1-100000")

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.upstream_port))
    listener.listen(4096)
    parent_end, child_end = multiprocessing.Pipe()
    # fork: the child inherits the bound listener; nothing else is shared.
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=holder, args=(listener, child_end, args.count), daemon=True)
    child.start()
    listener.close()
    raise_fd_limit(args.count + 64)

    deadline = time.monotonic() + ESTABLISH_TIMEOUT_S
    # Warm-up: the first connection through a proxy may allocate pools and buffers once.
    warm = socket.create_connection(("127.0.0.1", args.proxy_port), timeout=5)
    if not wait_accepted(parent_end, 1, deadline):
        print("warm-up connection never reached the upstream", file=sys.stderr)
        return 1
    warm.close()
    query(parent_end, "drop")
    time.sleep(0.5)  # let the proxy see both closes before the baseline reading

    before = settled_rss(args.pid)
    fds_before = fd_count(args.pid)
    clients = []
    stalled = False
    try:
        while len(clients) < args.count:
            # Batches bounded by what the proxy has passed on, so its accept queue never
            # overflows (a dropped SYN costs a one-second retransmit).
            batch = min(200, args.count - len(clients))
            for _ in range(batch):
                clients.append(socket.create_connection(("127.0.0.1", args.proxy_port),
                                                        timeout=10))
            if not wait_accepted(parent_end, len(clients) - 1000, deadline):
                stalled = True
                break
        if not stalled and not wait_accepted(parent_end, args.count, deadline):
            stalled = True
    except OSError as err:
        print(f"connect failed after {len(clients)} connections: {err}", file=sys.stderr)
        stalled = True
    established = query(parent_end, "count")
    if established == 0:
        print("no connection reached the upstream", file=sys.stderr)
        return 1
    after = settled_rss(args.pid)
    fds_after = fd_count(args.pid)

    for c in clients:
        c.close()
    parent_end.send("exit")
    child.join(5)
    print(f"before_kib={before} after_kib={after} connections={established} "
          f"kib_per_conn={(after - before) / established:.2f} "
          f"fds_per_conn={(fds_after - fds_before) / established:.2f} stalled={int(stalled)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
