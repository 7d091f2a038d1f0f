#!/usr/bin/env bash
# Instructions per request, palisade and redis-server, in Redis mode: both
# run under `valgrind --tool=callgrind` while wrk sends logins (or `api`
# requests) through palisade on 127.0.0.1. Instruction counts do not move
# with what else runs on the machine, unlike requests/s or CPU time, so
# two builds compare on a busy machine too. Slow (valgrind): a few hundred
# to a few thousand requests per run are enough.
#
#   benches/redis_instructions.sh path/to/palisade [path/to/other/palisade ...]
#
# For each binary in turn (ROUNDS times): start the bench upstream, a
# redis-server and palisade (the configuration of benches/redis_load.sh,
# with a timeout valgrind can meet), warm up, zero both counters, run wrk
# for DURATION, and print requests, palisade's and redis-server's
# instructions per request. redis-server's share includes the background
# writer's merged outcome writes, which merge more or less well with the
# request rate: compare it over several rounds.
#
# Environment (defaults):
#   KIND=login          login | api
#   DURATION=10s ROUNDS=1 CONNECTIONS=8
#   BASE_PORT=19581     upstream; palisade, admin and Redis use the next ports
set -euo pipefail

KIND=${KIND:-login}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-1}
CONNECTIONS=${CONNECTIONS:-8}
BASE_PORT=${BASE_PORT:-19581}
UPSTREAM_PORT=$BASE_PORT
PALISADE_PORT=$((BASE_PORT + 2))
ADMIN_PORT=$((BASE_PORT + 3))
REDIS_PORT=$((BASE_PORT + 4))

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/palisade-redis-instructions.XXXXXX)
# shellcheck source=support/processes.sh
source "$ROOT/benches/support/processes.sh"
# shellcheck source=support/redis_requests.sh
source "$ROOT/benches/support/redis_requests.sh"
if [ "$#" -eq 0 ]; then
    echo "usage: benches/redis_instructions.sh PALISADE [PALISADE ...]" >&2
    exit 2
fi
for pair in "$UPSTREAM_PORT UPSTREAM" "$PALISADE_PORT PALISADE" "$ADMIN_PORT ADMIN" "$REDIS_PORT REDIS"; do
    # shellcheck disable=SC2086
    need_port_free $pair
done
# Under valgrind a process takes long to start listening.
WAIT_PORT_SECONDS=60
for tool in valgrind callgrind_annotate callgrind_control wrk redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "redis_instructions.sh: needs $tool" >&2; exit 1; }
done

# Instructions in callgrind dumps (summed over the files given).
instructions() {
    for file in "$@"; do
        callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
    done | awk '{ sum += $1 } END { print sum + 0 }'
}


run() { # <palisade binary>
    local binary=$1 work
    work=$(mktemp -d "$WORK/run.XXXXXX")
    STARTED=()
    "$TARGET_DIR/release/examples/bench_upstream" "127.0.0.1:$UPSTREAM_PORT" 1 >"$work/upstream.log" 2>&1 &
    STARTED+=($!)
    valgrind --tool=callgrind --callgrind-out-file="$work/redis.cg" redis-server --port "$REDIS_PORT" \
        --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
    local redis=$!
    STARTED+=("$redis")
    wait_port "$REDIS_PORT" "$work/redis.log"
    # The load bench's configuration; valgrind makes round trips slow.
    sed -n '/^cat >"\$WORK\/palisade.toml" <<EOF/,/^EOF/p' "$ROOT/benches/redis_load.sh" | sed '1d;$d' |
        sed 's/^timeout_ms = .*/timeout_ms = 2000/' >"$work/palisade.toml"
    write_login_script "$work"
    TOKIO_WORKER_THREADS=2 PALISADE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/palisade.cg" \
        "$binary" serve --config "$work/palisade.toml" --listen "127.0.0.1:$PALISADE_PORT" \
        --admin "127.0.0.1:$ADMIN_PORT" --upstream "http://127.0.0.1:$UPSTREAM_PORT" \
        --redis "redis://127.0.0.1:$REDIS_PORT" >"$work/palisade.log" 2>&1 &
    local palisade=$!
    STARTED+=("$palisade")
    wait_port "$PALISADE_PORT" "$work/palisade.log"
    local args
    if [ "$KIND" = login ]; then
        args=("${BROWSER[@]}" -s "$work/login.lua" "http://127.0.0.1:$PALISADE_PORT/login")
    else
        args=("${BROWSER[@]}" "http://127.0.0.1:$PALISADE_PORT/api/items")
    fi
    wrk -t1 -c"$CONNECTIONS" -d4s "${args[@]}" >/dev/null
    sleep 1
    callgrind_control -z "$palisade" >/dev/null
    callgrind_control -z "$redis" >/dev/null
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "${args[@]}" >"$work/wrk.txt"
    # The writer's last merged writes land.
    sleep 1
    callgrind_control -d "$palisade" >/dev/null
    callgrind_control -d "$redis" >/dev/null
    sleep 1
    local requests bad palisade_ir redis_ir
    requests=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
    bad=$(awk '/Non-2xx or 3xx/ { print $NF; found = 1 } END { if (!found) print 0 }' "$work/wrk.txt")
    palisade_ir=$(instructions "$work"/palisade.cg.*)
    redis_ir=$(instructions "$work"/redis.cg.*)
    printf '| %s | %s | %s | %s | %d | %d |\n' "$binary" "$KIND" "$requests" "$bad" \
        $((palisade_ir / requests)) $((redis_ir / requests))
    for pid in "${STARTED[@]}"; do
        stop_pid "$pid"
    done
    rm -rf "$work"
}

echo "| binary | request | requests | non-2xx | palisade instructions / request | redis-server instructions / request |"
echo "|---|---|---:|---:|---:|---:|"
for _ in $(seq "$ROUNDS"); do
    for binary in "$@"; do
        run "$binary"
    done
done
