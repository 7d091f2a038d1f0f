#!/usr/bin/env bash
# Bounded load comparison on 127.0.0.1: palisade with the in-process store
# against palisade with its counters in a private redis-server, for two
# kinds of request:
#
#   api    GET /api/items on a route with a (never reached) per-client limit:
#          one counter operation per request
#   login  a successful login POST on a login route: the limit, the
#          credential counters (about 25 operations) and the login outcome
#          written after the upstream answers
#
# For the Redis runs it reads `INFO commandstats` before and after, and
# reports script calls (EVALSHA) and all commands (the script's own
# commands included) per request, and how many requests fell back to local
# counters. For every run it reads the CPU time palisade and redis-server
# used (/proc), per request: steadier than requests/s on a shared machine.
# Prints a markdown table of the median runs at the end, and writes every
# run's row to $RESULTS_DIR/redis-load-runs.tsv.
# Every process this script starts is killed on exit.
#
# Environment (defaults):
#   DURATION=10s THREADS=2 CONNECTIONS=50   wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency
#   REPEAT=1                                runs per row (the median run is shown)
#   WORKERS=2                               palisade's tokio worker threads
#   UPSTREAM_PORT=18281 PALISADE_PORT=18283 ADMIN_PORT=18284 REDIS_PORT=18285
#   SKIP_BUILD=1                            use the binaries already in target/release
#   BEFORE=/path/to/palisade                also run this (older) binary with Redis, as the
#                                           "redis-before" row, interleaved with the others in
#                                           every round, so a change is compared on one load
set -euo pipefail

DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-50}
REPEAT=${REPEAT:-1}
WORKERS=${WORKERS:-2}
UPSTREAM_PORT=${UPSTREAM_PORT:-18281}
PALISADE_PORT=${PALISADE_PORT:-18283}
ADMIN_PORT=${ADMIN_PORT:-18284}
REDIS_PORT=${REDIS_PORT:-18285}

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS_DIR=${RESULTS_DIR:-$TARGET_DIR/load-results}
mkdir -p "$RESULTS_DIR"
WORK=$(mktemp -d /tmp/palisade-redis-load.XXXXXX)
# shellcheck source=support/processes.sh
source "$ROOT/benches/support/processes.sh"
# shellcheck source=support/redis_requests.sh
source "$ROOT/benches/support/redis_requests.sh"

if [ -z "${SKIP_BUILD:-}" ]; then
    echo "== cargo build --release --examples --bins" >&2
    cargo build --release --examples --bins >&2
fi
for tool in wrk redis-server redis-cli; do
    if ! command -v "$tool" >/dev/null; then
        echo "== installing wrk and redis-server" >&2
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk redis-server >&2
        break
    fi
done
for pair in "$UPSTREAM_PORT UPSTREAM" "$PALISADE_PORT PALISADE" "$ADMIN_PORT ADMIN" "$REDIS_PORT REDIS"; do
    # shellcheck disable=SC2086
    need_port_free $pair
done

"$TARGET_DIR/release/examples/bench_upstream" "127.0.0.1:$UPSTREAM_PORT" 1 >"$WORK/upstream.log" 2>&1 &
STARTED+=($!)
wait_port "$UPSTREAM_PORT" "$WORK/upstream.log"

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
STARTED+=("$REDIS_PID")
wait_port "$REDIS_PORT" "$WORK/redis.log"

cat >"$WORK/palisade.toml" <<EOF
[decision_log]
path = "off"

[store]
hash_key = "load test"
# Generous, so the comparison measures the shared path: on a 2-core box
# running wrk, the upstream, palisade and Redis at once, round trips pass
# the 5 ms default under saturation and requests would fall back to local
# counters (counted in the last column).
timeout_ms = 50

[[route]]
name = "api"
profile = "api"
path = "/api/*"
rate_limit = { requests = 100000000, period_secs = 60 }

[[route]]
name = "login"
profile = "login"
path = "/login"
methods = ["POST"]
rate_limit = { requests = 100000000, period_secs = 60 }

# One client with 50 logins in flight (in-flight attempts count as failures
# until they end) and tens of thousands a second (a surge against the
# route's baseline) is escalated within a second with the defaults, and
# the rest of the run would measure bans answered from memory. The run is
# about the successful login's counters: every one is still read and
# written, only the thresholds are out of reach.
[route.login.abuse]
site_min_attempts = 4000000000
ip_failures = 1000000000
subnet_failures = 1000000000
fingerprint_failures = 1000000000
username_failures = 1000000000
EOF

write_login_script "$WORK"


PALISADE_PID=
start_palisade() {
    local log=$1 binary=$2
    shift 2
    TOKIO_WORKER_THREADS=$WORKERS PALISADE_LOG=warn "$binary" serve --config "$WORK/palisade.toml" \
        --listen "127.0.0.1:$PALISADE_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
        --upstream "http://127.0.0.1:$UPSTREAM_PORT" "$@" >"$WORK/$log.log" 2>&1 &
    PALISADE_PID=$!
    STARTED+=("$PALISADE_PID")
    wait_port "$PALISADE_PORT" "$WORK/$log.log"
}

stat_calls() { # <command> -> calls so far
    redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' |
        awk -F'[:=,]' -v name="cmdstat_$1" '$1 == name { print $3; found = 1 } END { if (!found) print 0 }'
}
all_calls() {
    redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_/ && $1 != "cmdstat_info" { sum += $3 } END { print sum + 0 }'
}

# CPU time (user + system, in clock ticks) a process has used so far: per
# request, it is what a change costs even when other work on the machine
# makes requests/s noisy.
TICKS=$(getconf CLK_TCK)
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

ROWS="$WORK/rows.tsv"
: >"$ROWS"
for rep in $(seq "$REPEAT"); do
    stores=(in-process redis)
    if [ -n "${BEFORE:-}" ]; then
        stores+=(redis-before)
    fi
    for store in "${stores[@]}"; do
        case $store in
            redis) start_palisade "palisade-redis" "$TARGET_DIR/release/palisade" --redis "redis://127.0.0.1:$REDIS_PORT" ;;
            redis-before) start_palisade "palisade-redis-before" "$BEFORE" --redis "redis://127.0.0.1:$REDIS_PORT" ;;
            *) start_palisade "palisade-local" "$TARGET_DIR/release/palisade" ;;
        esac
        last_fallbacks=0
        for kind in api login; do
            if [ "$kind" = api ]; then
                args=("${BROWSER[@]}" "http://127.0.0.1:$PALISADE_PORT/api/items")
            else
                args=("${BROWSER[@]}" -s "$WORK/login.lua" "http://127.0.0.1:$PALISADE_PORT/login")
            fi
            evalsha_before=$(stat_calls evalsha)
            all_before=$(all_calls)
            palisade_cpu_before=$(cpu_ticks "$PALISADE_PID")
            redis_cpu_before=$(cpu_ticks "$REDIS_PID")
            out="$RESULTS_DIR/redis-load-$kind-$store-$rep.txt"
            echo "== $kind, $store store (run $rep): wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency" >&2
            wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${args[@]}" >"$out"
            cat "$out" >&2
            # Let the background writer finish before reading the stats.
            sleep 0.5
            palisade_cpu=$(($(cpu_ticks "$PALISADE_PID") - palisade_cpu_before))
            redis_cpu=$(($(cpu_ticks "$REDIS_PID") - redis_cpu_before))
            evalsha=$(($(stat_calls evalsha) - evalsha_before))
            commands=$(($(all_calls) - all_before))
            fallbacks=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '$1 == "palisade_store_fallback_requests_total" { print $2; found = 1 } END { if (!found) print "-" }')
            if [ "$store" != in-process ]; then
                fallback_delta=$((fallbacks - ${last_fallbacks:-0}))
                last_fallbacks=$fallbacks
            else
                fallback_delta=-
            fi
            awk -v kind="$kind" -v store="$store" -v evalsha="$evalsha" -v commands="$commands" -v fallback="$fallback_delta" \
                -v pcpu="$palisade_cpu" -v rcpu="$redis_cpu" -v ticks="$TICKS" '
                /Requests\/sec/ { rps = $2 }
                $1 == "99%" { p99 = $2 }
                $1 == "50%" { p50 = $2 }
                /Non-2xx or 3xx/ { bad += $NF }
                /requests in/ { requests = $1 }
                END {
                    per = (store != "in-process" && requests > 0) ? sprintf("%.2f", evalsha / requests) : "-"
                    all = (store != "in-process" && requests > 0) ? sprintf("%.1f", commands / requests) : "-"
                    us = (requests > 0) ? 1e6 / ticks / requests : 0
                    rus = (store != "in-process") ? sprintf("%.1f", rcpu * us) : "-"
                    printf "%s\t%s\t%.0f\t%s\t%s\t%d\t%s\t%s\t%s\t%.1f\t%s\n", kind, store, rps, p50, p99, bad, per, all, fallback, pcpu * us, rus
                }' "$out" >>"$ROWS"
        done
        if [ "$store" != in-process ]; then
            curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | grep -E '^palisade_store_(redis_up|fallback_requests_total|redis_roundtrip_seconds_(count|sum))' >&2 || true
        fi
        stop_pid "$PALISADE_PID"
    done
done

{
    echo
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, palisade with $WORKERS tokio workers, $REPEAT run(s) per row (median by req/s)"
    echo
    echo "| request | store | req/s | vs in-process | p50 | p99 | non-2xx | script calls / request | Redis commands / request | fallbacks | palisade CPU µs / request | redis-server CPU µs / request |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    sort -t$'\t' -k1,1 -k2,2 -k3,3n "$ROWS" | awk -F'\t' -v reps="$REPEAT" '
        { key = $1 "\t" $2; n[key]++; row[key, n[key]] = $0; if (!(key in seen)) { seen[key] = 1; order[++count] = key } }
        END {
            for (i = 1; i <= count; i++) {
                key = order[i]; split(row[key, int((n[key] + 1) / 2)], f, "\t")
                if (f[2] == "in-process") base[f[1]] = f[3]
                ratio = (f[1] in base && base[f[1]] > 0) ? sprintf("%.2f", f[3] / base[f[1]]) : "-"
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3], ratio, f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11]
            }
        }'
} | tee "$RESULTS_DIR/redis-load-table.md"
# Every run, not only the medians: the CPU columns of all runs show how
# steady a difference is on a shared machine.
{
    printf 'request\tstore\treq/s\tp50\tp99\tnon-2xx\tscript calls / request\tRedis commands / request\tfallbacks\tpalisade CPU µs / request\tredis-server CPU µs / request\n'
    cat "$ROWS"
} >"$RESULTS_DIR/redis-load-runs.tsv"
echo "every run: $RESULTS_DIR/redis-load-runs.tsv" >&2
