#!/usr/bin/env python3
"""What scripts/bench.py and its parts share to measure: one redis-benchmark run against a
target (req/s, p50, p99, slotgate CPU per request from /proc/PID/stat), slotgate's memory,
RESP commands over a plain socket, the cluster's key hash, and the run's environment for the
report. It runs nothing by itself and decides nothing about scenarios or targets.
Standard library only.
"""
import csv
import dataclasses
import datetime
import os
import pathlib
import socket
import statistics
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Target:
    """Where redis-benchmark connects. `pid`: a proxy (slotgate, predixy) whose CPU time is measured."""

    name: str
    port: int
    cluster_mode: bool = False
    pid: int = 0



# --- measuring ----------------------------------------------------------------------------


class BenchError(Exception):
    pass


class ErrorReply(BenchError):
    """redis-benchmark got an error reply (and, since Redis 7.0, exited at once): the row is n/a."""

    def __init__(self, reply, command):
        super().__init__(f"{reply} (from {command})")
        self.reply = reply
        self.command = command


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
    """(utime, stime) of `pid` in clock ticks (fields 14 and 15 of /proc/PID/stat): its CPU time
    in its own code and in the kernel on its behalf (system calls, the TCP work they do)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError as error:
        raise BenchError(f"cannot read /proc/{pid}/stat (has the proxy exited?): {error}") from None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    rest = stat[stat.rindex(")") + 2 :].split()
    if rest[0] == "Z":
        raise BenchError(f"the proxy (pid {pid}) has exited")
    return int(rest[11]), int(rest[12])  # fields 14, 15; rest[0] is field 3


def rss_mb(pid):
    """Resident memory of `pid` in MB (VmRSS of /proc/PID/status; 1 MB = 2^20 bytes)."""
    try:
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError as error:
        raise BenchError(f"cannot read /proc/{pid}/status (has the proxy exited?): {error}") from None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # in kB
    raise BenchError(f"no VmRSS in /proc/{pid}/status (has the proxy exited?)")


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


def run_benchmark(target, args, requests, *, clients, keyspace, timeout, factor=1):
    """One redis-benchmark run with `args` (a -t test or a custom command, -P, -d ...) against
    `target`; returns a sample dict. `factor` redis-benchmark requests make one counted request
    (-n is `requests` x factor, req/s is divided by it), for the multi-key rows' direct stand-in.
    """
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(target.port)]
    if target.cluster_mode:
        cmd.append("--cluster")
    cmd += ["-c", str(clients), "-n", str(requests * factor), "-r", str(keyspace), "--csv", *args]
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
    # first); anything else on stderr fails the run. An error reply to a benchmarked command
    # ("Error from server: ...") makes redis-benchmark >= 7.0 exit with status 1 at once (older
    # ones counted it as a reply): that marks the row n/a (ErrorReply), other failures abort.
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    warnings = [line for line in lines if line.startswith("WARNING")]
    others = [line for line in lines if not line.startswith("WARNING")]
    replies = [line for line in others if line.startswith("Error from server")]
    if replies:
        # "Error from server: REPLY", or "Error from server HOST:PORT: REPLY" with --cluster
        raise ErrorReply(replies[0].split(": ", 1)[-1], " ".join(cmd))
    if proc.returncode != 0 or others:
        raise BenchError(
            f"redis-benchmark exited with status {proc.returncode}: {' '.join(cmd)}\n"
            f"stderr: {proc.stderr.strip()[-2000:]}\nstdout: {proc.stdout.strip()[-2000:]}"
        )
    row = parse_csv(proc.stdout)
    sample = {
        "rps": float(row["rps"]) / factor,  # the row's requests per second
        "p50": float(row["p50_latency_ms"]),
        "p99": float(row["p99_latency_ms"]),
        "seconds": round(seconds, 3),
        "cpu_us": None,
        "warnings": warnings,
    }
    if factor != 1:
        sample["benchmark_rps"] = float(row["rps"])  # of the direct stand-in's single-key commands
    if before is not None:
        user, kernel = (a - b for a, b in zip(after, before))
        us_per_request = 1e6 / os.sysconf("SC_CLK_TCK") / requests
        sample["cpu_ticks"] = user + kernel
        sample["cpu_us"] = (user + kernel) * us_per_request
        sample["cpu_kernel_us"] = kernel * us_per_request
    return sample


# --- talking to slotgate and the cluster directly (RESP) ------------------------------------


class RespError(str):
    """An error reply."""


def read_reply(stream):
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise BenchError(f"connection closed or bad reply line: {line!r}")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode(errors="replace")
    if kind == b"-":
        return RespError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind in (b"$", b"*"):
        length = int(rest)
        if length < 0:
            return None
        if kind == b"*":
            return [read_reply(stream) for _ in range(length)]
        data = stream.read(length + 2)
        if len(data) != length + 2:
            raise BenchError("connection closed in a bulk string")
        return data[:-2]
    raise BenchError(f"unexpected reply line {line!r}")


def call(port, *args, timeout=10.0):
    """Send one command to 127.0.0.1:`port` and return its reply (a RespError for an error)."""
    request = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a), a) for a in (str(arg).encode() for arg in args)
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            with sock.makefile("rb") as stream:
                return read_reply(stream)
    except OSError as error:
        raise BenchError(f"{args[0]} to 127.0.0.1:{port}: {error}") from None


def crc16(data):
    """CRC16-XMODEM, Redis Cluster's key hash."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key):
    key = key.encode()
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key) % 16384


def master_count(port):
    """How many masters serve slots (CLUSTER SLOTS of the node on `port`)."""
    reply = call(port, "CLUSTER", "SLOTS")
    if not isinstance(reply, list):
        raise BenchError(f"CLUSTER SLOTS on {port}: {reply!r}")
    return len({(bytes(r[2][0]), r[2][1]) for r in reply})




def median(samples, key):
    values = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(values) if values else None



# --- the run's environment, for the report -----------------------------------------------


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

