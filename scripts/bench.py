#!/usr/bin/env python3
"""The measuring half of scripts/bench.sh: runs redis-benchmark against a Redis Cluster
directly and through slotgate, and prints and saves a markdown report. Three parts:

- the main table (this file): each Scenario against each Target, interleaved over several
  rounds, medians; then the tracked targets (GOALS), PASS or MISS;
- the capacity checks (bench_capacity.py): 10,000 idle clients' memory, 1,000 busy clients;
- the sweep (bench_sweep.py): how throughput and p99 grow with pipeline depth, clients and
  value size, one run per point, drawn with matplotlib (the only package beyond the standard
  library, needed for the sweep alone).

bench_core.py holds what they share (one redis-benchmark run, CPU and memory readings, RESP).

Before the timed runs it fills the keyspace through both targets (GET and MGET rows
find their keys; redis-benchmark --cluster names its keys differently, see populate())
and sends one sample of each multi-key command through slotgate: when slotgate answers
it with an error (e.g. CROSSSLOT while it does not split cross-slot MGET/MSET), that row
is reported as "n/a (error: ...)" instead of being run.

scripts/bench.sh starts the cluster and slotgate, then calls

    bench.py run --cluster-port P --slotgate-port S --slotgate-pid PID --slotgate-bin BIN
                 [--quick] [--no-sweep | --sweep-only] [--png PATH]

(and `bench.py free-ports COUNT` to pick ports). Run it through bench.sh, which also stops
everything afterwards. `bench.py plot bench-results/bench-STAMP.json --png OUT` draws a
saved run's sweep again.

Environment (all optional):
    BENCH_ROUNDS          rounds per measurement, medians reported (default 3; --quick: 1)
    BENCH_REQUESTS_SCALE  multiplies each request count, the sweep's too (default 1; --quick: 0.05)
    BENCH_CLIENTS         redis-benchmark -c of the main table (default 50)
    BENCH_KEYSPACE        redis-benchmark -r (default 100000)
    BENCH_RUN_TIMEOUT     seconds one redis-benchmark run may take before it counts as hung (default 300)

To add a measurement, add a Scenario to SCENARIOS (a row of the table), a Goal to
GOALS (a tracked target), a Point to bench_sweep.POINTS, or a Target to the list built
in cmd_run (a column group, e.g. a second slotgate with metrics on).

Multi-key rows (MSET/MGET x10): see multi_key_test() for what runs through slotgate and
what the direct cluster runs instead, and why.
"""
import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import statistics
import sys

import bench_capacity
import bench_sweep
from bench_core import (ROOT, BenchError, ErrorReply, RespError, Target, call, env_number, environment, fmt,
                        key_slot, master_count, median, run_benchmark)


# --- what is measured ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One row of the table: one redis-benchmark invocation per target and round."""

    name: str  # row label, e.g. "GET -P 16"
    command: str  # what a request is: "set", "get", "mset", "mget"
    args: tuple  # redis-benchmark arguments besides host/port/-c/-n/-r/--csv (a -t test or a custom command)
    requests: int  # -n at BENCH_REQUESTS_SCALE=1: enough for a run of a few seconds
    depth: int  # pipeline depth
    keys: int = 1  # keys per request
    # False when the command cannot run against the cluster directly (and has no direct_args).
    direct: bool = True
    # What runs against the cluster directly instead of `args`, when the command itself cannot
    # (a cross-slot MSET/MGET is CROSSSLOT there): its arguments, and how many of its requests
    # make one of this row's (-n is multiplied by it, req/s divided by it).
    direct_args: tuple = ()
    direct_factor: int = 1
    # The single-key row this row's slotgate CPU per request is compared with ("fanout" GOALS).
    base: str = ""

    def target_args(self, target):
        """(redis-benchmark arguments, requests per row request) for `target`."""
        if target.cluster_mode and self.direct_args:
            return self.direct_args, self.direct_factor
        return self.args, 1


def pipelined_test(test, depth, requests):
    """A built-in redis-benchmark test (-t) at pipeline depth `depth`."""
    return Scenario(f"{test.upper()} -P {depth}", test, ("-t", test, "-P", str(depth)), requests, depth)


MULTI_KEYS = 10  # keys per MSET/MGET: what redis-benchmark's -t mset sends


def multi_key_test(command, depth, requests):
    """MSET or MGET of 10 random keys, at pipeline depth `depth`.

    Through slotgate: redis-benchmark's own `-t mset` (MSET key:__rand_int__ VALUE, 10 pairs) and
    the custom command `MGET key:__rand_int__` x10. redis-benchmark draws a number per
    __rand_int__ occurrence, so the 10 keys fall in 10 slots (almost always) on the 3 masters.

    Against the cluster directly that is one CROSSSLOT error per request, and redis-benchmark's
    `--cluster -t mset` is no baseline: it names every key key:{tag}:N with one {tag} per node,
    so its MSET writes 10 keys in one slot on one node, which an application only gets by
    choosing keys that share a hash tag (and slotgate would pass such a command through
    without fanning out). The fair baseline is what a cluster-aware client has to do for 10 keys
    in 10 slots: one single-key command per key (no multi-key command may span two slots, even
    on one node), pipelined. So directly, each MSET/MGET x10 at -P D is 10 SETs/GETs at
    -P 10*D (-n times 10, req/s divided by 10; the latency is per pipelined batch, as for the
    MSET/MGET batch through slotgate). That flatters the direct side a little: redis-benchmark
    sends each batch to one node and does no splitting or reassembly work of its own.
    """
    single = {"mset": "set", "mget": "get"}[command]
    # Issue 8 sets the fan-out target against a single GET for both, so MSET's base is GET too.
    if command == "mset":
        args = ("-t", "mset", "-P", str(depth))
    else:
        args = ("-P", str(depth), "MGET", *["key:__rand_int__"] * MULTI_KEYS)
    return Scenario(
        f"{command.upper()} x{MULTI_KEYS} -P {depth}", command, args, requests, depth, keys=MULTI_KEYS,
        direct_args=("-t", single, "-P", str(depth * MULTI_KEYS)), direct_factor=MULTI_KEYS,
        base=f"GET -P {depth}",
    )


# Run in this order and printed in this order (populate() has filled the keyspace before).
# Later: value-size sweeps (-d), client-count sweeps (-c in args overrides BENCH_CLIENTS: it comes later).
SCENARIOS = [
    pipelined_test("set", 1, 200_000),
    pipelined_test("get", 1, 200_000),
    pipelined_test("set", 16, 2_000_000),
    pipelined_test("get", 16, 2_000_000),
    multi_key_test("mset", 1, 100_000),
    multi_key_test("mget", 1, 100_000),
    multi_key_test("mset", 16, 300_000),
    multi_key_test("mget", 16, 300_000),
]


# What a Goal compares, per row: the name the targets table gives it.
METRICS = {
    "cpu": "slotgate CPU µs/req",
    "ratio": "req/s slotgate/direct",
    "p99_excess": "slotgate p99 - direct p99 (ms)",
    "fanout": "slotgate CPU/req over GET's at the same depth",
    "rss_mb": "slotgate RSS (MB)",
    "vs_50_clients": "slotgate req/s over its req/s at 50 clients",
}


@dataclasses.dataclass(frozen=True)
class Goal:
    """A target the team tracks (issue 8): `metric` of each row in `rows`, against `limit`."""

    rows: tuple  # row names: Scenario.name, or bench_capacity.ROWS
    metric: str  # a key of METRICS
    op: str  # "<", "<=" or ">="
    limit: float

    def label(self):
        return f"{METRICS[self.metric]} {self.op} {self.limit:g}"

    def check(self, value):
        return {"<": value < self.limit, "<=": value <= self.limit, ">=": value >= self.limit}[self.op]


SINGLE_P1, SINGLE_P16 = ("SET -P 1", "GET -P 1"), ("SET -P 16", "GET -P 16")
MULTI_ROWS = tuple(s.name for s in SCENARIOS if s.base)
GOALS = [
    Goal(SINGLE_P16, "cpu", "<=", 0.85),
    Goal(SINGLE_P16, "ratio", ">=", 0.8),
    Goal(SINGLE_P1, "cpu", "<=", 9.0),
    Goal(("GET -P 1",), "ratio", ">=", 0.85),
    Goal(("SET -P 1",), "ratio", ">=", 0.8),
    Goal(SINGLE_P1, "p99_excess", "<=", 0.5),
    # Fan-out must not cost more than it must: a 10-key MSET/MGET at most 3 single GETs' CPU.
    Goal(MULTI_ROWS, "fanout", "<=", 3.0),
    # 1.5 x predixy's 0.59 on this kind of machine.
    Goal(MULTI_ROWS, "ratio", ">=", 0.885),
    Goal((bench_capacity.IDLE_ROW,), "rss_mb", "<", 100.0),
    Goal((bench_capacity.BUSY_ROW,), "vs_50_clients", ">=", 0.9),
]
ROWS = (*(s.name for s in SCENARIOS), *bench_capacity.ROWS)

# predixy on the issue's machine (1 worker, redis-benchmark -c 50): the figures GOALS were set
# from, {row: {metric: value}}. With predixy in the run (BENCH_PREDIXY), each cpu and ratio goal
# keeps its margin over these but is applied to predixy's figure in the same run, so a slower or
# faster host moves both proxies alike. (The x10 rows' ratio goal was set from MSET x10 -P 1.)
PREDIXY_ON_ISSUE_MACHINE = {
    "GET -P 1": {"cpu": 13.5, "ratio": 0.77},
    "SET -P 1": {"cpu": 13.5, "ratio": 0.69},
    "GET -P 16": {"cpu": 1.72, "ratio": 0.62},
    "SET -P 16": {"cpu": 1.85, "ratio": 0.62},
    **{row: {"ratio": 0.59} for row in MULTI_ROWS},
}
assert all(goal.metric in PREDIXY_ON_ISSUE_MACHINE.get(row, {}) for goal in GOALS if goal.metric in ("cpu", "ratio")
           for row in goal.rows), "a cpu or ratio Goal's row has no predixy figure from the issue"
assert all(row in ROWS for goal in GOALS for row in goal.rows), "a Goal names a row that does not exist"


# --- running -------------------------------------------------------------------------------


def run_scenario(target, scenario, requests, clients, keyspace, timeout):
    """One redis-benchmark run of `requests` of the row's requests against `target`."""
    args, factor = scenario.target_args(target)
    return run_benchmark(target, args, requests, clients=clients, keyspace=keyspace, timeout=timeout,
                         factor=factor)


# Each key is SET this many times on average by populate(): 98% of the keyspace is then set.
POPULATE_PASSES = 4


def populate(targets, clients, keyspace, timeout, masters):
    """SET (nearly) every key of the keyspace through each target, untimed, so GET/MGET hit.

    Keys differ per target: through slotgate redis-benchmark names them key:N; with --cluster,
    key:{tag}:N with one {tag} per master (the tag of the master's first slot), so the direct
    cluster needs its own filling, `masters` times as many SETs. Random SETs, as redis-benchmark
    has no sequential keys (Redis 7.0).
    """
    filler = pipelined_test("set", 16, 0)
    for target in targets:
        requests = keyspace * POPULATE_PASSES * (masters if target.cluster_mode else 1)
        sample = run_scenario(dataclasses.replace(target, pid=0), filler, requests, clients, keyspace, timeout)
        print(f"  populate: {requests:,} SET -P 16 through {target.name} ({sample['seconds']:.1f} s)", flush=True)


def probe(target, scenario, keyspace):
    """One sample of a multi-key row's command through `target`, with redis-benchmark's key names.

    Returns (error or None, note). redis-benchmark would stop at the first error reply, but a
    failed run says less than the reply itself, and a probe also shows whether MGET finds values.
    """
    rng = random.Random()
    numbers = rng.sample(range(keyspace), scenario.keys) if keyspace >= scenario.keys else range(scenario.keys)
    keys = [f"key:{n:012d}" for n in numbers]
    slots = len({key_slot(k) for k in keys})
    if scenario.command == "mget":
        reply = call(target.port, "MGET", *keys)
    else:
        reply = call(target.port, "MSET", *(x for k in keys for x in (k, "xxx")))
    what = f"{scenario.command.upper()} of {len(keys)} keys in {slots} slots"
    if isinstance(reply, RespError):
        return str(reply), f"{what}: error {reply}"
    if scenario.command == "mget":
        if not isinstance(reply, list) or len(reply) != len(keys):
            return f"unexpected reply {reply!r:.200}", f"{what}: unexpected reply"
        found = sum(v is not None for v in reply)
        return None, f"{what}: {found}/{len(keys)} values found"
    if reply != "OK":
        return f"unexpected reply {reply!r:.200}", f"{what}: unexpected reply"
    return None, f"{what}: OK"


# --- reporting ----------------------------------------------------------------------------


def build_report(env, settings, table=None, capacity=None, sweep=None, failure=None, png=None):
    """Markdown: the run's environment; the main table (medians, fan-out costs, capacity, tracked
    targets) when it ran; the sweep when it ran; then the details (samples, commands, warnings).

    table: {"results": {row: {target: [sample]}}, "errors": ..., "probes": ...}, see table_lines.
    """
    lines = [
        "# slotgate benchmark",
        "",
        f"- slotgate: {env['slotgate']}, commit {env['commit']}",
        f"- date: {env['date']}",
        f"- nproc: {env['nproc']}, load average at start: {env['loadavg_start']}, at end: {env.get('loadavg_end', '?')}",
        f"- redis-server: {env['redis_server']}",
        "- cluster: 3 masters + 3 replicas on 127.0.0.1; slotgate with default settings (1 worker thread)",
    ]
    if env.get("predixy"):
        lines.append(f"- predixy: {env['predixy']} (1 worker thread), in the main table's rounds")
    if settings["quick"]:
        lines.append("- QUICK MODE: a smoke test, the numbers mean nothing")
    if failure:
        lines += ["", "**RUN ABORTED:**", "", "```", failure, "```"]
    if table:
        lines += table_lines(settings, table, capacity)
    if sweep:
        lines += bench_sweep.report(sweep, png)
    warnings = {}
    for target, sample in all_samples(table, sweep):
        for warning in sample.get("warnings", []):
            warnings[(target, warning)] = warnings.get((target, warning), 0) + 1
    if warnings:
        lines += ["", "redis-benchmark warnings (stderr):", ""]
        lines += [f"- {target}: `{warning}` ({n} run(s))" for (target, warning), n in warnings.items()]
    if table:
        lines += table_details(settings, table)
    return "\n".join(lines) + "\n"


def all_samples(table, sweep):
    """(target, sample) of every redis-benchmark run, for the warnings they printed."""
    for per_target in (table or {}).get("results", {}).values():
        for target, samples in per_target.items():
            yield from ((target, sample) for sample in samples)
    for point in (sweep or {}).get("points", []):
        yield from ((target, point[target]) for target in ("direct", "slotgate") if point.get(target))


def short(message, width=60):
    """The start of an error reply for a table cell (all of it is listed below the table)."""
    message = " ".join(message.split()).replace("|", "\\|")
    cut = message.find(" (")  # e.g. slotgate's explanation after CROSSSLOT's standard text
    if 0 < cut <= width:
        return message[:cut] + " …"
    return message if len(message) <= width else message[: width - 1].rstrip() + "…"


def table_lines(settings, table, capacity):
    """The main table of medians, fan-out costs, capacity and tracked targets.

    table["errors"]: {row: {target: {"error": reply, "when": ..., "during_run": bool}}} for rows
    not measured there (an error reply), shown as "n/a (error: ...)".
    """
    results, errors, scenarios = table["results"], table["errors"], SCENARIOS
    lines = [
        "",
        f"- redis-benchmark -c {settings['clients']} -r {settings['keyspace']}, "
        f"{settings['rounds']} round(s) interleaved (direct, slotgate, ...), medians",
        "- requests per run (-n): " + ", ".join(f"{name} {n:,}" for name, n in settings["requests"].items())
        + ("; directly, the x10 rows run 10 single-key commands per request"
           if any(s.direct_factor != 1 for s in scenarios) else ""),
        "",
        "| test | direct req/s | direct p50 | direct p99 | slotgate req/s | slotgate p50 | slotgate p99 "
        "| slotgate CPU µs/req | ratio slotgate/direct |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    values = {}  # row -> {metric: value, "error": reply} for the goals and the fan-out table
    for scenario in scenarios:
        per_target = results.get(scenario.name, {})
        row_errors = errors.get(scenario.name, {})
        direct, proxy = per_target.get("direct", []), per_target.get("slotgate", [])
        d_err, s_err = ((row_errors.get(t) or {}).get("error") for t in ("direct", "slotgate"))
        d_rps = None if d_err else median(direct, "rps")
        s_rps = None if s_err else median(proxy, "rps")
        cpu = None if s_err else median(proxy, "cpu_us")
        ratio = s_rps / d_rps if d_rps and s_rps else None
        d_p99 = None if d_err else median(direct, "p99")
        s_p99 = None if s_err else median(proxy, "p99")
        p99_excess = s_p99 - d_p99 if s_p99 is not None and d_p99 is not None else None
        values[scenario.name] = {"cpu": cpu, "ratio": ratio, "p99_excess": p99_excess, "error": s_err or d_err}

        def cells(samples, error, with_cpu):
            if error:
                return [f"n/a (error: {short(error)})", "n/a", "n/a"] + (["n/a"] if with_cpu else [])
            out = [fmt(median(samples, "rps"), ",.0f"), fmt(median(samples, "p50"), ".3f"),
                   fmt(median(samples, "p99"), ".3f")]
            return out + ([fmt(cpu, ".2f")] if with_cpu else [])

        row = [scenario.name, *cells(direct, d_err, False), *cells(proxy, s_err, True),
               "n/a" if d_err or s_err else fmt(ratio, ".2f")]
        lines.append("| " + " | ".join(row) + " |")

    for scenario in scenarios:
        cpu, base = values[scenario.name]["cpu"], values.get(scenario.base, {}).get("cpu")
        values[scenario.name]["fanout"] = cpu / base if cpu is not None and base else None

    multi = [s for s in scenarios if s.base]
    if multi:
        lines += ["", "Fan-out cost: slotgate CPU per 10-key request over its CPU per GET at the same depth "
                  "(medians of this run):", "",
                  "| test | slotgate CPU µs/req | single-key row | its CPU µs/req | CPU ratio | target |",
                  "|---|---:|---|---:|---:|---|"]
        for scenario in multi:
            value = values[scenario.name]["fanout"]
            goals = [g for g in GOALS if g.metric == "fanout" and scenario.name in g.rows]
            target = "; ".join(f"{g.op} {g.limit:g}: {verdict(g, values[scenario.name])[1]}" for g in goals)
            s_err = errors.get(scenario.name, {}).get("slotgate")
            lines.append(
                f"| {scenario.name} | {'n/a (error)' if s_err else fmt(values[scenario.name]['cpu'], '.2f')} "
                f"| {scenario.base} | {fmt(values.get(scenario.base, {}).get('cpu'), '.2f')} "
                f"| {fmt(value, '.2f')} | {target or '- (for information)'} |"
            )

    lines += kernel_share_lines(scenarios, results, errors)
    if any(per_target.get("predixy") for per_target in results.values()):
        lines += predixy_lines(scenarios, results, errors, values)
    lines += ["", "Latencies p50/p99 in ms (redis-benchmark --csv). CPU: slotgate utime+stime from /proc/PID/stat "
              "per completed request. \"-\": not measured."]
    if multi:
        lines += [
            "",
            f"MSET/MGET x{MULTI_KEYS}: a request is one MSET/MGET of {MULTI_KEYS} random keys key:N, so {MULTI_KEYS} "
            "slots (almost always) spread over the 3 masters; through slotgate redis-benchmark's `-t mset` and the custom "
            f"command `MGET key:__rand_int__` (x{MULTI_KEYS}; each `__rand_int__` draws its own N). Directly a "
            "cross-slot MSET/MGET is a CROSSSLOT error, so the direct columns are what a cluster-aware client has to "
            f"do instead: one single-key SET/GET per key (no multi-key command may span two slots), pipelined: "
            f"`-t set`/`-t get` at {MULTI_KEYS}x the depth with {MULTI_KEYS}x the requests, req/s divided by "
            f"{MULTI_KEYS}, latency per pipelined batch. (`redis-benchmark --cluster -t mset` is no baseline: it "
            "gives all 10 keys one {tag}, one slot on one node, which needs keys chosen to share a slot.) "
            "The keyspace is filled through both targets before the runs (different key names: --cluster "
            "adds a {tag}).",
        ]
    if capacity:
        values.update(bench_capacity.values(capacity))
        lines += bench_capacity.report(capacity)
    lines += ["", "Tracked targets (issue 8; GOALS in scripts/bench.py):", ""]
    lines += targets_table(values)
    return lines


def predixy_lines(scenarios, results, errors, values):
    """predixy in the same rounds: its figures beside slotgate's, and the issue's cpu and ratio
    targets scaled to it (PREDIXY_ON_ISSUE_MACHINE)."""
    lines = ["", "predixy in front of the same cluster, in the same rounds (BENCH_PREDIXY; medians):", "",
             "| test | predixy req/s | predixy p99 | predixy CPU µs/req (kernel) | predixy/direct | slotgate/direct "
             "| slotgate CPU over predixy's |", "|---|---:|---:|---:|---:|---:|---:|"]
    predixy = {}
    for scenario in scenarios:
        per_target = results.get(scenario.name, {})
        samples = [] if errors.get(scenario.name, {}).get("predixy") else per_target.get("predixy", [])
        direct = [] if errors.get(scenario.name, {}).get("direct") else per_target.get("direct", [])
        rps, d_rps, cpu = median(samples, "rps"), median(direct, "rps"), median(samples, "cpu_us")
        mine = values.get(scenario.name, {})
        predixy[scenario.name] = {"cpu": cpu, "ratio": rps / d_rps if rps and d_rps else None}
        relative = mine["cpu"] / cpu if cpu and mine.get("cpu") else None
        shown_rps = fmt(rps, ",.0f") if samples else (
            f"n/a (error: {short(errors[scenario.name]['predixy']['error'], 40)})"
            if errors.get(scenario.name, {}).get("predixy") else "-")
        kernel = median(samples, "cpu_kernel_us")
        cpu_cell = fmt(cpu, ".2f") + (f" ({kernel:.2f})" if kernel is not None else "")
        lines.append(f"| {scenario.name} | {shown_rps} | {fmt(median(samples, 'p99'), '.3f')} | {cpu_cell} "
                     f"| {fmt(predixy[scenario.name]['ratio'], '.2f')} | {fmt(mine.get('ratio'), '.2f')} "
                     f"| {fmt(relative, '.2f')} |")
    lines += ["", "The issue's CPU and throughput targets with their margin over predixy kept, applied to "
              "predixy in this run (limit = target / predixy's figure on the issue's machine x predixy's "
              "figure here):", "",
              "| row | target | issue's predixy | predixy here | limit here | slotgate | verdict |",
              "|---|---|---:|---:|---:|---:|---|"]
    for goal in (g for g in GOALS if g.metric in ("cpu", "ratio")):
        for row in goal.rows:
            then, now = PREDIXY_ON_ISSUE_MACHINE[row][goal.metric], predixy[row][goal.metric]
            if now is None:
                continue
            scaled = dataclasses.replace(goal, limit=goal.limit / then * now)
            value, verdict_ = verdict(scaled, values.get(row, {}))
            lines.append(f"| {row} | {goal.label()} | {then:g} | {now:.2f} | {scaled.limit:.2f} | {value} "
                         f"| {verdict_} |")
    return lines


def kernel_share_lines(scenarios, results, errors):
    """How each proxy's CPU per request divides between its own code and the kernel (stime: the
    system calls and the loopback TCP work done in them, wake-ups of the processes it writes
    to included). What a proxy's code can save is the user part; the kernel part is the floor
    that the host's sockets set for any proxy making the same system calls. Medians of the
    rounds' own splits (user = total - kernel in each round)."""
    proxies = [t for t in ("slotgate", "predixy") if any(r.get(t) for r in results.values())]

    def split(scenario, proxy):
        samples = [] if errors.get(scenario.name, {}).get(proxy) else results.get(scenario.name, {}).get(proxy, [])
        rounds = [s for s in samples if s.get("cpu_us") and s.get("cpu_kernel_us") is not None]
        if not rounds:
            return ["-", "-", "-"]
        user = statistics.median(s["cpu_us"] - s["cpu_kernel_us"] for s in rounds)
        kernel = statistics.median(s["cpu_kernel_us"] for s in rounds)
        share = statistics.median(s["cpu_kernel_us"] / s["cpu_us"] for s in rounds)
        return [f"{user:.2f}", f"{kernel:.2f}", f"{share:.0%}"]

    rows = [[scenario.name, *(cell for proxy in proxies for cell in split(scenario, proxy))] for scenario in scenarios]
    if not any(cell != "-" for row in rows for cell in row[1:]):
        return []
    header = "| test | " + " | ".join(f"{p} user | {p} kernel | {p} kernel share" for p in proxies) + " |"
    return ["", "Where the CPU went: each proxy's own code (utime) and the kernel on its behalf (stime: system "
            "calls, loopback TCP, waking the processes it writes to), µs per request, medians of the rounds:", "",
            header, "|---|" + "---:|" * (3 * len(proxies)), *("| " + " | ".join(row) + " |" for row in rows)]


def table_details(settings, table):
    """The main table's probes, errors, commands and per-round samples."""
    results, errors, probes, scenarios = table["results"], table["errors"], table["probes"], SCENARIOS
    lines = []
    if probes:
        lines += ["", "Sample command sent through the proxies before the runs, with redis-benchmark's key names "
                  "(a row whose sample gets an error reply is not run against slotgate: n/a):", ""]
        lines += [f"- {name}: {note}" for name, note in probes.items()]
    not_measured = [(name, target, e) for name, per_target in errors.items() for target, e in per_target.items()
                    if e.get("during_run")]
    if not_measured:
        lines += ["", "Not measured further (error replies during a run; redis-benchmark stops at the first):", ""]
        lines += [f"- {name} against {target} ({e['when']}): {e['error']}" for name, target, e in not_measured]
    lines += ["", "Commands (redis-benchmark -h 127.0.0.1 -p PORT -c CLIENTS -r KEYSPACE --csv, then):", ""]
    for scenario in scenarios:
        n = settings["requests"].get(scenario.name, scenario.requests)
        d_args, factor = scenario.target_args(Target("direct", 0, cluster_mode=True))
        direct = f"`--cluster -n {n * factor} {shown(d_args)}`" + (f" (req/s / {factor})" if factor != 1 else "")
        lines.append(f"- {scenario.name}: slotgate `-n {n} {shown(scenario.args)}`; "
                     + (f"direct {direct}" if scenario.direct else "not run directly"))
    lines += ["", "Samples (per round; req/s of the row's requests):", "",
              "| test | target | round | req/s | p50 | p99 | CPU µs/req | seconds |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for scenario in scenarios:
        for target, samples in results.get(scenario.name, {}).items():
            for i, s in enumerate(samples, 1):
                lines.append(
                    f"| {scenario.name} | {target} | {i} | {s['rps']:,.0f} | {s['p50']:.3f} | {s['p99']:.3f} "
                    f"| {fmt(s['cpu_us'], '.2f')} | {s['seconds']:.1f} |"
                )
    return lines


def verdict(goal, row):
    """(value, "PASS" or "MISS") of `goal` for one row's values; ("n/a", ...) when not measured."""
    value = row.get(goal.metric)
    if value is None:
        return "n/a", "n/a (error)" if row.get("error") else "n/a"
    return f"{value:.2f}", "PASS" if goal.check(value) else "MISS"


def targets_table(values):
    """The GOALS of the rows in `values` as a markdown table, in row order, with PASS or MISS."""
    lines = ["| row | target | value | verdict |", "|---|---|---:|---|"]
    for name in (row for row in ROWS if row in values):
        for goal in (g for g in GOALS if name in g.rows):
            lines.append(f"| {name} | {goal.label()} | " + " | ".join(verdict(goal, values[name])) + " |")
    return lines


def shown(args):
    """redis-benchmark arguments for the report, a run of one repeated argument as `ARG (xN)`."""
    out, i = [], 0
    while i < len(args):
        j = i
        while j < len(args) and args[j] == args[i]:
            j += 1
        out.append(args[i] if j - i == 1 else f"{args[i]} (x{j - i})")
        i = j
    return " ".join(out)


# --- commands -----------------------------------------------------------------------------


def cmd_free_ports(args):
    """COUNT loopback ports from --from upwards that are free, with port+10000 (cluster bus) free too."""
    reserved = {6379, 6380, *range(7001, 7007), *range(17001, 17007)}

    def free(port):
        with socket.socket() as s:
            # As redis-server and slotgate (tokio) bind: with SO_REUSEADDR, so a port whose
            # old connections linger in TIME_WAIT counts as free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False

    found = []
    port = args.start
    while len(found) < args.count:
        if port + 10000 > 65535:
            raise BenchError(f"not enough free ports from {args.start}")
        if port not in reserved and port + 10000 not in reserved and free(port) and free(port + 10000):
            found.append(port)
        port += 1
    print("\n".join(map(str, found)))


def measure_table(targets, settings, table):
    """The main table: a sample of each multi-key command through slotgate, then every scenario
    against every target, interleaved over the rounds. Fills `table` as it goes, so what was
    measured before a failure is still reported."""
    results, errors, probes = table["results"], table["errors"], table["probes"]
    clients, keyspace, timeout = settings["clients"], settings["keyspace"], settings["timeout"]
    # A multi-key row slotgate answers with an error (e.g. CROSSSLOT: no splitting yet) is n/a there.
    for scenario in (s for s in SCENARIOS if s.keys > 1):
        for target in (t for t in targets if not t.cluster_mode and t.name in results[scenario.name]):
            try:
                error, note = probe(target, scenario, keyspace)
            except BenchError as failure:
                raise BenchError(f"probing {scenario.name} through {target.name}: {failure}") from None
            probes[scenario.name if len(targets) == 2 else f"{scenario.name} ({target.name})"] = note
            if error:
                errors.setdefault(scenario.name, {})[target.name] = {"error": error, "when": "sample before the runs"}
                print(f"  {scenario.name} through {target.name}: n/a, the sample command got: {error}", flush=True)
    pairs = [(s, t) for s in SCENARIOS for t in targets
             if t.name in results[s.name] and t.name not in errors.get(s.name, {})]
    rounds = settings["rounds"]
    total, done = len(pairs) * rounds, 0
    for round_no in range(1, rounds + 1):
        for scenario, target in pairs:
            if target.name in errors.get(scenario.name, {}):
                continue  # an error reply in an earlier round
            done += 1
            try:
                sample = run_scenario(target, scenario, settings["requests"][scenario.name], clients, keyspace,
                                      timeout)
            except ErrorReply as error:
                errors.setdefault(scenario.name, {})[target.name] = {
                    "error": error.reply, "when": f"round {round_no}, `{error.command}`", "during_run": True}
                print(f"  [{done}/{total}] round {round_no} {scenario.name:<14} {target.name:<8} "
                      f"n/a, error reply: {error.reply}", flush=True)
                continue
            except BenchError as error:
                raise BenchError(f"during round {round_no}, {scenario.name} against {target.name}: {error}") from None
            results[scenario.name][target.name].append(sample)
            cpu = f", {target.name} CPU {sample['cpu_us']:.2f} µs/req" if sample["cpu_us"] is not None else ""
            print(
                f"  [{done}/{total}] round {round_no} {scenario.name:<14} {target.name:<8} "
                f"{sample['rps']:>12,.0f} req/s  p50 {sample['p50']:.3f}  p99 {sample['p99']:.3f} ms"
                f"  ({sample['seconds']:.1f} s{cpu})",
                flush=True,
            )


def plot_title(env):
    return (f"slotgate and the cluster directly (redis-benchmark; commit {env['commit'].split()[0]}, "
            f"{env['date'][:10]}, {env['nproc']} cores shared by all; one run per point)")


def cmd_run(args):
    quick = args.quick
    scale = env_number("BENCH_REQUESTS_SCALE", 0.05 if quick else 1.0)
    settings = {
        "quick": quick, "scale": scale,
        "rounds": env_number("BENCH_ROUNDS", 1 if quick else 3, int),
        "clients": env_number("BENCH_CLIENTS", 50, int),
        "keyspace": env_number("BENCH_KEYSPACE", 100_000, int),
        "timeout": env_number("BENCH_RUN_TIMEOUT", 300.0),
        "requests": {s.name: max(1000, int(s.requests * scale)) for s in SCENARIOS},
        "parts": [part for part, on in (("table", not args.sweep_only), ("sweep", not args.no_sweep)) if on],
    }
    targets = [
        Target("direct", args.cluster_port, cluster_mode=True),
        Target("slotgate", args.slotgate_port, pid=args.slotgate_pid),
    ]
    # predixy, when given, runs the main table only: it names its keys as slotgate does (filled
    # through slotgate), and the capacity checks and the sweep measure slotgate's own growth.
    reference = [Target("predixy", args.predixy_port, pid=args.predixy_pid)] if args.predixy_port else []
    env = environment(args.slotgate_bin)
    if reference:
        env["predixy"] = os.environ.get("BENCH_PREDIXY", "predixy")
    print(f"{env['slotgate']} ({env['commit']}), {env['redis_server']}, nproc {env['nproc']}")
    if "sweep" in settings["parts"]:
        bench_sweep.check_matplotlib()

    table = capacity = sweep = failure = None
    step = "filling the keyspace"
    try:
        populate(targets, settings["clients"], settings["keyspace"], settings["timeout"],
                 master_count(args.cluster_port))
        if "table" in settings["parts"]:
            step = "the main table"
            compared = targets + reference
            print(f"Main table: {len(SCENARIOS)} scenarios x {len(compared)} targets x {settings['rounds']} "
                  f"round(s); scale {scale:g}", flush=True)
            table = {"results": {s.name: {t.name: [] for t in compared if not t.cluster_mode or s.direct}
                                 for s in SCENARIOS},
                     "errors": {}, "probes": {}}
            measure_table(compared, settings, table)
            step = "the capacity checks"
            print(f"Capacity: {bench_capacity.IDLE_CLIENTS:,} idle clients, then GET -P 1 at "
                  f"{bench_capacity.BASE_CLIENTS} and {bench_capacity.BUSY_CLIENTS:,} clients ...", flush=True)
            capacity = bench_capacity.measure(targets, settings["rounds"], scale, settings["keyspace"],
                                              settings["timeout"])
        if "sweep" in settings["parts"]:
            step = "the sweep"
            print(f"Sweep (how cost grows): {len(bench_sweep.POINTS)} points x {len(targets)} targets, "
                  "one run each ...", flush=True)
            sweep = {"scale": scale, "points": []}
            bench_sweep.measure(targets, sweep, settings["keyspace"], settings["timeout"])
    except BenchError as error:
        failure = f"{step}: {error}"

    load = pathlib.Path("/proc/loadavg")
    env["loadavg_end"] = " ".join(load.read_text().split()[:3]) if load.exists() else "?"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = pathlib.Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if quick else ""
    md = out_dir / f"bench-{stamp}{suffix}.md"
    png = out_dir / f"sweep-{stamp}{suffix}.png" if sweep and sweep["points"] else None
    report = build_report(env, settings, table, capacity, sweep, failure, png.name if png else None)
    md.write_text(report)
    # Raw numbers for later tooling (`bench.py plot`, comparisons between runs).
    md.with_suffix(".json").write_text(json.dumps(
        {"environment": env, "settings": settings, "table": table, "capacity": capacity, "sweep": sweep,
         "failure": failure}, indent=1))
    print()
    print(report, end="")
    print(f"\nSaved: {md} (and {md.with_suffix('.json').name})")
    if png:
        bench_sweep.plot(sweep, png, plot_title(env))
        print(f"Saved: {png}")
        if args.png:
            shutil.copyfile(png, args.png)
            print(f"Copied to {args.png}")
    if failure:
        print(f"\nbench: FAILED {failure}", file=sys.stderr)
        return 1
    # An error reply in the middle of a run is a fault; one to the sample command before the runs
    # is a command slotgate does not handle (yet): its row says n/a, and that is no failure.
    # predixy is a reference: its error replies show in its table, they do not fail slotgate's run.
    during = [f"{name} against {target}" for name, per_target in (table or {}).get("errors", {}).items()
              for target, e in per_target.items() if e.get("during_run") and target != "predixy"]
    if during:
        print(f"\nbench: FAILED: error replies during the runs of {', '.join(during)}", file=sys.stderr)
        return 1
    return 0


def cmd_plot(args):
    """Draw the sweep of a saved run (its .json) again, e.g. after changing the picture's code."""
    try:
        saved = json.loads(pathlib.Path(args.json).read_text())
    except (OSError, ValueError) as error:
        raise BenchError(f"cannot read {args.json}: {error}") from None
    if not (saved.get("sweep") or {}).get("points"):
        raise BenchError(f"{args.json} has no sweep (run without --no-sweep)")
    bench_sweep.check_matplotlib()
    bench_sweep.plot(saved["sweep"], args.png, plot_title(saved["environment"]))
    print(f"Saved: {args.png}")


def main():
    # bench.sh runs this in the background (so its traps fire at once), where SIGINT is
    # ignored; SIGTERM from bench.sh's cleanup must still stop the run and its redis-benchmark.
    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("free-ports", help="print free loopback ports (port and port+10000 free)")
    p.add_argument("count", type=int)
    p.add_argument("--from", dest="start", type=int, default=30001)
    p.set_defaults(func=cmd_free_ports)
    p = sub.add_parser("run", help="run the benchmark against a running cluster and slotgate")
    p.add_argument("--cluster-port", type=int, required=True, help="a master of the cluster")
    p.add_argument("--slotgate-port", type=int, required=True)
    p.add_argument("--slotgate-pid", type=int, required=True)
    p.add_argument("--slotgate-bin", required=True)
    p.add_argument("--predixy-port", type=int, help="predixy in front of the same cluster: a third target")
    p.add_argument("--predixy-pid", type=int)
    p.add_argument("--results-dir", default=str(ROOT / "bench-results"))
    p.add_argument("--quick", action="store_true", help="few requests, one round: a smoke test")
    parts = p.add_mutually_exclusive_group()
    parts.add_argument("--sweep-only", action="store_true", help="the sweep alone, without the main table")
    parts.add_argument("--no-sweep", action="store_true", help="the main table alone, without the sweep")
    p.add_argument("--png", help="also copy the sweep's picture here (e.g. docs/bench.png)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("plot", help="draw the sweep of a saved run (bench-results/bench-*.json) again")
    p.add_argument("json")
    p.add_argument("--png", required=True, help="where to write the picture")
    p.set_defaults(func=cmd_plot)
    args = parser.parse_args()
    try:
        return args.func(args) or 0
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
