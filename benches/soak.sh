#!/usr/bin/env bash
# Soak: palisade (release build, default configuration, decision log off,
# 127.0.0.1 trusted for X-Forwarded-For) in front of bench_upstream, under
# mixed traffic from examples/soak_load.rs for a bounded time — page loads
# and logins from a thousand stable addresses, and an address-rotating
# login flood (a new address and username every attempt, half of all
# requests). palisade's RSS and its store gauges are sampled every
# $SAMPLE seconds; the run ends with start/end/max RSS, and fails when the
# maximum RSS is over $MAX_RSS_MB. See benches/README.md.
#
# Every process this script starts is killed on exit.
#
# Environment (defaults):
#   DURATION=600 SAMPLE=10 TASKS=16 MAX_RSS_MB=256
#   UPSTREAM_PORT=18191 PALISADE_PORT=18193 ADMIN_PORT=18194
#   STORE_MB=                       [store] max_memory_mb (empty: the default)
#   RESULTS_DIR=target/soak-results  samples and the load generator's output
#   SKIP_BUILD=1                    use the binaries already in target/release
set -euo pipefail

DURATION=${DURATION:-600}
SAMPLE=${SAMPLE:-10}
TASKS=${TASKS:-16}
MAX_RSS_MB=${MAX_RSS_MB:-256}
UPSTREAM_PORT=${UPSTREAM_PORT:-18191}
PALISADE_PORT=${PALISADE_PORT:-18193}
ADMIN_PORT=${ADMIN_PORT:-18194}

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS_DIR=${RESULTS_DIR:-$TARGET_DIR/soak-results}
mkdir -p "$RESULTS_DIR"
WORK=$(mktemp -d /tmp/palisade-soak.XXXXXX)

# shellcheck source=support/processes.sh
source "$ROOT/benches/support/processes.sh"

for port in UPSTREAM PALISADE ADMIN; do
    var="${port}_PORT"
    need_port_free "${!var}" "$port"
done

if [ -z "${SKIP_BUILD:-}" ]; then
    echo "== cargo build --release --bin palisade --example bench_upstream --example soak_load" >&2
    cargo build --release --bin palisade --example bench_upstream --example soak_load >&2
fi

wait_ready() {
    local url=$1 name=$2 pid=$3
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)" = 200 ] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "soak.sh: $name exited; its log:" >&2
            cat "$WORK/$name.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "soak.sh: $name did not answer on $url" >&2
    exit 1
}

"$TARGET_DIR/release/examples/bench_upstream" "127.0.0.1:$UPSTREAM_PORT" 1 >"$WORK/upstream.log" 2>&1 &
STARTED+=("$!")
wait_ready "http://127.0.0.1:$UPSTREAM_PORT/" upstream "$!"

cat >"$WORK/palisade.toml" <<EOF
[server]
trusted_proxies = ["127.0.0.1/32"]
[decision_log]
path = "off"
[store]
hash_key = "soak"
${STORE_MB:+max_memory_mb = $STORE_MB}
EOF
PALISADE_LOG=warn "$TARGET_DIR/release/palisade" serve --config "$WORK/palisade.toml" \
    --listen "127.0.0.1:$PALISADE_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    --upstream "http://127.0.0.1:$UPSTREAM_PORT" >"$WORK/palisade.log" 2>&1 &
PALISADE_PID=$!
STARTED+=("$PALISADE_PID")
wait_ready "http://127.0.0.1:$ADMIN_PORT/healthz" palisade "$PALISADE_PID"

rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$PALISADE_PID/status"; }
gauge() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v name="$1" '$1 == name { print $2 }'; }

SAMPLES="$RESULTS_DIR/samples.tsv"
printf 't_s\trss_mb\tstore_keys\tstore_mb\tevicted\n' >"$SAMPLES"
sample() {
    local bytes
    bytes=$(gauge palisade_store_bytes)
    printf '%s\t%s\t%s\t%.1f\t%s\n' "$1" "$(rss_mb)" "$(gauge palisade_store_keys)" \
        "$(echo "${bytes:-0} / 1048576" | bc -l)" "$(gauge palisade_store_evicted_total)" | tee -a "$SAMPLES"
}

sample 0
"$TARGET_DIR/release/examples/soak_load" "http://127.0.0.1:$PALISADE_PORT" "$DURATION" "$TASKS" \
    >"$RESULTS_DIR/load.txt" 2>&1 &
LOAD_PID=$!
STARTED+=("$LOAD_PID")
elapsed=0
while kill -0 "$LOAD_PID" 2>/dev/null && [ "$elapsed" -lt $((DURATION + 30)) ]; do
    sleep "$SAMPLE"
    elapsed=$((elapsed + SAMPLE))
    kill -0 "$PALISADE_PID" 2>/dev/null || { echo "soak.sh: palisade died" >&2; exit 1; }
    sample "$elapsed"
done
wait "$LOAD_PID" || true
tail -1 "$RESULTS_DIR/load.txt"

awk -F'\t' -v limit="$MAX_RSS_MB" 'NR == 2 { start = $2 } NR > 1 { end = $2; if ($2 > max) max = $2 }
    END {
        printf "RSS start %.1f MB, end %.1f MB, max %.1f MB (limit %d MB)\n", start, end, max, limit
        exit (max > limit)
    }' "$SAMPLES"
