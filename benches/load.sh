#!/usr/bin/env bash
# Bounded load comparison on 127.0.0.1: wrk against the bench upstream
# directly, through nginx (plain proxy_pass) and through palisade (decision
# log off, every default detector on), back to back and alternating, REPEAT
# rounds, for two workloads, then a markdown table per workload with
# requests/s, p50, p99, palisade/nginx and CPU µs/request. See
# benches/README.md.
#
# Workloads (WORKLOADS, default both):
#   get  `GET /` with Chromium 156's request headers.
#   mix  the same GETs with 1 request in 10 a JSON login POST on
#        palisade's default login route (benches/support/login_mix.lua).
#        Each login comes from its own client address: an X-Forwarded-For
#        address from 198.18.0.0/15 (RFC 2544's benchmark range), which
#        palisade trusts from 127.0.0.1 in this workload only
#        (`server.trusted_proxies = ["127.0.0.1/32"]`), and its own user,
#        so the login route's per-client limit (30 a minute) and the
#        credential-stuffing detectors see many clients, as in production
#        behind a load balancer, and do not turn the mix into cheap 429s.
#        The login limit itself is the default. Every request must still
#        be forwarded: the script reads palisade's /metrics after each run.
#
# Every process this script starts is killed on exit.
#
# Pinning is all or nothing. By default nothing is pinned (not wrk, not the
# upstream, not the proxies): every process shares both cores through the
# scheduler the same way. With PIN=1 every process is pinned with taskset:
# wrk to CPU $WRK_CPU, and the upstream and the process under test (direct:
# the upstream alone) together to CPU $SERVER_CPU, so each proxy gets the
# same one-core budget. Parallelism is set by worker count: each entry of
# WORKERS runs nginx with `worker_processes N` and palisade with N worker
# threads (TOKIO_WORKER_THREADS=N), one process each.
#
# Environment (defaults):
#   DURATION=5s THREADS=2 CONNECTIONS=50       wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency
#   WORKLOADS="get mix"                        which workloads, in this order in each round
#   WORKERS="1 2"                              nginx worker_processes / palisade worker threads, per row pair
#   REPEAT=3                                   rounds (targets interleaved); the median run is shown
#   PALISADE_BIN=target/release/palisade       the palisade binary
#   COMPARE_BIN= COMPARE_NAME=before           another palisade binary (an older build) run right after
#                                              PALISADE_BIN in every round, in rows "palisade $COMPARE_NAME …"
#   UPSTREAM_THREADS=1                         bench_upstream runtime threads (1 = current-thread)
#   TARGET_PATH=/                              path requested (default route: UA rules only, no rate limit)
#   USER_AGENT="Mozilla/5.0 (X11; ...) Chrome/156..." PLAIN_UA=   (PLAIN_UA=1: no headers but the User-Agent)
#   UPSTREAM_PORT=18181 NGINX_PORT=18182 PALISADE_PORT=18183 ADMIN_PORT=18184
#   PIN=0 WRK_CPU=1 SERVER_CPU=0               PIN=1: taskset wrk / upstream + proxy as above
#   RESULTS_DIR=target/load-results            raw wrk output and the table are kept here
#   SKIP_BUILD=1                               use the binaries already in target/release
set -euo pipefail

DURATION=${DURATION:-5s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-50}
WORKERS=${WORKERS:-"1 2"}
WORKLOADS=${WORKLOADS:-"get mix"}
REPEAT=${REPEAT:-3}
UPSTREAM_THREADS=${UPSTREAM_THREADS:-1}
TARGET_PATH=${TARGET_PATH:-/}
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
PALISADE_BIN=${PALISADE_BIN:-$TARGET_DIR/release/palisade}
mkdir -p "$RESULTS_DIR"
WORK=$(mktemp -d /tmp/palisade-load.XXXXXX)
chmod 755 "$WORK" # nginx workers drop privileges and must reach their temp dirs

# shellcheck source=support/processes.sh
source "$ROOT/benches/support/processes.sh"
# shellcheck source=support/workload.sh
source "$ROOT/benches/support/workload.sh"

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
RUNS="$WORK/runs.tsv" # one line per wrk run: workload, label, rps, p50, p99, errors, CPU %, CPU µs/request, upstream CPU %
: >"$RUNS"

# run_wrk <label> <url> <pid of the process under test>, for $WORKLOAD
run_wrk() {
    local label=$1 url=$2 pid=$3 out before after up_before up_after seconds script
    [[ " ${LABELS[*]} " == *" $label "* ]] || LABELS+=("$label")
    workload_script "$WORKLOAD"
    out="$RESULTS_DIR/wrk-$WORKLOAD-$(echo "$label" | tr -c 'a-zA-Z0-9' '-' | sed 's/-*$//')-$REP.txt"
    echo "== $WORKLOAD: $label (run $REP): wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency ${script[*]} ${HEADERS[*]} $url" >&2
    before=$(cpu_ticks "$pid")
    up_before=$(cpu_ticks "$UPSTREAM_PID")
    "${ON_WRK_CPU[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" "${HEADERS[@]}" "$url" >"$out"
    after=$(cpu_ticks "$pid")
    up_after=$(cpu_ticks "$UPSTREAM_PID")
    cat "$out" >&2
    seconds=$(awk '/requests in/ {for (i = 1; i <= NF; i++) if ($i == "in") {sub(/s,?$/, "", $(i + 1)); print $(i + 1)}}' "$out")
    awk -v workload="$WORKLOAD" -v label="$label" -v cpu=$((after - before)) -v upcpu=$((up_after - up_before)) \
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
            printf "%s\t%s\t%.0f\t%s\t%s\t%d\t%s\t%s\t%s\n", workload, label, rps, p50, p99, bad, cpu_pct, cpu_per_request, up_pct
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

write_palisade_configs

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
    local workers=$1 binary=$2
    TOKIO_WORKER_THREADS=$workers PALISADE_LOG=warn "${ON_SERVER_CPU[@]}" "$binary" serve \
        --config "$WORK/palisade-$WORKLOAD.toml" \
        --upstream "http://127.0.0.1:$UPSTREAM_PORT" \
        --listen "127.0.0.1:$PALISADE_PORT" \
        --admin "127.0.0.1:$ADMIN_PORT" >"$WORK/palisade.log" 2>&1 &
    PALISADE_PID=$!
    STARTED+=("$PALISADE_PID")
    wait_ready "http://127.0.0.1:$PALISADE_PORT$TARGET_PATH" palisade "$PALISADE_PID"
}

# Requests palisade did not forward (any decision but allow and log), and
# those it did not allow, from its /metrics: both must stay 0 for this to
# compare forwarding.
palisade_decisions() {
    curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '
        /^palisade_requests_total/ && !/action="allow"/ { other += $NF }
        /^palisade_requests_total/ && !/action="allow"/ && !/action="log"/ { stopped += $NF }
        END { print stopped + 0, other + 0 }'
}

PALISADES=("$PALISADE_BIN")
[ -z "${COMPARE_BIN:-}" ] || PALISADES+=("$COMPARE_BIN")
NOT_FORWARDED=0
NOT_ALLOWED=0
for REP in $(seq "$REPEAT"); do
    for WORKLOAD in $WORKLOADS; do
        run_wrk "direct upstream" "http://127.0.0.1:$UPSTREAM_PORT$TARGET_PATH" "$UPSTREAM_PID"
        for workers in $WORKERS; do
            start_nginx "$workers"
            run_wrk "nginx (worker_processes $workers)" "http://127.0.0.1:$NGINX_PORT$TARGET_PATH" "$NGINX_PID"
            stop_pid "$NGINX_PID"
            for binary in "${PALISADES[@]}"; do
                name=palisade
                [ "$binary" = "$PALISADE_BIN" ] || name="palisade ${COMPARE_NAME:-before}"
                start_palisade "$workers" "$binary"
                run_wrk "$name ($workers worker$([ "$workers" = 1 ] || echo s))" \
                    "http://127.0.0.1:$PALISADE_PORT$TARGET_PATH" "$PALISADE_PID"
                read -r stopped other < <(palisade_decisions)
                [ "$stopped" = 0 ] || echo "load.sh: warning: $name did not forward $stopped requests (see its /metrics)" >&2
                [ "$other" = 0 ] || echo "load.sh: note: $name decided other than allow for $other requests" >&2
                NOT_FORWARDED=$((NOT_FORWARDED + stopped))
                NOT_ALLOWED=$((NOT_ALLOWED + other))
                stop_pid "$PALISADE_PID"
            done
        done
    done
done

describe_workload() {
    case $1 in
        get) echo "GET $TARGET_PATH with $([ -z "${PLAIN_UA:-}" ] && echo "Chromium 156's request headers" || echo "a Chrome User-Agent alone")" ;;
        mix) echo "the same GETs, 1 in 10 a JSON login POST on /login from its own X-Forwarded-For address (benches/support/login_mix.lua)" ;;
    esac
}

{
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency;" \
        "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), $PINNING;" \
        "bench_upstream with $UPSTREAM_THREADS runtime thread(s); $REPEAT round(s), targets interleaved," \
        "the run with the median requests/s shown; palisade/nginx compares the medians of the same worker count;" \
        "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    for WORKLOAD in $WORKLOADS; do
        echo
        echo "Workload $WORKLOAD: $(describe_workload "$WORKLOAD")"
        echo
        echo "| target | requests/s | palisade/nginx | p50 | p99 | errors (non-2xx + socket) | target CPU | target CPU µs/request | upstream CPU | requests/s of all runs |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        for label in "${LABELS[@]}"; do
            awk -F'\t' -v workload="$WORKLOAD" -v label="$label" '$1 == workload && $2 == label' "$RUNS" |
                sort -t$'\t' -k3,3n | awk -F'\t' '
                { line[NR] = $0; all = all (NR > 1 ? ", " : "") $3 }
                END {
                    if (NR == 0) exit
                    split(line[int((NR + 1) / 2)], f, "\t")
                    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], all
                }'
        done | awk -F'\t' '
            # The ratio for palisade rows, against nginx with as many workers.
            { workers = $1; sub(/^[^0-9]*/, "", workers); sub(/[^0-9].*$/, "", workers) }
            $1 ~ /^nginx/ { nginx[workers] = $2 }
            {
                ratio = ($1 ~ /^palisade/ && nginx[workers] > 0) ? sprintf("%.2f", $2 / nginx[workers]) : ""
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, ratio, $3, $4, $5, $6, $7, $8, $9
            }'
    done
    echo
    echo "palisade's requests not forwarded, over all its runs: $NOT_FORWARDED; decided other than allow: $NOT_ALLOWED"
} | tee "$RESULTS_DIR/table.md"
