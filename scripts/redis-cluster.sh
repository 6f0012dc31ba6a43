#!/usr/bin/env bash
# Local Redis Cluster (six redis-server processes, 3 masters + 3 replicas) with slotgate
# in front of it.
#
#   scripts/redis-cluster.sh start|stop|status|restart
#
# Nodes listen on 127.0.0.1:7001-7006 (cluster bus 17001-17006) and keep their data,
# nodes.conf, pidfile and log in data/node-N; slotgate listens on 127.0.0.1:6380.
# Port 6379 is never used: a distro redis service may own it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

NODES=(1 2 3 4 5 6)
DATA="$ROOT/data"
SLOTGATE_PORT=6380
SLOTGATE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/slotgate"
SLOTGATE_PID="$DATA/slotgate.pid"
SLOTGATE_LOG="$DATA/slotgate.log"

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

port_of() { echo $((7000 + $1)); }
node_dir() { echo "$DATA/node-$1"; }

# PID from a pidfile if that process is alive and still the program we started
# (guards against the PID having been reused by something else).
live_pid() {
    local file=$1 name=$2 pid
    [[ -r "$file" ]] || return 1
    pid=$(<"$file")
    [[ "$pid" =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
    if [[ -r "/proc/$pid/cmdline" ]]; then
        [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" == *"$name"* ]] || return 1
    fi
    echo "$pid"
}

# SIGTERM a PID, then SIGKILL if it is still there after ~5 s.
terminate() {
    local pid=$1
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_for 5 pid_gone "$pid" && return 0
    say "  pid $pid ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

# --- start, one function per step ------------------------------------------

start_node() {
    local n=$1 port dir
    port=$(port_of "$n"); dir=$(node_dir "$n")
    if live_pid "$dir/redis.pid" redis-server >/dev/null || pings "$port"; then
        say "  node-$n (:$port) already running"
        return 0
    fi
    mkdir -p "$dir"
    # The config says 'dir /data' (the container path), and Redis applies it, and fails on a
    # missing directory, before any command-line override; so feed the file on stdin
    # without that one line and pass the local dir as an override instead.
    local line
    while IFS= read -r line; do
        [[ "$line" =~ ^[[:space:]]*dir[[:space:]] ]] || printf '%s\n' "$line"
    done <"config/redis-node-$n.conf" |
        redis-server - --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
            --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null ||
        die "node-$n failed to start; see $dir/redis.log"
    wait_for 10 pings "$port" || die "node-$n (:$port) does not answer PING after 10 s; see $dir/redis.log"
    say "  node-$n (:$port) started"
}

# A node that has never joined a cluster knows only itself and owns no slots.
node_is_fresh() {
    [[ "$(info_field "$(port_of "$1")" cluster_known_nodes)" == 1 &&
       "$(info_field "$(port_of "$1")" cluster_slots_assigned)" == 0 ]]
}

create_cluster() {
    local n fresh=0 addrs=()
    for n in "${NODES[@]}"; do
        node_is_fresh "$n" && fresh=$((fresh + 1))
        addrs+=("127.0.0.1:$(port_of "$n")")
    done
    # Nodes restarted from an existing data/ rejoin by themselves from their nodes.conf.
    ((fresh == 0)) && return 0
    ((fresh == ${#NODES[@]})) || die "only $fresh of ${#NODES[@]} nodes are empty: data/ holds a partial cluster.
Reset it (this deletes all data): $0 stop && rm -rf $DATA && $0 start"
    say "Creating the cluster (log: data/cluster-create.log) ..."
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
        >"$DATA/cluster-create.log" 2>&1 ||
        { tail -n 20 "$DATA/cluster-create.log" >&2; die "cluster creation failed"; }
}

all_nodes_ok() {
    local n
    for n in "${NODES[@]}"; do
        [[ "$(info_field "$(port_of "$n")" cluster_state)" == ok ]] || return 1
    done
}

wait_cluster_ok() {
    wait_for 30 all_nodes_ok ||
        die "cluster_state is not ok on every node after 30 s; see '$0 status' and data/node-*/redis.log"
}

slotgate_settled() { pings "$SLOTGATE_PORT" || ! live_pid "$SLOTGATE_PID" slotgate >/dev/null; }

start_slotgate() {
    if live_pid "$SLOTGATE_PID" slotgate >/dev/null; then
        say "slotgate already running (pid $(<"$SLOTGATE_PID"))"
    else
        [[ -x "$SLOTGATE_BIN" ]] || die "$SLOTGATE_BIN not found (did the build succeed?)"
        [[ -f proxy.toml ]] || die "proxy.toml not found in $ROOT"
        nohup "$SLOTGATE_BIN" --config proxy.toml >"$SLOTGATE_LOG" 2>&1 </dev/null &
        echo $! >"$SLOTGATE_PID"
    fi
    # Stop waiting early if it exits; and require our PID alive, as a PONG could come from
    # someone else's proxy on 6380.
    wait_for 10 slotgate_settled || true
    if ! pings "$SLOTGATE_PORT" || ! live_pid "$SLOTGATE_PID" slotgate >/dev/null; then
        tail -n 20 "$SLOTGATE_LOG" >&2 || true
        die "slotgate exited or is not answering PING on 127.0.0.1:$SLOTGATE_PORT; log: $SLOTGATE_LOG"
    fi
}

row() { printf '%-7s %-6s %-5s %-8s %-6s %-8s %s\n' "$@"; }

# One row per node: state, role, keys, cluster_state, and slots (master) or master (replica).
# Returns 1 if any node is down or not in cluster_state ok.
print_nodes() {
    local n port role kind slots state keys ok=0
    row node port state role keys cluster slots/master
    for n in "${NODES[@]}"; do
        port=$(port_of "$n")
        if ! pings "$port"; then
            printf '%-7s %-6s %s\n' "node-$n" "$port" down; ok=1; continue
        fi
        mapfile -t role < <(rcli "$port" role | tr -d '\r')
        state=$(info_field "$port" cluster_state) || true
        keys=$(rcli "$port" dbsize) || true
        [[ "$state" == ok ]] || ok=1
        if [[ "${role[0]:-}" == master ]]; then
            # In 'cluster nodes', fields 9+ of the line flagged "myself" are this node's slots.
            kind=master
            slots=$(rcli "$port" cluster nodes | tr -d '\r' | while read -ra f; do
                [[ "${f[2]:-}" == *myself* ]] && echo "${f[*]:8}"; done) || true
        else
            kind=replica slots="of ${role[1]:-?}:${role[2]:-?}"
        fi
        row "node-$n" "$port" up "$kind" "$keys" "$state" "${slots:--}"
    done
    return "$ok"
}

# --- commands ---------------------------------------------------------------

cmd_start() {
    install_redis
    build_slotgate
    mkdir -p "$DATA"
    say "Starting nodes ..."
    local n
    for n in "${NODES[@]}"; do start_node "$n"; done
    create_cluster
    wait_cluster_ok
    start_slotgate
    say ""
    print_nodes || true
    say "slotgate: 127.0.0.1:$SLOTGATE_PORT (try: redis-cli -p $SLOTGATE_PORT set a 1)"
}

cmd_stop() {
    local pid n port dir
    if pid=$(live_pid "$SLOTGATE_PID" slotgate); then
        say "Stopping slotgate (pid $pid) ..."
        terminate "$pid"
    fi
    rm -f "$SLOTGATE_PID"
    for n in "${NODES[@]}"; do
        port=$(port_of "$n"); dir=$(node_dir "$n")
        pid=$(live_pid "$dir/redis.pid" redis-server) || pid=""
        [[ -n "$pid" ]] || pings "$port" || continue
        say "Stopping node-$n (:$port) ..."
        # SHUTDOWN writes the AOF/RDB before exiting; signals are only the fallback.
        rcli "$port" shutdown >/dev/null || true
        if [[ -n "$pid" ]]; then
            wait_for 10 pid_gone "$pid" || terminate "$pid"
        fi
    done
}

cmd_status() {
    local ok=0 pid
    command -v redis-cli >/dev/null || die "redis-cli not found (run: $0 start)"
    print_nodes || ok=1
    if ! pid=$(live_pid "$SLOTGATE_PID" slotgate); then
        say "slotgate: not running"; ok=1
    elif pings "$SLOTGATE_PORT"; then
        say "slotgate: running (pid $pid), answering on 127.0.0.1:$SLOTGATE_PORT"
    else
        say "slotgate: running (pid $pid), NOT answering on 127.0.0.1:$SLOTGATE_PORT"; ok=1
    fi
    return "$ok"
}

usage() {
    cat <<EOF
usage: $0 start|stop|status|restart

  start    install redis if missing, build slotgate, start nodes 7001-7006,
           create the cluster on first run, start slotgate on 127.0.0.1:$SLOTGATE_PORT
  stop     stop slotgate and the nodes (nodes persist their data to data/)
  status   nodes, roles, slots, keys, cluster_state, slotgate; exit 1 unless all is up
  restart  stop, then start
EOF
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    # backup|restore (the guide's Backup/Recovery procedures) and a Docker mode
    # (docker-compose instead of local processes) are added here by a later change.
    *) usage >&2; exit 2 ;;
esac
