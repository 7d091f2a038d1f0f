#!/usr/bin/env bash
# Two palisade builds side by side (1 worker each) in front of one bench
# upstream, wrk alternating between them for ROUNDS rounds: requests/s, p50
# and CPU µs/request of each run. Closer than load.sh for telling two
# builds apart on a busy machine, since both always see the same load; with
# CONNECTIONS=1 it shows the latency of one request alone. See
# benches/README.md ("Forwarding path, fourth pass").
#
#   benches/support/ab.sh <palisade A> <palisade B>
#
# Environment (defaults): ROUNDS=6 DURATION=3s CONNECTIONS=50 WORKLOAD=get
# (or mix: benches/support/login_mix.lua), UPSTREAM_PORT=19691
# A_PORT=19693 B_PORT=19695 (admin ports: each + 1).
# Needs target/release/examples/bench_upstream.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
A=$1
B=$2
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-50}
WORKLOAD=${WORKLOAD:-get}
UPSTREAM_PORT=${UPSTREAM_PORT:-19691}
A_PORT=${A_PORT:-19693}
B_PORT=${B_PORT:-19695}
WORK=$(mktemp -d /tmp/palisade-ab.XXXXXX)

# shellcheck source=processes.sh
source "$ROOT/benches/support/processes.sh"
for pair in "$UPSTREAM_PORT UPSTREAM" "$A_PORT A" "$((A_PORT + 1)) A_ADMIN" "$B_PORT B" "$((B_PORT + 1)) B_ADMIN"; do
    # shellcheck disable=SC2086
    need_port_free $pair
done

# shellcheck source=workload.sh
source "$ROOT/benches/support/workload.sh"
write_palisade_configs
workload_script "$WORKLOAD"

# CPU ticks (user + system) a process has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

"$TARGET_DIR/release/examples/bench_upstream" "127.0.0.1:$UPSTREAM_PORT" 1 >"$WORK/upstream.log" 2>&1 &
STARTED+=($!)
wait_ready "http://127.0.0.1:$UPSTREAM_PORT/" upstream
declare -A PIDS
for side in A B; do
    if [ "$side" = A ]; then binary=$A port=$A_PORT; else binary=$B port=$B_PORT; fi
    TOKIO_WORKER_THREADS=1 PALISADE_LOG=warn "$binary" serve --config "$WORK/palisade-$WORKLOAD.toml" \
        --upstream "http://127.0.0.1:$UPSTREAM_PORT" --listen "127.0.0.1:$port" \
        --admin "127.0.0.1:$((port + 1))" >"$WORK/$side.log" 2>&1 &
    PIDS[$side]=$!
    STARTED+=($!)
    wait_ready "http://127.0.0.1:$port/" palisade
done
threads=$((CONNECTIONS < 2 ? 1 : 2))
echo "ab.sh: $WORKLOAD, wrk -t$threads -c$CONNECTIONS -d$DURATION, A=$A B=$B, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    for side in A B; do
        if [ "$side" = A ]; then port=$A_PORT; else port=$B_PORT; fi
        pid=${PIDS[$side]}
        before=$(ticks "$pid")
        wrk -t"$threads" -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" "${HEADERS[@]}" \
            "http://127.0.0.1:$port/" >"$WORK/wrk.txt"
        after=$(ticks "$pid")
        awk -v side="$side" -v round="$round" -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '
            /requests in/ { n = $1 }
            /Requests\/sec/ { rps = $2 }
            $1 == "50%" { p50 = $2 }
            END { printf "%s round %d: %.0f requests/s, p50 %s, %.1f CPU µs/request\n", side, round, rps, p50, ticks / hz * 1e6 / n }
        ' "$WORK/wrk.txt"
    done
done
echo "ab.sh: load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
