#!/usr/bin/env bash
# Instructions per forwarded request: palisade (1 worker) under callgrind
# with instrumentation off, a warm-up with wrk, then instrumentation on
# for a fixed wrk run; the total Ir divided by the requests wrk counted.
# User space only (palisade, hyper, tokio, the allocator); the count does
# not depend on how busy the machine is, unlike CPU time. See
# benches/README.md ("proxy under load").
#
#   benches/support/callgrind.sh [palisade binary] [get|mix]
#
# Environment (defaults): WARMUP=3s DURATION=10s CONNECTIONS=10
# UPSTREAM_PORT=19481 PALISADE_PORT=19483 ADMIN_PORT=19484 (not load.sh's,
# so both can run at once), KEEP_PROFILE= (a path: keep callgrind.out there).
# Needs target/release/examples/bench_upstream.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BINARY=${1:-$TARGET_DIR/release/palisade}
WORKLOAD=${2:-get}
WARMUP=${WARMUP:-3s}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-10}
UPSTREAM_PORT=${UPSTREAM_PORT:-19481}
PALISADE_PORT=${PALISADE_PORT:-19483}
ADMIN_PORT=${ADMIN_PORT:-19484}
WORK=$(mktemp -d /tmp/palisade-callgrind.XXXXXX)

# shellcheck source=processes.sh
source "$ROOT/benches/support/processes.sh"
for pair in "$UPSTREAM_PORT UPSTREAM" "$PALISADE_PORT PALISADE" "$ADMIN_PORT ADMIN"; do
    # shellcheck disable=SC2086
    need_port_free $pair
done

# shellcheck source=workload.sh
source "$ROOT/benches/support/workload.sh"
write_palisade_configs
workload_script "$WORKLOAD"

"$TARGET_DIR/release/examples/bench_upstream" "127.0.0.1:$UPSTREAM_PORT" 1 >"$WORK/upstream.log" 2>&1 &
STARTED+=($!)
wait_ready "http://127.0.0.1:$UPSTREAM_PORT/" upstream
TOKIO_WORKER_THREADS=1 PALISADE_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$WORK/callgrind.out" "$BINARY" serve --config "$WORK/palisade-$WORKLOAD.toml" \
    --upstream "http://127.0.0.1:$UPSTREAM_PORT" --listen "127.0.0.1:$PALISADE_PORT" \
    --admin "127.0.0.1:$ADMIN_PORT" >"$WORK/palisade.log" 2>&1 &
PALISADE_PID=$!
STARTED+=("$PALISADE_PID")
wait_ready "http://127.0.0.1:$PALISADE_PORT/" palisade
URL="http://127.0.0.1:$PALISADE_PORT/"
wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "${script[@]}" "${HEADERS[@]}" "$URL" >/dev/null
callgrind_control -i on "$PALISADE_PID" >/dev/null
wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "${script[@]}" "${HEADERS[@]}" "$URL" >"$WORK/wrk.txt"
callgrind_control -i off "$PALISADE_PID" >/dev/null
stop_pid "$PALISADE_PID"
requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
instructions=$(awk '/^totals:/ {print $2}' "$WORK/callgrind.out")
[ -z "${KEEP_PROFILE:-}" ] || cp "$WORK/callgrind.out" "$KEEP_PROFILE"
awk -v ir="$instructions" -v n="$requests" -v w="$WORKLOAD" -v b="$BINARY" \
    'BEGIN { printf "%s %s: %d requests, %.1fk instructions per request\n", b, w, n, ir / n / 1000 }'
