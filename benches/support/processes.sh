# Shared by the load scripts (sourced, not run): processes they start are
# recorded in STARTED and stopped on exit, WORK (a temp dir the caller
# made) is removed, and ports are checked before use.
# shellcheck shell=bash

STARTED=() # pids of everything started here, killed on exit

stop_pid() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# need_port_free <port> <NAME>: exit when something already listens there.
need_port_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "$(basename "$0"): port $1 is already in use; set ${2}_PORT to another port" >&2
        exit 1
    fi
}

# wait_port <port> [log]: wait until something listens on the port (up to
# WAIT_PORT_SECONDS, default 10); else print the log, if given, and exit.
wait_port() {
    local tries=$(( ${WAIT_PORT_SECONDS:-10} * 10 ))
    for _ in $(seq "$tries"); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$(basename "$0"): nothing listens on $1${2:+; $2:}" >&2
    [ -z "${2:-}" ] || cat "$2" >&2 || true
    exit 1
}
