# Shared helpers of the repo's scripts (redis-cluster.sh, bench.sh, test.sh).
# Source it after setting ROOT; it defines functions only.
# shellcheck shell=bash

say() { printf '%s\n' "$*"; }
die() { printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# --- installing what is missing ---------------------------------------------------------------

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $*"
    fi
}

# apt-get install, refreshing the package lists once if the first try fails.
apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" ||
        { as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"; } ||
        die "apt-get could not install $*"
}

# redis-server, redis-cli and redis-benchmark (Debian's redis-server and redis-tools).
# The package may start the distro's own service on 6379: it is left alone and never used.
install_redis() {
    local tool
    for tool in redis-server redis-cli redis-benchmark; do
        command -v "$tool" >/dev/null && continue
        command -v apt-get >/dev/null || die "$tool not found; install Redis 7 (server and tools)"
        say "Installing redis-server and redis-tools ..."
        apt_install redis-server redis-tools
        return
    done
}

# pip install -r FILE for python3, installing python3 and pip first when they are missing.
# Debian's python3 refuses installs into its own environment (PEP 668) unless given
# --break-system-packages, so that is the second try; pip's error shows only if both fail.
pip_install_requirements() {
    local file=$1
    command -v python3 >/dev/null || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    say "Installing the Python packages of ${file#"$ROOT"/} ..."
    python3 -m pip install --quiet --disable-pip-version-check -r "$file" 2>/dev/null ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages -r "$file" ||
        die "pip could not install the packages listed in $file (see pip's error above)"
}

# Debian's prometheus (the metrics test scrapes a real slotgate with it) and docker-compose
# (the deploy test validates docker-compose.yml with it; no Docker engine is needed for that).
install_test_tools() {
    local missing=()
    command -v prometheus >/dev/null || missing+=(prometheus)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "${missing[*]} not found; install them (Debian/Ubuntu: apt-get install ${missing[*]})"
    say "Installing ${missing[*]} ..."
    apt_install --no-install-recommends "${missing[@]}"
}

# Rust's cargo, from rustup's default location when a fresh shell lacks it on PATH.
need_cargo() {
    [[ -x "${HOME:-}/.cargo/bin/cargo" ]] && PATH="$HOME/.cargo/bin:$PATH"
    command -v cargo >/dev/null || die "cargo not found. Install Rust with rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
then open a new shell (or: source \"\$HOME/.cargo/env\") and rerun $0."
}

# The release build of slotgate; sets PROXY_BIN.
build_slotgate() {
    need_cargo
    local -a locked=()
    [[ -f "$ROOT/Cargo.lock" ]] && locked=(--locked)
    say "Building slotgate: cargo build --release ${locked[*]}"
    (cd "$ROOT" && cargo build --release "${locked[@]}")
    PROXY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/slotgate"
    [[ -x "$PROXY_BIN" ]] || die "$PROXY_BIN not found after the build"
}

# --- talking to nodes -------------------------------------------------------------------------

# redis-cli with a hard timeout, so a wedged or foreign listener cannot hang the script.
# Set REDISCLI_AUTH when the node configs enable requirepass.
rcli() { local port=$1; shift; timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null; }
pings() { [[ "$(rcli "$1" ping)" == PONG ]]; }
# Some program (Redis or not) accepts connections on 127.0.0.1:PORT.
# shellcheck disable=SC2016 # $0 is expanded by the inner bash, which gets PORT as $0
port_open() { timeout 2 bash -c ': <>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null; }

# The value of the "FIELD:value" lines on stdin (an INFO or CLUSTER INFO reply); empty if none.
field_value() {
    local key val
    while IFS=: read -r key val; do
        [[ "$key" != "$1" ]] || printf '%s\n' "${val%$'\r'}"
    done
    return 0
}

# One "field:value" line of a node's reply: info_field PORT FIELD [COMMAND...] (CLUSTER INFO
# by default). Empty when the node does not answer.
info_field() {
    local port=$1 field=$2
    shift 2
    (($# > 0)) || set -- cluster info
    field_value "$field" < <(rcli "$port" "$@")
}

# --- processes --------------------------------------------------------------------------------

# A PID counts as alive unless it is gone or a zombie: exited but not yet reaped, which a
# daemonized redis-server can stay for seconds when PID 1 reaps lazily (as in containers).
# Explicit return values: a bare 'return' in a function called from a trap returns the
# status from before the trap.
pid_alive() {
    local key val
    kill -0 "$1" 2>/dev/null || return 1
    [[ -r "/proc/$1/status" ]] || return 0
    while IFS=$':\t ' read -r key val _; do
        if [[ "$key" == State ]]; then
            [[ "$val" != Z ]] && return 0
            return 1
        fi
    done <"/proc/$1/status"
    return 0
}
pid_gone() { ! pid_alive "$1"; }

# Poll the command "$2 ..." every 0.1 s until it succeeds, for $1 seconds (to the second) of
# the clock, not of polls: a slow command, such as a redis-cli that times out, counts too.
wait_for() {
    local end=$((SECONDS + $1 + 1))
    shift
    until "$@"; do
        ((SECONDS < end)) || return 1
        sleep 0.1
    done
}
