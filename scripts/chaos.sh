#!/usr/bin/env bash
# The fault scenarios of tests/faults.rs, run longer and under redis-benchmark
# load, with a table of what the clients saw. Not part of the test suite.
#
# Each scenario starts its own cluster (real redis-server processes on free
# loopback ports, cluster-node-timeout 3000) with slotgate in front, runs 4
# INCR writers and a GET reader through slotgate plus redis-benchmark (SET/GET,
# 20 clients, pipeline 8), applies its fault, and prints a row:
#   requests                  the writers' and reader's requests (not redis-benchmark's)
#   client-visible errors     errors they got, wrong values included
#   longest gap               longest time with no successful INCR anywhere
#                             (the writers are synchronous: one waiting on a
#                             failed master's slot holds its turn)
#   writes back after ...     first successful write to the affected slots after the
#                             cluster itself reported cluster_state:ok with a master
#   acknowledged writes missing   acked INCRs not in the counters afterwards
#   INCR over-counts          counter values above the INCRs sent: double execution
# The test's own assertions still apply: a scenario that breaks them fails.
#
# Usage: ./scripts/chaos.sh [SECONDS] [FILTER]
#   SECONDS  traffic before and after each fault (default 10)
#   FILTER   run only the scenarios whose test name contains it (e.g. killed)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

seconds="${1:-10}"
filter="${2:-}"
[[ "$seconds" =~ ^[0-9]+$ ]] || die "SECONDS must be a whole number, not '$seconds'"
install_redis
need_cargo

log="$(mktemp -t slotgate-chaos.XXXXXX)"
trap 'rm -f "$log"' EXIT
say "Running the fault scenarios with ${seconds} s of traffic around each (log: $log) ..."
status=0
SLOTGATE_CHAOS_SECS="$seconds" SLOTGATE_CHAOS_BENCH=1 SLOTGATE_TEST_NODE_TIMEOUT_MS=3000 \
    cargo test --locked --release --test faults -- --nocapture --test-threads 1 ${filter:+"$filter"} >"$log" 2>&1 || status=$?

say ""
say "slotgate $(git describe --always --dirty 2>/dev/null || echo '?'), $(redis-server --version | cut -d' ' -f3), cluster-node-timeout 3000 ms, $(nproc) CPUs"
say ""
grep -m1 '^| scenario' "$log" || true
grep -m1 '^|---' "$log" || true
grep '^| ' "$log" | grep -v '^| scenario' || true
say ""
grep -E '^test result' "$log" || true
if [[ $status -ne 0 ]]; then
    say ""
    grep -E -A2 'panicked' "$log" | cut -c1-600 | head -30 || true
    trap - EXIT
    die "a scenario failed (full log: $log)"
fi
trap - EXIT
rm -f "$log"
