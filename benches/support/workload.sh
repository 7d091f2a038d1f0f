# Shared by the load scripts (sourced, not run): the two workloads' request
# headers, palisade's configuration for each, and waiting for a server.
# The caller sets WORK (a temp dir) and ROOT (the repository).
# shellcheck shell=bash

# The request headers: by default those of Chromium 156 loading a page
# (replay/captures/chromium-156-human-login.jsonl, first line), so palisade
# judges the request a clean browser's ("allow") and both proxies handle a
# realistic header block. PLAIN_UA=1 sends the User-Agent alone (a bare
# Chrome user agent without client hints is only "log"ged by palisade, and
# still forwarded).
USER_AGENT=${USER_AGENT:-"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"}
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

# palisade's configurations, $WORK/palisade-<workload>.toml: the defaults,
# decision log off; for the mix, X-Forwarded-For trusted from 127.0.0.1
# (wrk: each login comes from an address of its own, see load.sh).
write_palisade_configs() {
    cat >"$WORK/palisade-get.toml" <<TOML
[decision_log]
path = "off"
TOML
    cat >"$WORK/palisade-mix.toml" <<TOML
[server]
trusted_proxies = ["127.0.0.1/32"]

[decision_log]
path = "off"
TOML
}

# workload_script <workload>: wrk's script arguments for it, in `script`.
workload_script() {
    script=()
    if [ "$1" = mix ]; then
        script=(-s "$ROOT/benches/support/login_mix.lua")
    fi
}

# wait_ready <url> <name> [<pid>]: until the URL answers 200 (with the
# browser headers), 10 s at most; when the process <pid> exits first, show
# its log ($WORK/<name>.log) and exit.
wait_ready() {
    local url=$1 name=$2 pid=${3:-} code
    for _ in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "${HEADERS[@]}" "$url" || true)
        [ "$code" = 200 ] && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            echo "$(basename "$0"): $name exited; its log:" >&2
            cat "$WORK/$name.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "$(basename "$0"): $name did not answer 200 at $url (last status $code)" >&2
    exit 1
}
