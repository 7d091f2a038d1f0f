#!/usr/bin/env bash
# Bounded load comparison on 127.0.0.1: wrk against the bench upstream
# directly, through nginx (plain proxy_pass) and through palisade (decision
# log off), then a markdown table. See benches/README.md.
#
# Every process this script starts is killed on exit.
#
# Pinning is all or nothing. By default nothing is pinned (not wrk, not the
# upstream, not the proxies): every process shares both cores through the
# scheduler the same way. With PIN=1 every process is pinned with taskset:
# wrk to CPU $WRK_CPU, and the upstream and the process under test (direct:
# the upstream alone) together to CPU $SERVER_CPU, so each proxy gets the
# same one-core budget. Parallelism is set by worker count: each entry of
# WORKERS runs nginx with `worker_processes N` and palisade with N tokio
# worker threads (TOKIO_WORKER_THREADS=N), one process each.
#
# Environment (defaults):
#   DURATION=10s THREADS=2 CONNECTIONS=50      wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency
#   WORKERS="1 2"                              nginx worker_processes / palisade tokio workers, per row pair
#   REPEAT=1                                   runs per target (interleaved); the median run is shown
#   UPSTREAM_THREADS=1                         bench_upstream runtime threads (1 = current-thread)
#   TARGET_PATH=/                              path requested (default route: UA rules only, no rate limit)
#   USER_AGENT="Mozilla/5.0 (X11; ...) Chrome/156..." PLAIN_UA=   (PLAIN_UA=1: no headers but the User-Agent)
#   UPSTREAM_PORT=18181 NGINX_PORT=18182 PALISADE_PORT=18183 ADMIN_PORT=18184
#   PIN=0 WRK_CPU=1 SERVER_CPU=0               PIN=1: taskset wrk / upstream + proxy as above
#   RESULTS_DIR=target/load-results            raw wrk output and the table are kept here
#   SKIP_BUILD=1                               use the binaries already in target/release
set -euo pipefail

DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-50}
WORKERS=${WORKERS:-"1 2"}
REPEAT=${REPEAT:-1}
UPSTREAM_THREADS=${UPSTREAM_THREADS:-1}
TARGET_PATH=${TARGET_PATH:-/}
USER_AGENT=${USER_AGENT:-"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"}
# The request headers: by default those of Chromium 156 loading a page
# (replay/captures/chromium-156-human-login.jsonl, first line), so palisade
# judges the request a clean browser's ("allow") and both proxies handle a
# realistic header block. PLAIN_UA=1 sends the User-Agent alone (a bare
# Chrome user agent without client hints is only "log"ged by palisade, and
# still forwarded).
HEADERS=(-H "User-Agent: $USER_AGENT")
if [ -z "${PLAIN_UA:-}" ]; then
    HEADERS+=(
        -H 'sec-ch-ua: "Not:A-Brand";v="8", "Chromium";v="156"'
        -H 'sec-ch-ua-mobile: ?0'
        -H 'sec-ch-ua-platform: "Linux"'
        -H 'Upgrade-Insecure-Requests: 1'
        -H 'Accept-Language: en-US'
        -H 'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8'
        -H 'Sec-Fetch-Site: none'
        -H 'Sec-Fetch-Mode: navigate'
        -H 'Sec-Fetch-User: ?1'
        -H 'Sec-Fetch-Dest: document'
        -H 'Accept-Encoding: gzip, deflate, br, zstd'
    )
fi
UPSTREAM_PORT=${UPSTREAM_PORT:-18181}
NGINX_PORT=${NGINX_PORT:-18182}
PALISADE_PORT=${PALISADE_PORT:-18183}
ADMIN_PORT=${ADMIN_PORT:-18184}
PIN=${PIN:-0}
WRK_CPU=${WRK_CPU:-1}
SERVER_CPU=${SERVER_CPU:-0}
if [ "$PIN" = 1 ]; then
    ON_WRK_CPU=(taskset -c "$WRK_CPU")
    ON_SERVER_CPU=(taskset -c "$SERVER_CPU")
    PINNING="pinned with taskset: wrk on CPU $WRK_CPU, upstream and proxy on CPU $SERVER_CPU"
else
    ON_WRK_CPU=()
    ON_SERVER_CPU=()
    PINNING="no taskset pinning"
fi

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS_DIR=${RESULTS_DIR:-$TARGET_DIR/load-results}
mkdir -p "$RESULTS_DIR"
WORK=$(mktemp -d /tmp/palisade-load.XXXXXX)
chmod 755 "$WORK" # nginx workers drop privileges and must reach their temp dirs

# shellcheck source=support/processes.sh
source "$ROOT/benches/support/processes.sh"

# Wait until the URL answers 200 (with the browser user agent), 10 s at most.
wait_ready() {
    local url=$1 name=$2 pid=$3 code
    for _ in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "${HEADERS[@]}" "$url" || true)
        [ "$code" = 200 ] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "load.sh: $name exited; its log:" >&2
            cat "$WORK/$name.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "load.sh: $name did not answer 200 at $url (last status $code)" >&2
    exit 1
}

# CPU seconds (user + system) used so far by a process and its children.
cpu_ticks() {
    local total=0 pid fields
    for pid in "$@" $(for p in "$@"; do pgrep -P "$p" || true; done); do
        fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + $(echo "$fields" | awk '{print $12 + $13}')))
    done
    echo "$total"
}

LABELS=() # row labels, in order
RUNS="$WORK/runs.tsv" # one line per wrk run: label, rps, p50, p99, errors, CPU %, CPU µs/request, upstream CPU %
: >"$RUNS"

# run_wrk <label> <url> <pid of the process under test>
run_wrk() {
    local label=$1 url=$2 pid=$3 out before after up_before up_after seconds
    [[ " ${LABELS[*]} " == *" $label "* ]] || LABELS+=("$label")
    out="$RESULTS_DIR/wrk-$(echo "$label" | tr -c 'a-zA-Z0-9' '-' | sed 's/-*$//')-$REP.txt"
    echo "== $label (run $REP): wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency ${HEADERS[*]} $url" >&2
    before=$(cpu_ticks "$pid")
    up_before=$(cpu_ticks "$UPSTREAM_PID")
    "${ON_WRK_CPU[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${HEADERS[@]}" "$url" >"$out"
    after=$(cpu_ticks "$pid")
    up_after=$(cpu_ticks "$UPSTREAM_PID")
    cat "$out" >&2
    seconds=$(awk '/requests in/ {for (i = 1; i <= NF; i++) if ($i == "in") {sub(/s,?$/, "", $(i + 1)); print $(i + 1)}}' "$out")
    awk -v label="$label" -v cpu=$((after - before)) -v upcpu=$((up_after - up_before)) \
        -v hz="$(getconf CLK_TCK)" -v secs="$seconds" -v same="$([ "$pid" = "$UPSTREAM_PID" ] && echo 1 || echo 0)" '
        /Requests\/sec/ { rps = $2 }
        $1 == "50%" { p50 = $2 }
        $1 == "99%" { p99 = $2 }
        /Non-2xx or 3xx/ { bad += $NF }
        /Socket errors/ { gsub(/,/, ""); bad += $4 + $6 + $8 + $10 }
        /requests in/ { requests = $1 }
        END {
            cpu_pct = secs > 0 ? sprintf("%.0f%%", 100 * cpu / hz / secs) : "?"
            cpu_per_request = requests > 0 ? sprintf("%.1f", 1e6 * cpu / hz / requests) : "?"
            up_pct = secs > 0 ? sprintf("%.0f%%", 100 * upcpu / hz / secs) : "?"
            if (same) up_pct = "(same)"
            printf "%s\t%.0f\t%s\t%s\t%d\t%s\t%s\t%s\n", label, rps, p50, p99, bad, cpu_pct, cpu_per_request, up_pct
        }' "$out" >>"$RUNS"
}

if [ -z "${SKIP_BUILD:-}" ]; then
    echo "== cargo build --release --examples --bins" >&2
    cargo build --release --examples --bins >&2
fi
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    echo "== installing wrk and nginx" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >&2
fi
for pair in "$UPSTREAM_PORT UPSTREAM" "$NGINX_PORT NGINX" "$PALISADE_PORT PALISADE" "$ADMIN_PORT ADMIN"; do
    # shellcheck disable=SC2086
    need_port_free $pair
done

# The upstream.
"${ON_SERVER_CPU[@]}" "$TARGET_DIR/release/examples/bench_upstream" "127.0.0.1:$UPSTREAM_PORT" "$UPSTREAM_THREADS" >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!
STARTED+=("$UPSTREAM_PID")
wait_ready "http://127.0.0.1:$UPSTREAM_PORT$TARGET_PATH" upstream "$UPSTREAM_PID"

# palisade's configuration: the defaults, decision log off.
cat >"$WORK/palisade.toml" <<EOF
[decision_log]
path = "off"
EOF

start_nginx() {
    local workers=$1 dir="$WORK/nginx-$1"
    mkdir -p "$dir/logs" "$dir/tmp"
    chmod -R 755 "$dir"
    cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    upstream bench_upstream {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    "${ON_SERVER_CPU[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
    NGINX_PID=$!
    STARTED+=("$NGINX_PID")
    wait_ready "http://127.0.0.1:$NGINX_PORT$TARGET_PATH" nginx "$NGINX_PID"
}

start_palisade() {
    local workers=$1
    TOKIO_WORKER_THREADS=$workers PALISADE_LOG=warn "${ON_SERVER_CPU[@]}" "$TARGET_DIR/release/palisade" serve \
        --config "$WORK/palisade.toml" \
        --upstream "http://127.0.0.1:$UPSTREAM_PORT" \
        --listen "127.0.0.1:$PALISADE_PORT" \
        --admin "127.0.0.1:$ADMIN_PORT" >"$WORK/palisade.log" 2>&1 &
    PALISADE_PID=$!
    STARTED+=("$PALISADE_PID")
    wait_ready "http://127.0.0.1:$PALISADE_PORT$TARGET_PATH" palisade "$PALISADE_PID"
}

NOT_ALLOWED=0
for REP in $(seq "$REPEAT"); do
    run_wrk "direct upstream" "http://127.0.0.1:$UPSTREAM_PORT$TARGET_PATH" "$UPSTREAM_PID"
    for workers in $WORKERS; do
        start_nginx "$workers"
        run_wrk "nginx (worker_processes $workers)" "http://127.0.0.1:$NGINX_PORT$TARGET_PATH" "$NGINX_PID"
        stop_pid "$NGINX_PID"
        start_palisade "$workers"
        run_wrk "palisade ($workers tokio worker$([ "$workers" = 1 ] || echo s))" \
            "http://127.0.0.1:$PALISADE_PORT$TARGET_PATH" "$PALISADE_PID"
        # Every request must have been allowed, or this is not a
        # comparison of forwarding.
        blocked=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
            awk '/^palisade_requests_total/ && !/action="allow"/ {n += $NF} END {print n + 0}')
        [ "$blocked" = 0 ] || echo "load.sh: warning: palisade did not allow $blocked requests (see its /metrics)" >&2
        NOT_ALLOWED=$((NOT_ALLOWED + blocked))
        stop_pid "$PALISADE_PID"
    done
done

{
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, GET $TARGET_PATH with" \
        "$([ -z "${PLAIN_UA:-}" ] && echo "Chromium 156's request headers" || echo "a Chrome User-Agent alone");" \
        "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), $PINNING;" \
        "bench_upstream with $UPSTREAM_THREADS runtime thread(s); $REPEAT run(s) per target, interleaved," \
        "the run with the median requests/s shown; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| target | requests/s | p50 | p99 | errors (non-2xx + socket) | target CPU | target CPU µs/request | upstream CPU | requests/s of all runs |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for label in "${LABELS[@]}"; do
        awk -F'\t' -v label="$label" '$1 == label' "$RUNS" | sort -t$'\t' -k2,2n | awk -F'\t' '
            { line[NR] = $0; all = all (NR > 1 ? ", " : "") $2 }
            END {
                split(line[int((NR + 1) / 2)], f, "\t")
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], all
            }'
    done
    echo
    echo "palisade's decisions other than allow, over all its runs: $NOT_ALLOWED"
} | tee "$RESULTS_DIR/table.md"
