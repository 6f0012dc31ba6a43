#!/usr/bin/env python3
"""The capacity checks of scripts/bench.py (issue 8): slotgate's memory while 10,000 idle
clients are connected, and its GET -P 1 throughput with 1,000 busy clients against 50.
It measures and describes; the targets themselves are GOALS in bench.py.
Standard library only.
"""
import concurrent.futures
import resource
import socket
import time

from bench_core import BenchError, fmt, median, rss_mb, run_benchmark

IDLE_CLIENTS = 10_000
BUSY_CLIENTS, BASE_CLIENTS = 1_000, 50
# Row names in the targets table (GOALS in bench.py select them).
IDLE_ROW = f"{IDLE_CLIENTS:,} idle clients"
BUSY_ROW = f"GET -P 1, {BUSY_CLIENTS:,} clients"
ROWS = (IDLE_ROW, BUSY_ROW)
BUSY_REQUESTS = 200_000  # -n per GET -P 1 run at BENCH_REQUESTS_SCALE=1: about 3 s


def raise_open_files(needed):
    """Raise this process's soft open-files limit to `needed`, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise BenchError(f"{needed:,} open files needed, the hard limit is {hard:,}: raise it (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


PING = b"*1\r\n$4\r\nPING\r\n"


def idle_clients(slotgate, count=IDLE_CLIENTS):
    """Open `count` clients to slotgate, each answered one PING (so slotgate has set up its
    session), and read slotgate's RSS while they all stay open; then close them.

    The connections are opened from a pool of threads: a connect that finds the listen queue
    full waits 1 s for the kernel's SYN retransmit, and those waits should overlap.
    """
    raise_open_files(count + 256)
    before = rss_mb(slotgate.pid)
    sockets = []

    def open_one(number):
        try:
            sock = socket.create_connection(("127.0.0.1", slotgate.port), timeout=30)
            sockets.append(sock)  # list.append holds the GIL: safe from several threads
            sock.sendall(PING)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
        except OSError as error:
            raise BenchError(f"idle client {number + 1:,} of {count:,}: {error}") from None
        if reply != b"+PONG\r\n":
            raise BenchError(f"idle client {number + 1:,} of {count:,}: PING answered {reply!r:.100}")

    start = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool:
            for _ in pool.map(open_one, range(count)):
                pass
        seconds = time.monotonic() - start
        during = rss_mb(slotgate.pid)
    finally:
        for sock in sockets:
            sock.close()
    result = {"clients": count, "rss_before_mb": round(before, 1), "rss_mb": round(during, 1),
              "per_client_kb": round((during - before) * 1024 / count, 2), "seconds": round(seconds, 1)}
    print(f"  {IDLE_ROW}: slotgate RSS {during:.1f} MB ({before:.1f} MB before; "
          f"{result['per_client_kb']:.1f} KB per client); opened in {seconds:.1f} s", flush=True)
    return result


def busy_clients(targets, rounds, scale, keyspace, timeout):
    """GET -P 1 at 50 and at 1,000 clients, against each target, interleaved over `rounds`.

    Returns {target: {clients: [sample, ...]}}. Only slotgate's numbers meet a target; the
    direct cluster's show how much of a drop the machine itself makes.
    """
    requests = max(2 * BUSY_CLIENTS, int(BUSY_REQUESTS * scale))
    samples = {t.name: {BASE_CLIENTS: [], BUSY_CLIENTS: []} for t in targets}
    for round_no in range(1, rounds + 1):
        for clients in (BASE_CLIENTS, BUSY_CLIENTS):
            for target in targets:
                sample = run_benchmark(target, ("-t", "get", "-P", "1"), requests, clients=clients,
                                       keyspace=keyspace, timeout=timeout)
                samples[target.name][clients].append(sample)
                print(f"  round {round_no} GET -P 1, {clients:>5,} clients {target.name:<8} "
                      f"{sample['rps']:>12,.0f} req/s  p99 {sample['p99']:.3f} ms", flush=True)
    return {"requests": requests, "samples": samples}


def measure(targets, rounds, scale, keyspace, timeout):
    """Both checks; the idle one first, while no other client is connected."""
    slotgate = next(t for t in targets if t.pid)
    return {"idle": idle_clients(slotgate), "busy": busy_clients(targets, rounds, scale, keyspace, timeout)}


def values(capacity):
    """The capacity rows' values for GOALS: {row: {metric: value}}."""
    out = {}
    if capacity.get("idle"):
        out[IDLE_ROW] = {"rss_mb": capacity["idle"]["rss_mb"]}
    if capacity.get("busy"):
        slotgate = capacity["busy"]["samples"]["slotgate"]
        base, busy = (median(slotgate[c], "rps") for c in (BASE_CLIENTS, BUSY_CLIENTS))
        out[BUSY_ROW] = {"vs_50_clients": busy / base if base and busy else None}
    return out


def report(capacity):
    """Markdown lines: the idle clients' memory and the busy clients' table."""
    lines = ["", "## Capacity", ""]
    idle = capacity.get("idle")
    if idle:
        lines += [f"{idle['clients']:,} idle clients (each answered one PING, then left open): slotgate RSS "
                  f"{idle['rss_mb']:.1f} MB, {idle['rss_before_mb']:.1f} MB before they connected "
                  f"({idle['per_client_kb']:.1f} KB per client); opened in {idle['seconds']:.1f} s.", ""]
    busy = capacity.get("busy")
    if busy:
        lines += [f"GET -P 1 with {BASE_CLIENTS} and with {BUSY_CLIENTS:,} clients (-n {busy['requests']:,}, "
                  "medians of the rounds):", "",
                  "| clients | direct req/s | direct p99 | slotgate req/s | slotgate p99 | slotgate CPU µs/req |",
                  "|---:|---:|---:|---:|---:|---:|"]
        direct, slotgate = busy["samples"].get("direct", {}), busy["samples"]["slotgate"]
        for clients in (BASE_CLIENTS, BUSY_CLIENTS):
            d, s = direct.get(clients, []), slotgate[clients]
            lines.append(f"| {clients:,} | {fmt(median(d, 'rps'), ',.0f')} | {fmt(median(d, 'p99'), '.3f')} "
                         f"| {fmt(median(s, 'rps'), ',.0f')} | {fmt(median(s, 'p99'), '.3f')} "
                         f"| {fmt(median(s, 'cpu_us'), '.2f')} |")
        ratio = values(capacity)[BUSY_ROW]["vs_50_clients"]
        lines += ["", f"slotgate's req/s at {BUSY_CLIENTS:,} clients over its req/s at {BASE_CLIENTS}: "
                  f"{fmt(ratio, '.2f')}."]
    return lines
