#!/usr/bin/env bash
# The setup guide's cluster kit: a Redis Cluster of six nodes (3 masters + 3 replicas) with
# slotgate in front of it, and backup/restore of its data folder.
#
#   scripts/redis-cluster.sh start|stop|status|restart|backup|restore [DIR] | help
#
# Both modes run the same nodes with the same configs (config/redis-node-N.conf), ports and
# data folders (data/node-N: AOF, RDB, nodes.conf):
#   local   six redis-server processes on 127.0.0.1:7001-7006 (cluster bus 17001-17006) and
#           slotgate on 127.0.0.1:6380; pidfiles and logs in data/. The default without Docker.
#   docker  docker compose runs docker-compose.yml (containers redis-node-1..6, cluster-init,
#           slotgate, prometheus, grafana). The default when a Docker engine answers.
# Port 6379 is never used: a distro redis service may own it. A data folder belongs to the mode
# that made it: nodes.conf records the addresses the nodes announce (127.0.0.1 locally).
# Locally, a process is ours only if the data folder's pidfile names it, or (a node) it runs in
# its node folder: any other Redis or program on our ports is left alone, and start refuses.
#
# Environment (the defaults are the guide's; all but REDIS_CLUSTER_MODE are for local mode,
# as docker-compose.yml fixes ports and ./data):
#   REDIS_CLUSTER_MODE       local or docker (default: docker if `docker info` works and
#                            docker compose is installed, else local)
#   REDIS_CLUSTER_PORT_BASE  node N listens on BASE+N, its cluster bus on BASE+N+10000 (7000)
#   REDIS_CLUSTER_PROXY_PORT slotgate's port on 127.0.0.1 (6380)
#   REDIS_CLUSTER_DATA       the data folder (data/ at the repo top); backups are made beside
#                            it, named <folder name>-backup-YYYYMMDD-HHMMSS
#   REDIS_CLUSTER_PROXY_BIN  run this slotgate binary instead of building one with cargo
#   REDISCLI_AUTH            the nodes' password, once their configs set requirepass (slotgate
#                            gets it as SLOTGATE_NODE_PASSWORD, unless that is set)
# (Not SLOTGATE_*: slotgate reads those as its own settings and refuses unknown ones, which is
# also why this script's own variables are PROXY_*. It is started with --listen and --cluster
# set from the above; other SLOTGATE_* settings in the environment reach it.)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLER_DIR=$PWD

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

# Paths the caller gives are relative to where they ran us; we run from the repo top.
absolute() { if [[ "$1" == /* ]]; then echo "$1"; else echo "$CALLER_DIR/$1"; fi; }

NODES=(1 2 3 4 5 6)
DATA="$(absolute "${REDIS_CLUSTER_DATA:-$ROOT/data}")"
DATA="${DATA%/}"
PORT_BASE="${REDIS_CLUSTER_PORT_BASE:-7000}"
PROXY_PORT="${REDIS_CLUSTER_PROXY_PORT:-6380}"
PROXY_BIN_GIVEN="${REDIS_CLUSTER_PROXY_BIN:-}"
PROXY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/slotgate"
if [[ "$PROXY_BIN_GIVEN" == */* ]]; then
    PROXY_BIN=$(absolute "$PROXY_BIN_GIVEN")
elif [[ -n "$PROXY_BIN_GIVEN" ]]; then
    PROXY_BIN=$(command -v "$PROXY_BIN_GIVEN") || PROXY_BIN=$PROXY_BIN_GIVEN
fi
PROXY_PIDFILE="$DATA/slotgate.pid"
PROXY_LOG="$DATA/slotgate.log"
# Longest wait for one node's AOF rewrite or RDB save during a backup, in seconds.
SAVE_TIMEOUT=600
MODE=""      # local or docker, set by choose_mode
COMPOSE=()   # docker compose (v2 plugin) or docker-compose (v1), in docker mode
STAGED=""    # a half-made copy, removed if we exit before it is complete

cd "$ROOT"
trap '[[ -z "$STAGED" ]] || rm -rf "$STAGED"' EXIT

if ! [[ "$PORT_BASE" =~ ^[0-9]{1,5}$ ]] || ((PORT_BASE < 1 || PORT_BASE + 6 + 10000 > 65535)); then
    die "REDIS_CLUSTER_PORT_BASE must be a number from 1 to 55529 (node ports and their +10000 bus ports), not '$PORT_BASE'"
fi
if ! [[ "$PROXY_PORT" =~ ^[0-9]{1,5}$ ]] || ((PROXY_PORT < 1 || PROXY_PORT > 65535)); then
    die "REDIS_CLUSTER_PROXY_PORT must be a port number, not '$PROXY_PORT'"
fi

port_of() { echo $((PORT_BASE + $1)); }
node_dir() { echo "$DATA/node-$1"; }

# --- mode: local processes or docker compose ----------------------------------

find_compose() {
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null && docker-compose version >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    else
        return 1
    fi
}

# A Docker client alone is not enough: the engine must answer.
docker_usable() { command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1 && find_compose; }

choose_mode() {
    case "${REDIS_CLUSTER_MODE:-}" in
        local) MODE=local ;;
        docker) MODE=docker ;;
        "") if [[ -f docker-compose.yml ]] && docker_usable; then MODE=docker; else MODE=local; fi ;;
        *) die "REDIS_CLUSTER_MODE must be local or docker, not '$REDIS_CLUSTER_MODE'" ;;
    esac
    [[ "$MODE" == local ]] && return 0
    [[ -f docker-compose.yml ]] || die "docker mode needs $ROOT/docker-compose.yml"
    ((${#COMPOSE[@]})) || docker_usable ||
        die "docker mode needs a running Docker engine ('docker info' fails) and docker compose; or use REDIS_CLUSTER_MODE=local"
    [[ "$PORT_BASE" == 7000 && "$PROXY_PORT" == 6380 && "$DATA" == "$ROOT/data" ]] ||
        die "REDIS_CLUSTER_PORT_BASE, REDIS_CLUSTER_PROXY_PORT and REDIS_CLUSTER_DATA are for local mode only:
docker-compose.yml fixes ports 7001-7006 and 6380 and mounts ./data"
}

# redis-cli on node N: a local process on its port, or inside its container.
node_cli() {
    local n=$1
    shift
    if [[ "$MODE" == docker ]]; then
        local -a pass=()
        [[ -n "${REDISCLI_AUTH:-}" ]] && pass=(-e REDISCLI_AUTH)
        timeout 5 docker exec "${pass[@]}" "redis-node-$n" redis-cli "$@" 2>/dev/null
    else
        rcli "$(port_of "$n")" "$@"
    fi
}
node_pings() { [[ "$(node_cli "$1" ping)" == PONG ]]; }
# One field of node N's reply: node_field N FIELD [COMMAND...] (CLUSTER INFO by default).
node_field() {
    local n=$1 field=$2
    shift 2
    (($# > 0)) || set -- cluster info
    field_value "$field" < <(node_cli "$n" "$@")
}

# The server on node N's port runs in node N's folder (CONFIG GET dir, which Redis reports
# with symlinks resolved).
node_in_its_dir() {
    local dir
    dir=$(cd "$(node_dir "$1")" 2>/dev/null && pwd -P) || return 1
    [[ "$(rcli "$(port_of "$1")" config get dir | sed -n 2p)" == "$dir" ]]
}

# Node N is ours: in docker mode its container is; locally, its pidfile in the data folder
# names a live redis-server, or the server on its port runs in its folder. Any other Redis on
# that port (another data folder's node, a distro service) is never adopted nor stopped.
node_is_ours() {
    [[ "$MODE" == docker ]] && return 0
    live_pid "$(node_dir "$1")/redis.pid" redis-server >/dev/null || node_in_its_dir "$1"
}
node_up() { node_is_ours "$1" && node_pings "$1"; }
not_ours_message() {
    echo "port $(port_of "$1") is taken by a Redis that is not node-$1 of $DATA"
}

# --- local processes ----------------------------------------------------------

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

# SIGTERM a PID, then SIGKILL if it is still there after $2 seconds (default 5).
terminate() {
    local pid=$1 grace=${2:-5}
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_for "$grace" pid_gone "$pid" && return 0
    say "  pid $pid ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

# Before anything starts: each port is free, or held by this data folder's own process.
check_ports() {
    local n port
    for n in "${NODES[@]}"; do
        node_is_ours "$n" && continue
        port=$(port_of "$n")
        ! pings "$port" || die "$(not_ours_message "$n"); stop it or set REDIS_CLUSTER_PORT_BASE"
        for port in "$port" $((port + 10000)); do
            ! port_open "$port" ||
                die "port $port (node-$n) is taken by a program that is not node-$n of $DATA; stop it or set REDIS_CLUSTER_PORT_BASE"
        done
    done
    live_pid "$PROXY_PIDFILE" slotgate >/dev/null || ! port_open "$PROXY_PORT" ||
        die "port $PROXY_PORT is taken by a program that is not the slotgate of $DATA; stop it or set REDIS_CLUSTER_PROXY_PORT"
}

start_node() {
    local n=$1 port dir
    port=$(port_of "$n"); dir=$(node_dir "$n")
    if node_is_ours "$n"; then
        say "  node-$n (:$port) already running"
        return 0
    fi
    ! pings "$port" || die "$(not_ours_message "$n"); stop it or set REDIS_CLUSTER_PORT_BASE"
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
    [[ "$(node_field "$1" cluster_known_nodes)" == 1 && "$(node_field "$1" cluster_slots_assigned)" == 0 ]]
}

create_cluster() {
    local n fresh=0 addrs=()
    for n in "${NODES[@]}"; do
        node_is_fresh "$n" && fresh=$((fresh + 1))
        addrs+=("127.0.0.1:$(port_of "$n")")
    done
    # Nodes restarted from an existing data folder (or a restored backup) rejoin by
    # themselves from their nodes.conf.
    ((fresh == 0)) && return 0
    ((fresh == ${#NODES[@]})) || die "only $fresh of ${#NODES[@]} nodes are empty: $DATA holds a partial cluster.
Reset it (this deletes all data): $0 stop && rm -rf $DATA && $0 start"
    say "Creating the cluster (log: $DATA/cluster-create.log) ..."
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
        >"$DATA/cluster-create.log" 2>&1 ||
        { tail -n 20 "$DATA/cluster-create.log" >&2; die "cluster creation failed"; }
}

all_nodes_ok() {
    local n
    for n in "${NODES[@]}"; do
        [[ "$(node_field "$n" cluster_state)" == ok ]] || return 1
    done
}

wait_cluster_ok() {
    wait_for 30 all_nodes_ok ||
        die "cluster_state is not ok on every node after 30 s; see '$0 status' and $DATA/node-*/redis.log"
}

seed_list() {
    local n seeds=()
    for n in "${NODES[@]}"; do seeds+=("127.0.0.1:$(port_of "$n")"); done
    local IFS=,
    echo "${seeds[*]}"
}

# Up, or gone: $1 is our own child, whose PID cannot be reused before we wait for it (and
# which is not slotgate yet between fork and exec, so no look at its command line).
# slotgate answers (NOAUTH too: its clients may need requirepass, which this script lacks).
proxy_answers() { [[ "$(rcli "$PROXY_PORT" ping)" =~ ^(PONG|NOAUTH) ]]; }
slotgate_settled() { proxy_answers || pid_gone "$1"; }

start_slotgate() {
    local pid status=0
    if pid=$(live_pid "$PROXY_PIDFILE" slotgate); then
        say "slotgate already running (pid $pid)"
        proxy_answers ||
            die "slotgate (pid $pid) is not answering PING on 127.0.0.1:$PROXY_PORT; log: $PROXY_LOG"
        return 0
    fi
    [[ -x "$PROXY_BIN" ]] || die "$PROXY_BIN not found (did the build succeed?)"
    [[ -f proxy.toml ]] || die "proxy.toml not found in $ROOT"
    ! port_open "$PROXY_PORT" ||
        die "port $PROXY_PORT is taken by a program that is not the slotgate of $DATA; stop it or set REDIS_CLUSTER_PROXY_PORT"
    # proxy.toml for every setting but the two this script owns; the nodes' password, if
    # they want one (REDISCLI_AUTH), unless SLOTGATE_NODE_PASSWORD says otherwise.
    SLOTGATE_NODE_PASSWORD="${SLOTGATE_NODE_PASSWORD:-${REDISCLI_AUTH:-}}" nohup "$PROXY_BIN" --config proxy.toml \
        --listen "127.0.0.1:$PROXY_PORT" --cluster "$(seed_list)" >"$PROXY_LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PROXY_PIDFILE"
    wait_for 10 slotgate_settled "$pid" || true
    pid_alive "$pid" && proxy_answers && return 0
    tail -n 20 "$PROXY_LOG" >&2 || true
    pid_alive "$pid" &&
        die "slotgate (pid $pid) is not answering PING on 127.0.0.1:$PROXY_PORT after 10 s; log: $PROXY_LOG"
    wait "$pid" || status=$?
    die "slotgate exited with status $status (128+N: killed by signal N); log: $PROXY_LOG"
}

local_start() {
    install_redis
    check_ports
    if [[ -n "$PROXY_BIN_GIVEN" ]]; then
        [[ -x "$PROXY_BIN" ]] || die "REDIS_CLUSTER_PROXY_BIN=$PROXY_BIN is not an executable file"
    else
        build_slotgate
    fi
    mkdir -p "$DATA"
    say "Starting nodes ..."
    local n
    for n in "${NODES[@]}"; do start_node "$n"; done
    create_cluster
    wait_cluster_ok
    start_slotgate
}

port_closed() { ! port_open "$1"; }

# Stops what is ours (see node_is_ours) and says what it leaves alone.
local_stop() {
    local pid n port dir
    if pid=$(live_pid "$PROXY_PIDFILE" slotgate); then
        say "Stopping slotgate (pid $pid) ..."
        # It first answers what its clients sent: up to drain_timeout_ms (10 s by default).
        terminate "$pid" 15
    elif port_open "$PROXY_PORT"; then
        say "Left alone: port $PROXY_PORT, taken by a program that is not the slotgate of $DATA"
    fi
    rm -f "$PROXY_PIDFILE"
    for n in "${NODES[@]}"; do
        port=$(port_of "$n"); dir=$(node_dir "$n")
        pid=$(live_pid "$dir/redis.pid" redis-server) || pid=""
        if node_in_its_dir "$n"; then
            say "Stopping node-$n (:$port) ..."
            # SHUTDOWN writes the AOF/RDB before exiting; signals are only the fallback.
            rcli "$port" shutdown >/dev/null || true
            if [[ -n "$pid" ]]; then
                wait_for 10 pid_gone "$pid" || terminate "$pid"
            else
                wait_for 10 port_closed "$port" || say "  node-$n still answers after SHUTDOWN; see $dir/redis.log"
            fi
        elif [[ -n "$pid" ]]; then
            # Ours by its pidfile, yet not answering from its folder (hung, or CONFIG renamed):
            # SIGTERM makes Redis save and exit as SHUTDOWN does.
            say "Stopping node-$n (pid $pid) ..."
            terminate "$pid"
        elif pings "$port"; then
            say "Left alone: $(not_ours_message "$n")"
        fi
    done
}

# slotgate's line of 'status'; returns 1 unless it is up and answering.
local_slotgate_status() {
    local pid
    if ! pid=$(live_pid "$PROXY_PIDFILE" slotgate); then
        if port_open "$PROXY_PORT"; then
            say "slotgate: not running (port $PROXY_PORT is taken by another program)"
        else
            say "slotgate: not running"
        fi
        return 1
    elif proxy_answers; then
        say "slotgate: running (pid $pid), answering on 127.0.0.1:$PROXY_PORT"
    else
        say "slotgate: running (pid $pid), NOT answering on 127.0.0.1:$PROXY_PORT"; return 1
    fi
}

local_running() {
    local n
    live_pid "$PROXY_PIDFILE" slotgate >/dev/null && return 0
    for n in "${NODES[@]}"; do
        node_is_ours "$n" && return 0
    done
    return 1
}

# --- docker compose -------------------------------------------------------------

# slotgate's container health (its healthcheck runs 'slotgate health'), or its state.
docker_slotgate_health() {
    local id
    id=$("${COMPOSE[@]}" ps -q slotgate 2>/dev/null) && [[ -n "$id" ]] || return 0
    docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null
}
docker_slotgate_ready() { [[ "$(docker_slotgate_health)" == healthy ]] || proxy_answers; }

docker_start() {
    say "Starting the stack: ${COMPOSE[*]} up -d --build"
    "${COMPOSE[@]}" up -d --build
    wait_for 120 docker_slotgate_ready ||
        die "slotgate is not healthy after 120 s; see: ${COMPOSE[*]} logs cluster-init slotgate"
}

# The containers stop; the data stays in the ./data bind mounts.
docker_stop() { "${COMPOSE[@]}" down; }

docker_slotgate_status() {
    local health
    health=$(docker_slotgate_health) || true
    say "slotgate: ${health:-no container}, port $PROXY_PORT"
    [[ "$health" == healthy ]]
}

docker_running() {
    local ids
    ids=$("${COMPOSE[@]}" ps -q 2>/dev/null) || return 1
    [[ -n "$ids" ]] || return 1
    # shellcheck disable=SC2086 # one container id per word
    docker inspect -f '{{.State.Running}}' $ids 2>/dev/null | grep -qx true
}

# --- status ---------------------------------------------------------------------

row() { printf '%-7s %-6s %-5s %-8s %-6s %-8s %s\n' "$@"; }

# One row per node: state, role, keys, cluster_state, and slots (master) or master (replica).
# Returns 1 if any node is down or not in cluster_state ok.
print_nodes() {
    local n port role kind slots state keys ok=0
    row node port state role keys cluster slots/master
    for n in "${NODES[@]}"; do
        port=$(port_of "$n")
        if ! node_pings "$n"; then
            printf '%-7s %-6s %s\n' "node-$n" "$port" down; ok=1; continue
        elif ! node_is_ours "$n"; then
            printf '%-7s %-6s %s\n' "node-$n" "$port" "down; the port is taken by a Redis that is not node-$n of $DATA"
            ok=1; continue
        fi
        mapfile -t role < <(node_cli "$n" role | tr -d '\r')
        state=$(node_field "$n" cluster_state)
        keys=$(node_cli "$n" dbsize) || true
        [[ "$state" == ok ]] || ok=1
        if [[ "${role[0]:-}" == master ]]; then
            # In 'cluster nodes', fields 9+ of the line flagged "myself" are this node's slots.
            kind=master
            slots=$(node_cli "$n" cluster nodes | tr -d '\r' | while read -ra f; do
                [[ "${f[2]:-}" == *myself* ]] && echo "${f[*]:8}"; done) || true
        else
            # ROLE's 4th field, the link to the master: connect, connecting, handshake,
            # sync (loading the master's data) or connected.
            kind=replica slots="of ${role[1]:-?}:${role[2]:-?}"
            [[ "${role[3]:-}" == connected ]] || slots+=" (${role[3]:-?})"
        fi
        row "node-$n" "$port" up "$kind" "$keys" "$state" "${slots:--}"
    done
    return "$ok"
}

# --- backup and restore ---------------------------------------------------------

# PREFIX-YYYYMMDD-HHMMSS that does not exist yet (waits out a second already taken).
fresh_name() {
    local name
    while name="$1-$(date +%Y%m%d-%H%M%S)" && [[ -e "$name" ]]; do sleep 1; done
    echo "$name"
}
backup_prefix() { echo "$(dirname "$DATA")/$(basename "$DATA")-backup"; }

# Node N's count of AOF rewrites and RDB saves since it started ("REWRITES SAVES"), if no
# rewrite or save is running or waiting to run; fails otherwise.
save_counts() {
    local info
    info=$(node_cli "$1" info persistence) || return 1
    [[ "$(field_value aof_rewrite_in_progress <<<"$info")" == 0 &&
       "$(field_value aof_rewrite_scheduled <<<"$info")" == 0 &&
       "$(field_value rdb_bgsave_in_progress <<<"$info")" == 0 ]] || return 1
    echo "$(field_value aof_rewrites <<<"$info") $(field_value rdb_saves <<<"$info")"
}
fork_idle() { save_counts "$1" >/dev/null; }

# background_save N STATUS_FIELD COMMAND...: runs BGREWRITEAOF or BGSAVE on node N, waits for
# it, and checks STATUS_FIELD says it succeeded. One already running may have started before
# the latest writes: it is waited for, and ours run after it.
background_save() {
    local n=$1 status=$2 reply try
    shift 2
    for try in 1 2 3; do
        reply=$(node_cli "$n" "$@") || true
        wait_for "$SAVE_TIMEOUT" fork_idle "$n" || die "node-$n: $* still running after $SAVE_TIMEOUT s"
        case "$reply" in
            *started* | *scheduled*)
                [[ "$(node_field "$n" "$status" info persistence)" == ok ]] ||
                    die "node-$n: $* failed ($status is not ok); see its log"
                return 0
                ;;
            *"in progress"*) ;;
            *) die "node-$n: $* answered: ${reply:-nothing}" ;;
        esac
    done
    die "node-$n: $* kept meeting another save in progress (try $try)"
}

# Makes node N's files complete: a fresh AOF base (Redis 7 keeps the AOF as appendonlydir/
# with base, incr and manifest files, all copied) and a fresh dump.rdb.
flush_node() {
    if [[ "$(node_field "$1" aof_enabled info persistence)" == 1 ]]; then
        background_save "$1" aof_last_bgrewrite_status bgrewriteaof
    fi
    background_save "$1" rdb_last_bgsave_status bgsave schedule
}

# A hidden .NAME.partial beside TO, where a copy is made before it is renamed to TO, so that a
# copy cut short never looks like a complete one. Set as STAGED, which the EXIT trap removes.
stage_for() { STAGED="$(dirname "$1")/.$(basename "$1").partial"; rm -rf "$STAGED"; }

# The AOF files that the manifests in node folders NODE_DIR... name but that are not there, as
# "node-N/appendonlydir/appendonly.aof.manifest names FILE", one a line. Redis refuses to start
# from such a folder. History files (type h) are old ones it deletes in the background: they
# may be gone. (A temp-*.manifest is one Redis was writing; it reads only the renamed one.)
missing_aof_files() {
    local node manifest
    for node in "$@"; do
        while IFS= read -r -d '' manifest; do
            manifest_gaps "$manifest" "$(basename "$node")${manifest#"$node"}"
        done < <(find "$node" -mindepth 2 -maxdepth 2 -name '*.manifest' ! -name 'temp-*' -print0)
    done
}

# manifest_gaps MANIFEST NAME: "NAME names FILE" for each base or incr FILE it names that is
# missing. Its lines read "file NAME seq N type b|h|i".
manifest_gaps() {
    local dir file type i
    local -a words
    dir=$(dirname "$1")
    while read -ra words; do
        file="" type=""
        for ((i = 0; i + 1 < ${#words[@]}; i += 2)); do
            case "${words[i]}" in file) file=${words[i + 1]} ;; type) type=${words[i + 1]} ;; esac
        done
        file=${file#\"} file=${file%\"}
        if [[ -n "$file" && "$type" != h && ! -f "$dir/$file" ]]; then
            echo "$2 names $file"
        fi
    done <"$1"
    return 0
}

# Copies node N's folder to TO. A running node may finish an AOF rewrite or an RDB save meanwhile
# (automatic ones too), and the copy then holds a manifest naming files it lacks: so the copy
# counts only if no rewrite or save ran during it (same counts before and after, none in
# progress) and it has every file its manifest names; else it is made again, up to 3 times.
copy_node() {
    local n=$1 to=$2 from before after missing try
    from=$(node_dir "$n")
    [[ -d "$from" ]] || die "no $from: $DATA is not a data folder of this cluster"
    for try in 1 2 3; do
        rm -rf "$to"
        if ! node_up "$n"; then
            cp -a "$from" "$to" || die "copying $from failed"
            missing=$(missing_aof_files "$to")
            [[ -z "$missing" ]] ||
                die "node-$n is not running and its folder lacks AOF files (Redis would not start from it): ${missing//$'\n'/; }"
            return 0
        fi
        wait_for "$SAVE_TIMEOUT" fork_idle "$n" || die "node-$n: a rewrite or save still running after $SAVE_TIMEOUT s"
        if before=$(save_counts "$n") && cp -a "$from" "$to" && after=$(save_counts "$n") &&
            [[ "$after" == "$before" ]]; then
            missing=$(missing_aof_files "$to")
            [[ -n "$missing" ]] || return 0
            say "  node-$n: the copy lacks AOF files (${missing//$'\n'/; })"
        else
            say "  node-$n rewrote its AOF or saved its RDB during the copy"
        fi
        ((try == 3)) || say "  copying node-$n again ..."
    done
    die "node-$n: no complete copy of $from in 3 tries (it kept rewriting its AOF or saving its RDB);
try again, or stop the cluster ($0 stop) and back it up stopped"
}

# Each running node's files hold every write it acknowledged before the backup began. Nodes
# are flushed one after the other and writes may go on meanwhile: for one frozen moment
# across the cluster, stop it first (the guide's procedure), then back up.
cmd_backup() {
    [[ -d "$DATA" ]] || die "no data folder at $DATA (start the cluster first: $0 start)"
    local n dest entry name down=() others=()
    for n in "${NODES[@]}"; do
        if node_up "$n"; then
            say "node-$n: rewriting the AOF and saving the RDB ..."
            flush_node "$n"
        elif node_pings "$n"; then
            others+=("$(port_of "$n")")
        else
            down+=("node-$n")
        fi
    done
    ((${#down[@]} == 0)) || say "Not running (copied as their shutdown left them): ${down[*]}"
    ((${#others[@]} == 0)) ||
        say "Left alone: port(s) ${others[*]}, taken by a Redis that is not a node of $DATA (node folders copied as they are)"
    dest=$(fresh_name "$(backup_prefix)")
    stage_for "$dest"
    mkdir "$STAGED"
    # The data folder's other files (cluster-create.log, ...); not slotgate's pidfile and log,
    # which describe a process, not data.
    while IFS= read -r -d '' entry; do
        name=$(basename "$entry")
        [[ "$name" == node-[1-6] || "$name" == "$(basename "$PROXY_PIDFILE")" ||
           "$name" == "$(basename "$PROXY_LOG")" ]] || cp -a "$entry" "$STAGED/"
    done < <(find "$DATA" -mindepth 1 -maxdepth 1 -print0)
    for n in "${NODES[@]}"; do copy_node "$n" "$STAGED/node-$n"; done
    rm -f "$STAGED"/node-*/redis.pid
    mv "$STAGED" "$dest"
    STAGED=""
    say "Backup: $dest"
}

# The backup to restore: DIR as given (relative to the caller, or a name beside the data
# folder), or the newest <data>-backup-YYYYMMDD-HHMMSS.
find_backup() {
    local dir
    if [[ -n "${1:-}" ]]; then
        dir=$(absolute "$1")
        [[ -d "$dir" || "$1" == */* ]] || dir="$(dirname "$DATA")/$1"
        [[ -d "$dir" ]] || die "no backup folder $1"
    else
        local candidate
        for candidate in "$(backup_prefix)"-*; do
            # Names sort by time; skip anything else that shares the prefix.
            [[ -d "$candidate" && "${candidate##*-backup-}" =~ ^[0-9]{8}-[0-9]{6}$ ]] && dir=$candidate
        done
        [[ -n "${dir:-}" ]] || die "no backup found: no $(backup_prefix)-YYYYMMDD-HHMMSS (make one: $0 backup)"
    fi
    dir="$(cd "$dir" && pwd)"
    [[ "$dir" != "$DATA" ]] || die "$dir is the data folder itself, not a backup"
    local n
    for n in "${NODES[@]}"; do
        [[ -d "$dir/node-$n" ]] || die "$dir has no node-$n folder: not a backup of this cluster's data"
    done
    echo "$dir"
}

cmd_restore() {
    local from missing aside="" running=local_running
    from=$(find_backup "${1:-}")
    [[ "$MODE" == docker ]] && running=docker_running
    ! "$running" || die "the cluster is running; stop it first: $0 stop"
    say "Restoring $from ..."
    stage_for "$DATA"
    cp -a "$from" "$STAGED" || die "copying $from failed"
    rm -f "$STAGED/$(basename "$PROXY_PIDFILE")" "$STAGED/$(basename "$PROXY_LOG")" "$STAGED"/node-*/redis.pid
    missing=$(missing_aof_files "$STAGED"/node-*)
    [[ -z "$missing" ]] || die "$from is incomplete (Redis would not start from it): ${missing//$'\n'/; }"
    # Nothing is deleted: the current data goes aside.
    if [[ -e "$DATA" ]]; then
        aside=$(fresh_name "$DATA-before-restore")
        mv "$DATA" "$aside"
    fi
    mv "$STAGED" "$DATA"
    STAGED=""
    [[ -z "$aside" ]] || say "The data it replaces was moved to $aside (delete it once you no longer need it)."
    say "Restored $from to $DATA. Start the cluster from it: $0 start"
}

# --- commands -------------------------------------------------------------------

cmd_start() {
    if [[ "$MODE" == docker ]]; then docker_start; else local_start; fi
    say ""
    print_nodes || true
    say "slotgate: 127.0.0.1:$PROXY_PORT (try: redis-cli -p $PROXY_PORT set a 1)"
}

cmd_stop() { if [[ "$MODE" == docker ]]; then docker_stop; else local_stop; fi; }

cmd_status() {
    local ok=0
    if [[ "$MODE" == docker ]]; then
        "${COMPOSE[@]}" ps || ok=1
    else
        command -v redis-cli >/dev/null || die "redis-cli not found (run: $0 start)"
    fi
    print_nodes || ok=1
    if [[ "$MODE" == docker ]]; then docker_slotgate_status || ok=1; else local_slotgate_status || ok=1; fi
    return "$ok"
}

usage() {
    cat <<EOF
usage: $0 start|stop|status|restart|backup|restore [DIR] | help

  start    local: install redis if missing, build slotgate, start nodes on ports
           $(port_of 1)-$(port_of 6), create the cluster on first run, start slotgate on
           127.0.0.1:$PROXY_PORT. docker: docker compose up -d --build, wait for slotgate.
  stop     stop slotgate and the nodes (they persist their data to the data folder)
  status   nodes, roles, slots, keys, cluster_state, slotgate; exit 1 unless all is up
  restart  stop, then start
  backup   make every running node's AOF and RDB complete, then copy the data folder
           to $(basename "$(backup_prefix)")-YYYYMMDD-HHMMSS beside it; a node folder is copied
           again if its node rewrote its AOF or saved its RDB meanwhile, and the backup
           fails rather than keep a copy that lacks a file its AOF manifest names
  restore  bring back backup DIR (default: the newest) as the data folder; the cluster
           must be stopped; the current data folder is moved aside, not deleted
  help     this text (also -h, --help)

Locally, start and stop act only on the data folder's own processes (named by its pidfiles,
or nodes running in its node-N folders); another program on one of the ports is left alone
by stop, and start refuses to run beside it.

Environment:
  REDIS_CLUSTER_MODE       local (processes) or docker (docker compose); default docker
                           when a Docker engine answers and docker-compose.yml exists
  REDISCLI_AUTH            the nodes' password, if their configs set requirepass
Local mode only (defaults in brackets):
  REDIS_CLUSTER_PORT_BASE  node N on BASE+N, its cluster bus on BASE+N+10000 [7000]
  REDIS_CLUSTER_PROXY_PORT slotgate's port on 127.0.0.1 [6380]
  REDIS_CLUSTER_DATA       the data folder; backups go beside it [data/ at the repo top]
  REDIS_CLUSTER_PROXY_BIN  run this slotgate binary instead of building one with cargo
EOF
}

case "${1:-}" in
    help | -h | --help) usage; exit 0 ;;
    start | stop | status | restart | backup) (($# == 1)) || { usage >&2; exit 2; } ;;
    restore) (($# <= 2)) || { usage >&2; exit 2; } ;;
    *) usage >&2; exit 2 ;;
esac
choose_mode
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    backup) cmd_backup ;;
    restore) cmd_restore "${2:-}" ;;
esac
