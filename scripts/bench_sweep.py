#!/usr/bin/env python3
"""How cost grows (issue 8), for scripts/bench.py: throughput and p99 through slotgate and
directly against pipeline depth, client count and value size, one redis-benchmark run per
point and target, printed as a table and drawn as a PNG (matplotlib, imported only to draw).

One run per point, not medians over rounds: the sweep shows the shape of the curves, which a
run-to-run noise of about 10% on a shared 2-core machine does not change. The targets are
checked by the main table's interleaved rounds, not here.
"""
import dataclasses
import importlib.util

from bench_core import BenchError, fmt, run_benchmark


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of a sweep: a redis-benchmark -t COMMAND run with these settings."""

    axis: str  # a key of AXES
    x: int  # its value on the axis: the depth, the clients or the value size in bytes
    command: str  # "get" or "set"
    requests: int  # -n at BENCH_REQUESTS_SCALE=1: a run of about 3 s through slotgate
    depth: int = 1
    clients: int = 50
    size: int = 0  # -d in bytes; 0: redis-benchmark's default (3) and the main table's keyspace
    keyspace: int = 0  # -r; 0: the main table's (BENCH_KEYSPACE), which populate() has filled

    @property
    def name(self):
        setting = {"depth": f"-P {self.depth}", "clients": f"-c {self.clients}", "size": f"-d {self.size}"}
        return f"{self.command.upper()} {setting[self.axis]}"

    def args(self):
        return ("-t", self.command, "-P", str(self.depth), *(("-d", str(self.size)) if self.size else ()))


# Each axis: what it varies, and what the picture and the table call it.
AXES = {
    "depth": "pipeline depth (-P; GET, 50 clients)",
    "clients": "clients (-c; GET -P 1)",
    "size": "value size (-d; SET then GET, -P 1, 50 clients)",
}


def size_points():
    """SET then GET at each value size. The keyspace shrinks as values grow, so that SET fills
    it (GETs then find values of that size) and 1 MiB values take 100 MiB per target."""
    out = []
    for size, requests, keyspace in ((32, 300_000, 10_000), (1024, 300_000, 10_000), (65536, 60_000, 1_000),
                                     (1 << 20, 4_000, 100)):
        for command in ("set", "get"):
            out.append(Point("size", size, command, requests, size=size, keyspace=keyspace))
    return out


# Run in this order: the value sizes last, as their SETs overwrite the filled keyspace's first keys.
POINTS = [
    *(Point("depth", d, "get", n, depth=d) for d, n in ((1, 300_000), (4, 800_000), (16, 2_000_000),
                                                         (64, 4_000_000), (256, 5_000_000))),
    *(Point("clients", c, "get", n, clients=c) for c, n in ((10, 200_000), (50, 300_000), (500, 300_000),
                                                            (5000, 300_000))),
    *size_points(),
]


def measure(targets, sweep, keyspace, timeout):
    """Every point against every target (direct first, as in the main table), once, appended to
    sweep["points"] as it goes: {"axis", "x", "command", "name", "requests", ..., TARGET: sample}.
    Requests are scaled by sweep["scale"]; `keyspace` is the main table's, filled before.
    """
    total, done = len(POINTS) * len(targets), 0
    for point in POINTS:
        requests = max(100, 2 * point.clients, int(point.requests * sweep["scale"]))
        row = {"axis": point.axis, "x": point.x, "command": point.command, "name": point.name,
               "requests": requests, "clients": point.clients, "keyspace": point.keyspace or keyspace}
        sweep["points"].append(row)
        for target in targets:
            try:
                sample = run_benchmark(target, point.args(), requests, clients=point.clients,
                                       keyspace=row["keyspace"], timeout=timeout)
            except BenchError as error:
                raise BenchError(f"{point.name} against {target.name}: {error}") from None
            row[target.name] = sample
            done += 1
            cpu = f", slotgate CPU {sample['cpu_us']:.2f} µs/req" if sample["cpu_us"] is not None else ""
            print(f"  [{done}/{total}] {point.axis:<7} {point.name:<13} {target.name:<8} "
                  f"{sample['rps']:>12,.0f} req/s  p99 {sample['p99']:.3f} ms  ({sample['seconds']:.1f} s{cpu})",
                  flush=True)


def x_label(axis, x):
    """An axis value for people: 1 KiB rather than 1024."""
    if axis != "size":
        return f"{x:,}"
    for unit, bytes_ in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if x >= bytes_ and x % bytes_ == 0:
            return f"{x // bytes_} {unit}"
    return f"{x} B"


def y_label(value):
    """A y axis value for people: 200k rather than 200000, 0.5 rather than 5e-1."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def ratio(point):
    direct, slotgate = point.get("direct"), point.get("slotgate")
    return slotgate["rps"] / direct["rps"] if direct and slotgate and direct["rps"] else None


def report(sweep, png=None):
    """Markdown lines: one table, a block of rows per axis."""
    lines = ["", "## How cost grows", "",
             "One run per point and target (not medians over rounds: the curves' shape is the point; "
             "single runs on a shared 2-core machine vary by about 10%)"
             + (f", requests scaled by {sweep['scale']:g}" if sweep["scale"] != 1 else "") + "."
             + (f" Picture: `{png}`." if png else ""), "",
             "| sweep | point | direct req/s | direct p99 | slotgate req/s | slotgate p99 "
             "| slotgate CPU µs/req | ratio slotgate/direct |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for point in sweep["points"]:
        direct, slotgate = point.get("direct") or {}, point.get("slotgate") or {}
        setting = {"depth": "-P ", "clients": "-c "}.get(point["axis"], "") + x_label(point["axis"], point["x"])
        what = f"{point['command'].upper()} {setting}"
        lines.append(f"| {point['axis']} | {what} | {fmt(direct.get('rps'), ',.0f')} | {fmt(direct.get('p99'), '.3f')} "
                     f"| {fmt(slotgate.get('rps'), ',.0f')} | {fmt(slotgate.get('p99'), '.3f')} "
                     f"| {fmt(slotgate.get('cpu_us'), '.2f')} | {fmt(ratio(point), '.2f')} |")
    lines += ["", "Axes: " + "; ".join(f"{axis}: {text}" for axis, text in AXES.items())
              + ". Value sizes use a keyspace of 10,000 keys (32 B, 1 KiB), 1,000 (64 KiB) or 100 (1 MiB); "
              "the other points the main table's. Latencies in ms."]
    return lines


def check_matplotlib():
    """Fail before the measuring, not after it, when the picture cannot be drawn."""
    if importlib.util.find_spec("matplotlib") is None:
        raise BenchError("the sweep draws with matplotlib, which is not installed: "
                         "python3 -m pip install -r scripts/bench-requirements.txt (bench.sh does)")


def plot(sweep, png, title):
    """The picture: a column per axis, throughput above and p99 below, log scales, slotgate
    against the cluster directly (GET solid, SET dashed)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    fig, grid = plt.subplots(2, len(AXES), figsize=(15, 8.5), squeeze=False)
    colors = {"direct": "tab:gray", "slotgate": "tab:blue"}
    for col, (axis, text) in enumerate(AXES.items()):
        points = [p for p in sweep["points"] if p["axis"] == axis]
        for command, style in (("get", "-"), ("set", "--")):
            line = [p for p in points if p["command"] == command]
            for target, color in colors.items():
                measured = [p for p in line if p.get(target)]
                if not measured:
                    continue
                xs = [p["x"] for p in measured]
                label = f"{target} {command.upper()}" if axis == "size" else target
                grid[0][col].plot(xs, [p[target]["rps"] for p in measured], style, color=color, marker="o",
                                  label=label)
                grid[1][col].plot(xs, [p[target]["p99"] for p in measured], style, color=color, marker="o",
                                  label=label)
        ticks = sorted({p["x"] for p in points})
        for row, ylabel in enumerate(("requests/s", "p99 latency (ms)")):
            ax = grid[row][col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(ticks, [x_label(axis, x) for x in ticks])
            ax.minorticks_off()
            # 1-2-5 steps: a curve within one decade still gets labels on its y axis.
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: y_label(value)))
            ax.grid(True, which="major", alpha=0.3)
            ax.set_ylabel(ylabel)
            ax.set_xlabel(text)
            ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
