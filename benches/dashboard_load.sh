#!/usr/bin/env bash
# Does an open dashboard cost the proxy anything? wrk against palisade
# (decision log off) with nobody watching, then with a dashboard poller
# asking the admin listener for /api/stats (what the page polls once a
# second) POLLS_PER_SECOND times a second; runs interleaved, REPEAT times,
# the median shown. See benches/README.md ("Dashboard").
#
# Environment (defaults):
#   DURATION=10s THREADS=2 CONNECTIONS=50 REPEAT=3 POLLS_PER_SECOND=4 WORKERS=2
#   UPSTREAM_PORT=18191 PALISADE_PORT=18193 ADMIN_PORT=18194 SKIP_BUILD=
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-50}
REPEAT=${REPEAT:-3}
POLLS_PER_SECOND=${POLLS_PER_SECOND:-4}
WORKERS=${WORKERS:-2}
UPSTREAM_PORT=${UPSTREAM_PORT:-18191}
PALISADE_PORT=${PALISADE_PORT:-18193}
ADMIN_PORT=${ADMIN_PORT:-18194}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

WORK=$(mktemp -d)
# shellcheck source=support/processes.sh
source benches/support/processes.sh

if ! command -v wrk >/dev/null; then
    echo "== installing wrk" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
fi
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --bin palisade --example bench_upstream >&2
fi
for port in "$UPSTREAM_PORT:UPSTREAM" "$PALISADE_PORT:PALISADE" "$ADMIN_PORT:ADMIN"; do
    need_port_free "${port%%:*}" "${port##*:}"
done

"$TARGET_DIR/release/examples/bench_upstream" "127.0.0.1:$UPSTREAM_PORT" 1 >"$WORK/upstream.log" 2>&1 &
STARTED+=($!)
cat >"$WORK/palisade.toml" <<TOML
[server]
listen = "127.0.0.1:$PALISADE_PORT"
admin = "127.0.0.1:$ADMIN_PORT"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
[decision_log]
path = "off"
TOML
TOKIO_WORKER_THREADS=$WORKERS PALISADE_LOG=warn "$TARGET_DIR/release/palisade" serve --config "$WORK/palisade.toml" \
    >"$WORK/palisade.log" 2>&1 &
PALISADE_PID=$!
STARTED+=("$PALISADE_PID")
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/healthz" && break
    sleep 0.1
done

# A browser's request (Firefox sends no client hints): allowed, forwarded.
HEADERS=(-H "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    -H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8" -H "Accept-Language: en-US")

poller() {
    local pause
    pause=$(awk "BEGIN { print 1 / $POLLS_PER_SECOND }")
    while true; do
        curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/api/stats" || true
        sleep "$pause"
    done
}

RUNS="$WORK/runs.tsv"
run() { # run <label>
    local out
    out="$WORK/wrk-$(echo "$1" | tr -c 'a-zA-Z0-9' '-')-$REP.txt"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${HEADERS[@]}" "http://127.0.0.1:$PALISADE_PORT/" >"$out"
    local rps p99
    rps=$(awk '/Requests\/sec/ { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    printf '%s\t%s\t%s\n' "$1" "$rps" "$p99" >>"$RUNS"
    echo "== $1 (run $REP): $rps requests/s, p99 $p99" >&2
}

for REP in $(seq "$REPEAT"); do
    run "nobody watching"
    poller &
    POLLER=$!
    STARTED+=("$POLLER")
    run "dashboard polling ${POLLS_PER_SECOND}/s"
    kill "$POLLER" 2>/dev/null || true
    wait "$POLLER" 2>/dev/null || true
done

echo
echo "| palisade ($WORKERS tokio workers), wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $REPEAT | requests/s | p99 |"
echo "|---|---:|---:|"
for label in "nobody watching" "dashboard polling ${POLLS_PER_SECOND}/s"; do
    grep -F "$label" "$RUNS" | sort -t$'\t' -k2 -n | awk -F'\t' -v n="$REPEAT" 'NR == int((n + 1) / 2) { printf "| %s | %s | %s |\n", $1, $2, $3 }'
done
