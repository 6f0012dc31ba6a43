#!/usr/bin/env bash
# Instructions per request of slotgate's request path, in-process (benches/request_path.rs:
# parse, route, node write buffer, reply scan, reorder, client output), counted by callgrind.
# Times on this shared 2-core machine move by 10% from run to run; instruction counts move
# by a few instructions, so a change that costs 2% shows.
#
#   scripts/callgrind-path.sh [GROUP...]     GROUP: get, set, mget (default: all three)
#
# Builds the bench (cargo bench --bench request_path --no-run), installs Debian's valgrind if
# missing, then runs each group twice under valgrind --tool=callgrind without criterion
# (REQUEST_PATH_GROUP, REQUEST_PATH_ITERATIONS): N1 and N2 batches of 16 requests. The
# difference of the two totals over the difference in requests is the cost of one request,
# without the program's start, the set-up and the first batch's warm-up. Prints a table.
#
# Environment: CALLGRIND_N1 (200), CALLGRIND_N2 (1200), CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

N1="${CALLGRIND_N1:-200}"
N2="${CALLGRIND_N2:-1200}"
((N2 > N1)) || die "CALLGRIND_N2 ($N2) must be larger than CALLGRIND_N1 ($N1)"
(($# > 0)) || set -- get set mget
for group in "$@"; do
    [[ "$group" =~ ^(get|set|mget)$ ]] || die "unknown group $group (get, set or mget)"
done

need_cargo
if ! command -v valgrind >/dev/null; then
    command -v apt-get >/dev/null || die "valgrind not found; install it (Debian/Ubuntu: apt-get install valgrind)"
    say "Installing valgrind ..."
    apt_install valgrind
fi

say "Building the bench: cargo bench --bench request_path --no-run"
BENCH_BIN="$(cargo bench --bench request_path --no-run --message-format=json |
    sed -n 's/.*"executable":"\([^"]*request_path[^"]*\)".*/\1/p' | tail -n 1)"
[[ -x "$BENCH_BIN" ]] || die "the request_path bench binary was not found after the build"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Instructions and requests of one run: "IR REQUESTS".
count() {
    local group=$1 batches=$2 out="$WORK/$1.$2"
    REQUEST_PATH_GROUP="$group" REQUEST_PATH_ITERATIONS="$batches" \
        valgrind --tool=callgrind --callgrind-out-file="$out.cg" "$BENCH_BIN" 2>"$out.log" ||
        die "$group under callgrind failed: $(grep -v '^==' "$out.log" | tail -n 5)"
    local ir requests
    ir="$(sed -n 's/^summary: *//p' "$out.cg")"
    requests="$(sed -n 's/^requests: *//p' "$out.log")"
    [[ -n "$ir" && -n "$requests" ]] || die "no instruction count for $group ($out.log)"
    printf '%s %s\n' "$ir" "$requests"
}

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
say ""
say "Instructions per request (callgrind Ir, batches $N2 - $N1, commit $commit):"
say ""
say "| group | Ir per request |"
say "|---|---:|"
for group in "$@"; do
    # Two steps, so that a failed run stops the script (set -e).
    first="$(count "$group" "$N1")"
    second="$(count "$group" "$N2")"
    read -r ir1 req1 <<<"$first"
    read -r ir2 req2 <<<"$second"
    case "$group" in
        get) name="GET x16" ;;
        set) name="SET x16" ;;
        mget) name="MGET 10 keys x16" ;;
    esac
    awk -v g="$name" -v i1="$ir1" -v i2="$ir2" -v r1="$req1" -v r2="$req2" \
        'BEGIN { printf "| %s | %.0f |\n", g, (i2 - i1) / (r2 - r1) }'
done
