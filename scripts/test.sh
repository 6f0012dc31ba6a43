#!/usr/bin/env bash
# Runs slotgate's whole test suite on a fresh machine: installs what is
# missing (redis-server and redis-tools, prometheus and docker-compose, the
# Python client packages, the Rust lint components, cargo-deny), checks
# formatting, lints and dependencies (deny.toml), then runs every unit,
# property and integration test. The integration tests start real
# redis-server clusters on free loopback ports and stop them by PID.
#
# Usage: ./scripts/test.sh [extra cargo test arguments]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

log() { printf '\n== %s\n' "$*"; }

install_python() {
    if ! python3 -c 'import redis, pytest, sys; sys.exit(int(redis.__version__.split(".")[0]) < 8)' 2>/dev/null; then
        log "installing the Python test packages"
        pip_install_requirements "$ROOT/tests/python/requirements.txt"
    fi
    python3 -c 'import redis; print("redis-py", redis.__version__)'
}

install_rust_tools() {
    need_cargo
    if command -v rustup >/dev/null; then
        cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
        cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
    fi
    if ! cargo deny --version >/dev/null 2>&1; then
        log "installing cargo-deny (built from crates.io, once: a few minutes)"
        cargo install --locked cargo-deny
    fi
}

start=$(date +%s)
install_redis
redis-server --version
install_python
install_test_tools
install_rust_tools

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

log "cargo deny check (deny.toml: licenses, banned and duplicate crates, sources, advisories)"
cargo deny --log-level error check bans licenses sources
# The RustSec advisory database lives on GitHub, which some build machines
# cannot reach: then say so instead of failing on the fetch.
if cargo deny --log-level error fetch db >/dev/null 2>&1; then
    cargo deny --log-level error check advisories
else
    echo "advisories: NOT CHECKED, the RustSec database (github.com/RustSec/advisory-db) cannot be fetched from here"
fi

log "cargo test"
cargo test --locked "$@"

log "all tests passed in $(( $(date +%s) - start )) s"
