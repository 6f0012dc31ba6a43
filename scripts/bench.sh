#!/usr/bin/env bash
# Benchmark (not a test): slotgate against the Redis Cluster behind it, with redis-benchmark.
#
#   scripts/bench.sh [--quick] [--no-sweep | --sweep-only] [--png PATH]
#
# Installs what is missing (redis-server/redis-tools; matplotlib from
# scripts/bench-requirements.txt when the sweep runs), builds slotgate (cargo build --release),
# starts its own throwaway cluster (3 masters + 3 replicas, no persistence) on free loopback
# ports from 30001 up in a temp dir, starts slotgate in front of it, then runs scripts/bench.py
# in three parts (about 10 minutes in all on a 2-core machine):
#
# 1. The main table: every scenario against the cluster directly (redis-benchmark --cluster)
#    and through slotgate, interleaved over BENCH_ROUNDS rounds; medians of req/s, p50, p99,
#    slotgate CPU µs per request and the ratio slotgate/direct. Scenarios: SET and GET, and
#    MSET/MGET of 10 keys across slots (-t mset, and a custom MGET of 10 key:__rand_int__),
#    each at -P 1 and -P 16. A cross-slot MSET/MGET cannot run against the cluster directly,
#    so there the x10 rows run what a cluster-aware client must: 10 single-key SETs/GETs per
#    request, pipelined (details in bench.py, multi_key_test). A multi-key row that slotgate
#    answers with an error (CROSSSLOT: no splitting) shows n/a.
# 2. The capacity checks (bench_capacity.py): slotgate's RSS while 10,000 idle clients are
#    connected, and its GET -P 1 throughput at 1,000 clients against 50.
# 3. The sweep, how cost grows (bench_sweep.py): req/s, p99 and slotgate CPU per request,
#    through slotgate and directly, against pipeline depth (1-256), clients (10-5,000) and
#    value size (32 B-1 MiB), one run per point; drawn to bench-results/sweep-<timestamp>.png.
#
# The targets of issue 8 (GOALS in bench.py: CPU per request, ratio, p99, the fan-out cost of
# a 10-key MSET/MGET over a GET's, idle RSS, 1,000 clients) are checked on parts 1 and 2 and
# marked PASS or MISS. The report is printed and saved to bench-results/bench-<timestamp>.md,
# with the raw samples in a .json beside it.
#
# Everything it started is stopped by PID on exit, Ctrl-C included.
#
# This measures slotgate with its sockets and the kernel, in times that vary by about 10%
# on a shared machine. For slotgate's own code alone, in instructions per request that vary
# by a few instructions (to check a change for regressions), run scripts/callgrind-path.sh.
#
#   --quick        few requests and one round, every part: a smoke test, not a measurement
#   --no-sweep     parts 1 and 2 only (about 5 minutes)
#   --sweep-only   part 3 only (about 3 minutes)
#   --png PATH     also copy the sweep's picture to PATH; the README's is docs/bench.png,
#                  refreshed only on purpose: scripts/bench.sh --png docs/bench.png
#
# Environment: BENCH_ROUNDS (3), BENCH_REQUESTS_SCALE (1.0; the sweep's request counts too),
# BENCH_CLIENTS (50), BENCH_KEYSPACE (100000), BENCH_RUN_TIMEOUT (300 s per redis-benchmark
# run), BENCH_PORT_BASE (30001), CARGO_TARGET_DIR, BENCH_SLOTGATE_ARGS (extra slotgate flags,
# e.g. "--metrics 127.0.0.1:0" to measure with per-command metrics on), BENCH_PREDIXY (the
# path of a predixy binary: it then runs in front of the same cluster with 1 worker thread,
# as slotgate does by default, and the main table measures it in the same rounds, with the
# issue's targets applied to it as well; predixy is not installed by this script). It raises
# the soft open-files limit to the hard one, which must allow 12,000. Scenarios and targets:
# bench.py.
set -euo pipefail

CALLER_DIR=$PWD # --png PATH is relative to where the script was started
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BENCH_PY="$ROOT/scripts/bench.py"
PROXY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/slotgate"
RESULTS="$ROOT/bench-results"
PORT_BASE="${BENCH_PORT_BASE:-30001}"

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# --- setup ---------------------------------------------------------------------------------

# --- processes, all stopped by PID on exit -----------------------------------------------

TMP=""
NODE_PORTS=()
NODE_PIDS=()
PROXY_PORT=""
PROXY_PID=""
PREDIXY_PORT=""
PREDIXY_PID=""
BENCH_PID=""

# SIGTERM the PIDs, SIGKILL what is left after ~5 s, and reap them (they are our children).
stop_pids() {
    local pid
    (($#)) || return 0
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        if ! wait_for 5 pid_gone "$pid"; then
            say "  pid $pid ignored SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
    set +e
    [[ -n "$BENCH_PID" ]] && stop_pids "$BENCH_PID"
    if [[ -n "$PROXY_PID" ]]; then
        if pid_gone "$PROXY_PID"; then
            wait "$PROXY_PID" 2>/dev/null
            say "bench: slotgate (pid $PROXY_PID) had exited by itself, status $?" >&2
            ((status != 0)) || status=1
        fi
        stop_pids "$PROXY_PID"
    fi
    [[ -n "$PREDIXY_PID" ]] && stop_pids "$PREDIXY_PID"
    ((${#NODE_PIDS[@]})) && stop_pids "${NODE_PIDS[@]}"
    if [[ -n "$TMP" && -f "$TMP/slotgate.log" ]]; then
        # Keep slotgate's log when the run failed (not when it was interrupted).
        if ((status != 0 && status != 130 && status != 143)); then
            mkdir -p "$RESULTS"
            local keep
            keep="$RESULTS/slotgate-$(date +%Y%m%d-%H%M%S).log"
            cp "$TMP/slotgate.log" "$keep"
            say "bench: tail of slotgate's log (whole log kept in $keep):" >&2
            tail -n 30 "$TMP/slotgate.log" >&2
        fi
    fi
    [[ -n "$TMP" ]] && rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Started with setsid, so a Ctrl-C on the terminal reaches only this script, which stops
# them in order (benchmark, slotgate, nodes); non-interactive bash has no job control,
# so setsid does not fork and $! stays the server's PID.
start_node() {
    local port=$1 dir="$TMP/node-$1"
    mkdir -p "$dir"
    setsid redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --cluster-enabled yes \
        --cluster-config-file "$dir/nodes.conf" --save '' --appendonly no --daemonize no \
        --logfile "$dir/redis.log" </dev/null >/dev/null 2>&1 &
    NODE_PIDS+=("$!")
}

node_up() { pid_alive "$1" && pings "$2"; }

node_settled() {
    local port=$1 role
    [[ "$(info_field "$port" cluster_state cluster info)" == ok &&
       "$(info_field "$port" cluster_known_nodes cluster info)" == "${#NODE_PORTS[@]}" &&
       "$(info_field "$port" cluster_slots_ok cluster info)" == 16384 ]] || return 1
    role=$(info_field "$port" role info replication)
    # A replica counts once its initial sync is done, so no full sync runs during a measurement.
    [[ "$role" == master || "$(info_field "$port" master_link_status info replication)" == up ]]
}

all_settled() {
    local port
    for port in "${NODE_PORTS[@]}"; do node_settled "$port" || return 1; done
}

start_cluster() {
    local i addrs=()
    for i in "${!NODE_PORTS[@]}"; do
        start_node "${NODE_PORTS[$i]}"
        addrs+=("127.0.0.1:${NODE_PORTS[$i]}")
    done
    for i in "${!NODE_PORTS[@]}"; do
        wait_for 10 node_up "${NODE_PIDS[$i]}" "${NODE_PORTS[$i]}" ||
            die "redis-server on ${NODE_PORTS[$i]} did not come up (port taken meanwhile?): $(tail -n 5 "$TMP/node-${NODE_PORTS[$i]}/redis.log" 2>&1)"
    done
    say "Creating the cluster on ports ${NODE_PORTS[*]} ..."
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$TMP/cluster-create.log" 2>&1 ||
        { tail -n 20 "$TMP/cluster-create.log" >&2; die "cluster creation failed"; }
    wait_for 60 all_settled || die "the cluster did not reach cluster_state:ok with synced replicas in 60 s"
}

masters() {
    local port
    for port in "${NODE_PORTS[@]}"; do
        [[ "$(info_field "$port" role info replication)" == master ]] && printf '%s\n' "$port"
    done
}

slotgate_ready() {
    pid_alive "$PROXY_PID" || return 1
    [[ "$(rcli "$PROXY_PORT" set bench:probe 1)" == OK ]]
}

start_slotgate() {
    local seeds=$1
    say "Starting slotgate on 127.0.0.1:$PROXY_PORT (seeds $seeds)"
    local -a extra=()
    # shellcheck disable=SC2206 # word splitting of the extra arguments is intended
    [[ -n "${BENCH_SLOTGATE_ARGS:-}" ]] && extra=($BENCH_SLOTGATE_ARGS)
    setsid "$PROXY_BIN" --cluster "$seeds" --listen "127.0.0.1:$PROXY_PORT" "${extra[@]}" \
        </dev/null >"$TMP/slotgate.log" 2>&1 &
    PROXY_PID=$!
    wait_for 15 slotgate_ready ||
        die "slotgate (pid $PROXY_PID) does not answer 'set bench:probe 1' with OK after 15 s"
}

predixy_ready() {
    pid_alive "$PREDIXY_PID" || return 1
    [[ "$(rcli "$PREDIXY_PORT" set bench:probe 1)" == OK ]]
}

# predixy (BENCH_PREDIXY) in front of the same cluster, 1 worker thread like slotgate's default.
start_predixy() {
    local port
    {
        printf 'Name bench\nBind 127.0.0.1:%s\nWorkerThreads 1\nClientTimeout 0\n' "$PREDIXY_PORT"
        printf 'ClusterServerPool {\n    Servers {\n'
        for port in "$@"; do printf '        + 127.0.0.1:%s\n' "$port"; done
        printf '    }\n}\n'
    } >"$TMP/predixy.conf"
    say "Starting predixy ($BENCH_PREDIXY) on 127.0.0.1:$PREDIXY_PORT"
    setsid "$BENCH_PREDIXY" "$TMP/predixy.conf" </dev/null >"$TMP/predixy.log" 2>&1 &
    PREDIXY_PID=$!
    wait_for 15 predixy_ready ||
        die "predixy (pid $PREDIXY_PID) does not answer 'set bench:probe 1' with OK after 15 s: $(tail -n 5 "$TMP/predixy.log")"
}

# BENCH_PREDIXY as an executable's absolute path: a path is taken from where the script was
# started, a bare name from PATH.
resolve_predixy() {
    local found
    found=$(cd "$CALLER_DIR" && command -v -- "$BENCH_PREDIXY") ||
        die "BENCH_PREDIXY=$BENCH_PREDIXY: no such executable (from $CALLER_DIR or PATH)"
    [[ "$found" == /* ]] || found="$CALLER_DIR/$found"
    [[ -x "$found" && ! -d "$found" ]] || die "BENCH_PREDIXY=$BENCH_PREDIXY is not an executable file"
    BENCH_PREDIXY=$found
}

# The capacity check holds 10,000 idle clients open (a file each in bench.py and in slotgate),
# and the sweep runs redis-benchmark with 5,000 clients: raise the soft open-files limit to
# the hard one, for this script and everything it starts.
raise_open_files() {
    local needed=12000 hard
    hard=$(ulimit -Hn)
    [[ "$hard" == unlimited ]] && hard=$((needed * 4))
    ((hard >= needed)) || die "needs $needed open files per process, the hard limit (ulimit -Hn) is $hard: raise it"
    ulimit -n "$hard"
}

# --- main ----------------------------------------------------------------------------------

RUN_FLAGS=()
SWEEP=1 SWEEP_ONLY=0
while (($#)); do
    case "$1" in
        --quick) RUN_FLAGS+=(--quick) ;;
        --sweep-only) RUN_FLAGS+=(--sweep-only); SWEEP_ONLY=1 ;;
        --no-sweep) RUN_FLAGS+=(--no-sweep); SWEEP=0 ;;
        --png)
            (($# >= 2)) || die "--png needs a path"
            png=$2
            [[ "$png" == /* ]] || png="$CALLER_DIR/$png"
            [[ -d "$(dirname "$png")" ]] || die "--png $2: no directory $(dirname "$png")"
            RUN_FLAGS+=(--png "$png")
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
((SWEEP || !SWEEP_ONLY)) || die "--sweep-only and --no-sweep exclude each other"

install_redis
command -v python3 >/dev/null || apt_install python3
if ((SWEEP)) && ! python3 -c 'import matplotlib' 2>/dev/null; then
    pip_install_requirements "$ROOT/scripts/bench-requirements.txt"
fi
build_slotgate
raise_open_files

TMP="$(mktemp -d "${TMPDIR:-/tmp}/bench-slotgate.XXXXXX")"
mapfile -t ports < <(python3 "$BENCH_PY" free-ports 8 --from "$PORT_BASE")
((${#ports[@]} == 8)) || die "could not find 8 free ports from $PORT_BASE"
NODE_PORTS=("${ports[@]:0:6}")
PROXY_PORT="${ports[6]}"

start_cluster
mapfile -t MASTERS < <(masters)
((${#MASTERS[@]} == 3)) || die "expected 3 masters, found ${#MASTERS[@]}: ${MASTERS[*]}"
seeds="$(printf '127.0.0.1:%s,' "${MASTERS[@]}")"
start_slotgate "${seeds%,}"
PREDIXY_FLAGS=()
# predixy runs in the main table only: not started for --sweep-only.
if [[ -n "${BENCH_PREDIXY:-}" ]] && ((!SWEEP_ONLY)); then
    resolve_predixy
    PREDIXY_PORT="${ports[7]}"
    start_predixy "${MASTERS[@]}"
    PREDIXY_FLAGS=(--predixy-port "$PREDIXY_PORT" --predixy-pid "$PREDIXY_PID")
fi
say "Cluster up (masters ${MASTERS[*]}), slotgate pid $PROXY_PID on $PROXY_PORT; benchmarking ..."

# In the background and waited for, so INT/TERM traps run at once rather than after the run.
python3 "$BENCH_PY" run "${RUN_FLAGS[@]}" --cluster-port "${MASTERS[0]}" --slotgate-port "$PROXY_PORT" \
    --slotgate-pid "$PROXY_PID" --slotgate-bin "$PROXY_BIN" --results-dir "$RESULTS" "${PREDIXY_FLAGS[@]}" &
BENCH_PID=$!
status=0
wait "$BENCH_PID" || status=$?
BENCH_PID=""

pid_alive "$PROXY_PID" || die "slotgate exited during the benchmark"
[[ -z "$PREDIXY_PID" ]] || pid_alive "$PREDIXY_PID" ||
    die "predixy exited during the benchmark; the end of its log: $(tail -n 10 "$TMP/predixy.log")"
problems=$(grep -cE ' (WARN|ERROR) ' "$TMP/slotgate.log" || true)
if ((problems > 0)); then
    say "bench: slotgate logged $problems warning/error line(s); the last ones:"
    grep -E ' (WARN|ERROR) ' "$TMP/slotgate.log" | tail -n 10
fi
((status == 0)) || exit "$status"
