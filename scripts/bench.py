#!/usr/bin/env python3
"""The measuring half of scripts/bench.sh: runs redis-benchmark against a Redis
Cluster directly and through slotgate, interleaved over several rounds, and
prints and saves a markdown table of medians. Standard library only.

scripts/bench.sh starts the cluster and slotgate, then calls

    bench.py run --cluster-port P --slotgate-port S --slotgate-pid PID --slotgate-bin BIN [--quick]

(and `bench.py free-ports COUNT` to pick ports). Run it through bench.sh, which
also stops everything afterwards.

Environment (all optional):
    BENCH_ROUNDS          rounds per measurement, medians reported (default 3; --quick: 1)
    BENCH_REQUESTS_SCALE  multiplies each scenario's request count (default 1; --quick: 0.05)
    BENCH_CLIENTS         redis-benchmark -c (default 50)
    BENCH_KEYSPACE        redis-benchmark -r (default 100000)
    BENCH_RUN_TIMEOUT     seconds one redis-benchmark run may take before it counts as hung (default 300)

To add a measurement, add a Scenario to SCENARIOS (a row of the table), a Goal to
GOALS (a tracked target), or a Target to the list built in cmd_run (a column group,
e.g. a second slotgate with metrics on).
"""
import argparse
import csv
import dataclasses
import datetime
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


# --- what is measured ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One row of the table: one redis-benchmark invocation per target and round."""

    name: str  # row label, e.g. "GET -P 16"
    args: tuple  # redis-benchmark arguments besides host/port/-c/-n/-r/--csv (a -t test or a custom command)
    requests: int  # -n at BENCH_REQUESTS_SCALE=1: enough for a run of a few seconds
    depth: int  # pipeline depth, for GOALS
    # False when the command cannot run against the cluster directly: redis-benchmark --cluster
    # sends a custom command to one node, so only keys with one {tag} work (not MGET across slots).
    direct: bool = True


def pipelined_test(test, depth, requests):
    """A built-in redis-benchmark test (-t) at pipeline depth `depth`."""
    return Scenario(f"{test.upper()} -P {depth}", ("-t", test, "-P", str(depth)), requests, depth)


# Run in this order (SET before GET, so GETs find keys) and printed in this order.
# Later: MSET/MGET across slots as custom commands, e.g.
#   Scenario("MGET x10 -P 16", ("-P", "16", "mget", *["key:__rand_int__"] * 10), 200_000, 16, direct=False)
# value-size sweeps (-d), client-count sweeps (-c in args overrides BENCH_CLIENTS: it comes later).
SCENARIOS = [
    pipelined_test("set", 1, 200_000),
    pipelined_test("get", 1, 200_000),
    pipelined_test("set", 16, 2_000_000),
    pipelined_test("get", 16, 2_000_000),
]


@dataclasses.dataclass(frozen=True)
class Goal:
    """A target the team tracks for rows at one pipeline depth."""

    depth: int
    metric: str  # "ratio" (slotgate/direct req/s) or "cpu" (slotgate CPU µs per request)
    op: str  # ">=" or "<="
    limit: float

    def label(self):
        unit = " µs/req" if self.metric == "cpu" else ""
        return f"{'CPU' if self.metric == 'cpu' else 'ratio'} {self.op} {self.limit:g}{unit}"

    def check(self, value):
        return value >= self.limit if self.op == ">=" else value <= self.limit


GOALS = [
    Goal(16, "ratio", ">=", 0.75),
    Goal(16, "cpu", "<=", 1.5),
    Goal(1, "cpu", "<=", 12.0),
]


@dataclasses.dataclass(frozen=True)
class Target:
    """Where redis-benchmark connects. `pid`: a slotgate process whose CPU time is measured."""

    name: str
    port: int
    cluster_mode: bool = False
    pid: int = 0


# --- measuring ----------------------------------------------------------------------------


class BenchError(Exception):
    pass


def env_number(name, default, kind=float):
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise BenchError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value <= 0:
        raise BenchError(f"{name} must be positive, got {raw!r}")
    return value


def cpu_ticks(pid):
    """utime + stime of `pid` in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError as error:
        raise BenchError(f"cannot read /proc/{pid}/stat (has slotgate exited?): {error}") from None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    rest = stat[stat.rindex(")") + 2 :].split()
    if rest[0] == "Z":
        raise BenchError(f"slotgate (pid {pid}) has exited")
    return int(rest[11]) + int(rest[12])  # fields 14, 15; rest[0] is field 3


def parse_csv(stdout):
    """The data row of redis-benchmark --csv (one test per run) as a dict of the header's columns."""
    rows = list(csv.reader(line for line in stdout.splitlines() if line.startswith('"')))
    if len(rows) < 2 or rows[0][:2] != ["test", "rps"]:
        raise BenchError(f"no CSV result in redis-benchmark output:\n{stdout.strip()[-2000:]}")
    if len(rows) > 2:
        raise BenchError(f"expected one CSV result row, got {len(rows) - 1}:\n{stdout.strip()}")
    row = dict(zip(rows[0], rows[1]))
    for column in ("p50_latency_ms", "p99_latency_ms"):
        if column not in row:
            raise BenchError(f"redis-benchmark --csv has no {column} column (needs Redis >= 7.0): {rows[0]}")
    return row


def run_one(target, scenario, requests, clients, keyspace, timeout):
    """One redis-benchmark run; returns a sample dict."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(target.port)]
    if target.cluster_mode:
        cmd.append("--cluster")
    cmd += ["-c", str(clients), "-n", str(requests), "-r", str(keyspace), "--csv", *scenario.args]
    before = cpu_ticks(target.pid) if target.pid else None
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as expired:
        def tail(data):
            text = data.decode(errors="replace") if isinstance(data, bytes) else (data or "")
            return text.strip()[-1500:]

        raise BenchError(
            f"redis-benchmark did not finish in {timeout:g} s (hung?): {' '.join(cmd)}\n"
            f"stdout tail: {tail(expired.stdout)}\nstderr tail: {tail(expired.stderr)}"
        ) from None
    seconds = time.monotonic() - start
    after = cpu_ticks(target.pid) if target.pid else None
    # "WARNING: ..." lines are notes (e.g. slotgate refuses the CONFIG GET redis-benchmark sends
    # first); anything else on stderr ("Error from server: ...") fails the run.
    warnings = [line.strip() for line in proc.stderr.splitlines() if line.strip().startswith("WARNING")]
    others = [line for line in proc.stderr.splitlines() if line.strip() and not line.strip().startswith("WARNING")]
    if proc.returncode != 0 or others:
        raise BenchError(
            f"redis-benchmark exited with status {proc.returncode}: {' '.join(cmd)}\n"
            f"stderr: {proc.stderr.strip()[-2000:]}\nstdout: {proc.stdout.strip()[-2000:]}"
        )
    row = parse_csv(proc.stdout)
    sample = {
        "rps": float(row["rps"]),
        "p50": float(row["p50_latency_ms"]),
        "p99": float(row["p99_latency_ms"]),
        "seconds": round(seconds, 3),
        "cpu_us": None,
        "warnings": warnings,
    }
    if before is not None:
        sample["cpu_ticks"] = after - before
        sample["cpu_us"] = (after - before) / os.sysconf("SC_CLK_TCK") * 1e6 / requests
    return sample


def median(samples, key):
    values = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(values) if values else None


# --- reporting ----------------------------------------------------------------------------


def command_output(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(slotgate_bin):
    commit = command_output("git", "rev-parse", "--short", "HEAD") or "unknown"
    if command_output("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (working tree has uncommitted changes)"
    redis = command_output("redis-server", "--version")
    load = pathlib.Path("/proc/loadavg").read_text().split()[:3] if pathlib.Path("/proc/loadavg").exists() else []
    return {
        "slotgate": command_output(slotgate_bin, "--version") or "unknown",
        "commit": commit,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "redis_server": " ".join(w for w in redis.split() if w.startswith(("v=", "Redis", "server"))) or redis,
        "loadavg_start": " ".join(load),
    }


def fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def build_report(env, settings, results, scenarios, failure=None):
    """Markdown: header, the table of medians, tracked targets, raw samples."""
    lines = [
        "# slotgate benchmark",
        "",
        f"- slotgate: {env['slotgate']}, commit {env['commit']}",
        f"- date: {env['date']}",
        f"- nproc: {env['nproc']}, load average at start: {env['loadavg_start']}, at end: {env.get('loadavg_end', '?')}",
        f"- redis-server: {env['redis_server']}",
        f"- cluster: 3 masters + 3 replicas on 127.0.0.1; slotgate with default settings (1 worker thread)",
        f"- redis-benchmark -c {settings['clients']} -r {settings['keyspace']}, "
        f"{settings['rounds']} round(s) interleaved (direct, slotgate, ...), medians"
        + (", QUICK MODE (smoke test, numbers not meaningful)" if settings["quick"] else ""),
        "- requests per run (-n): " + ", ".join(f"{name} {n:,}" for name, n in settings["requests"].items()),
        "",
        "| test | direct req/s | direct p50 | direct p99 | slotgate req/s | slotgate p50 | slotgate p99 "
        "| slotgate CPU µs/req | ratio slotgate/direct |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    goal_lines = []
    for scenario in scenarios:
        per_target = results.get(scenario.name, {})
        direct, proxy = per_target.get("direct", []), per_target.get("slotgate", [])
        d_rps, s_rps = median(direct, "rps"), median(proxy, "rps")
        cpu = median(proxy, "cpu_us")
        ratio = s_rps / d_rps if d_rps and s_rps else None
        lines.append(
            f"| {scenario.name} | {fmt(d_rps, ',.0f')} "
            f"| {fmt(median(direct, 'p50'), '.3f')} | {fmt(median(direct, 'p99'), '.3f')} "
            f"| {fmt(s_rps, ',.0f')} | {fmt(median(proxy, 'p50'), '.3f')} | {fmt(median(proxy, 'p99'), '.3f')} "
            f"| {fmt(cpu, '.2f')} | {fmt(ratio, '.2f')} |"
        )
        checks = []
        for goal in (g for g in GOALS if g.depth == scenario.depth):
            value = ratio if goal.metric == "ratio" else cpu
            verdict = "n/a" if value is None else ("PASS" if goal.check(value) else "MISS")
            checks.append(f"{goal.label()}: {fmt(value, '.2f')} {verdict}")
        if checks:
            goal_lines.append(f"- {scenario.name}: " + "; ".join(checks))
    lines += ["", "Latencies p50/p99 in ms (redis-benchmark --csv). CPU: slotgate utime+stime from /proc/PID/stat "
              "per completed request. \"-\": not measured."]
    lines += ["", "Tracked targets (-P 16: ratio >= 0.75 and CPU <= 1.5 µs/req; -P 1: CPU <= 12 µs/req):", ""]
    lines += goal_lines
    warnings = {}
    for per_target in results.values():
        for target, samples in per_target.items():
            for sample in samples:
                for warning in sample.get("warnings", []):
                    warnings[(target, warning)] = warnings.get((target, warning), 0) + 1
    if warnings:
        lines += ["", "redis-benchmark warnings (stderr):", ""]
        lines += [f"- {target}: `{warning}` ({n} run(s))" for (target, warning), n in warnings.items()]
    if failure:
        lines += ["", "**RUN ABORTED:**", "", "```", failure, "```"]
    lines += ["", "Samples (per round):", "", "| test | target | round | req/s | p50 | p99 | CPU µs/req | seconds |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for scenario in scenarios:
        for target, samples in results.get(scenario.name, {}).items():
            for i, s in enumerate(samples, 1):
                lines.append(
                    f"| {scenario.name} | {target} | {i} | {s['rps']:,.0f} | {s['p50']:.3f} | {s['p99']:.3f} "
                    f"| {fmt(s['cpu_us'], '.2f')} | {s['seconds']:.1f} |"
                )
    return "\n".join(lines) + "\n"


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


def cmd_run(args):
    quick = args.quick
    rounds = env_number("BENCH_ROUNDS", 1 if quick else 3, int)
    scale = env_number("BENCH_REQUESTS_SCALE", 0.05 if quick else 1.0)
    clients = env_number("BENCH_CLIENTS", 50, int)
    keyspace = env_number("BENCH_KEYSPACE", 100_000, int)
    timeout = env_number("BENCH_RUN_TIMEOUT", 300.0)
    targets = [
        Target("direct", args.cluster_port, cluster_mode=True),
        Target("slotgate", args.slotgate_port, pid=args.slotgate_pid),
    ]
    scenarios = SCENARIOS
    requests = {s.name: max(1000, int(s.requests * scale)) for s in scenarios}
    settings = {"quick": quick, "rounds": rounds, "scale": scale, "clients": clients, "keyspace": keyspace,
                "requests": requests}
    env = environment(args.slotgate_bin)
    print(f"{env['slotgate']} ({env['commit']}), {env['redis_server']}, nproc {env['nproc']}")
    print(f"{len(scenarios)} scenarios x {len(targets)} targets x {rounds} round(s); scale {scale:g}")

    results = {s.name: {t.name: [] for t in targets if t.cluster_mode is False or s.direct} for s in scenarios}
    failure = None
    total = sum(len(v) for v in results.values()) * rounds
    done = 0
    try:
        for round_no in range(1, rounds + 1):
            for scenario in scenarios:
                for target in targets:
                    if target.name not in results[scenario.name]:
                        continue
                    done += 1
                    sample = run_one(target, scenario, requests[scenario.name], clients, keyspace, timeout)
                    results[scenario.name][target.name].append(sample)
                    cpu = f", slotgate CPU {sample['cpu_us']:.2f} µs/req" if sample["cpu_us"] is not None else ""
                    print(
                        f"  [{done}/{total}] round {round_no} {scenario.name:<10} {target.name:<8} "
                        f"{sample['rps']:>12,.0f} req/s  p50 {sample['p50']:.3f}  p99 {sample['p99']:.3f} ms"
                        f"  ({sample['seconds']:.1f} s{cpu})",
                        flush=True,
                    )
    except BenchError as error:
        failure = f"during round {round_no}, {scenario.name} against {target.name}: {error}"

    load = pathlib.Path("/proc/loadavg")
    env["loadavg_end"] = " ".join(load.read_text().split()[:3]) if load.exists() else "?"
    report = build_report(env, settings, results, scenarios, failure)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = pathlib.Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"bench-{stamp}{'-quick' if quick else ''}.md"
    md.write_text(report)
    # Raw numbers for later tooling (plots, comparisons between runs).
    md.with_suffix(".json").write_text(
        json.dumps({"environment": env, "settings": settings, "results": results, "failure": failure}, indent=1)
    )
    print()
    print(report, end="")
    print(f"\nSaved: {md} (and {md.with_suffix('.json').name})")
    if failure:
        print(f"\nbench: FAILED {failure}", file=sys.stderr)
        return 1
    return 0


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
    p.add_argument("--results-dir", default=str(ROOT / "bench-results"))
    p.add_argument("--quick", action="store_true", help="few requests, one round: a smoke test")
    p.set_defaults(func=cmd_run)
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
