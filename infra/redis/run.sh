#!/usr/bin/env bash
# Redis on 127.0.0.1:6379, for tests and local runs: no persistence.
#
#   run.sh start    install Debian's redis-server if it is not on PATH, start
#                   it daemonized, wait until `redis-cli ping` answers PONG.
#                   Already running and healthy: does nothing.
#   run.sh stop     SIGTERM by pid file, SIGKILL after 15 s.
#   run.sh status   one line; exit 0 only when running and answering PING.
#
# State (pid file, log, working dir) under ${TERN_INFRA_STATE:-<repo>/target/infra}/redis.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../common.sh
. "$HERE/../common.sh"

NAME=redis
PORT=6379
STATE=$STATE_ROOT/redis
PIDFILE=$STATE/redis.pid
LOG=$STATE/logs/server.log
START_TIMEOUT=30
STOP_TIMEOUT=15

# our_pid: the pid in our pid file, if that process is a redis-server working
# in our state folder (redis rewrites its command line, so check its cwd).
our_pid() {
    local pid
    pid=$(read_pid "$PIDFILE")
    [ -n "$pid" ] && pid_alive "$pid" || return 0
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] || return 0
    [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$STATE/data" ] || return 0
    printf '%s' "$pid"
}

answers() {
    local pong version
    pong=$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>&1) || true
    [ "$pong" = PONG ] || { echo "redis: PING answered '$pong'"; return 1; }
    version=$(redis-cli -h 127.0.0.1 -p "$PORT" info server 2>/dev/null |
        sed -n 's/^redis_version:\([0-9.]*\).*/\1/p')
    echo "redis: PONG, version ${version:-?}"
}

ready() { answers >/dev/null 2>&1; }

# install: Debian's redis-server (7.0 on Debian 12), without letting the
# package start its own server on 6379: no systemd here, but the package's
# sysv script would run unless policy-rc.d says no.
install() {
    command -v apt-get >/dev/null || die "$NAME: redis-server is not installed and there is no apt-get"
    [ "$(id -u)" = 0 ] || die "$NAME: redis-server is not installed; run as root or: sudo apt-get install -y redis-server"
    log "$NAME: installing Debian's redis-server (apt-get)"
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# tern infra/redis/run.sh: no service starts during this install\nexit 101\n' > "$policy"
        chmod +x "$policy"
        made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    local t0=$SECONDS
    {
        apt-get update &&
            apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 redis-server
    } > "$STATE/logs/apt.log" 2>&1 || {
        tail -n 40 "$STATE/logs/apt.log" >&2
        die "$NAME: apt-get install redis-server failed (log: $STATE/logs/apt.log)"
    }
    if [ -n "$made_policy" ]; then
        rm -f "$policy"
        trap - EXIT
    fi
    log "$NAME: installed $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') in $((SECONDS - t0))s"
    # Had the package started Debian's own server anyway, stop that one.
    local debpid
    debpid=$(read_pid /run/redis/redis-server.pid)
    if [ -n "$debpid" ] && pid_alive "$debpid"; then
        log "$NAME: stopping the server the package started (pid $debpid)"
        stop_pid "debian redis" "$debpid" "$STOP_TIMEOUT"
    fi
}

fail_start() {
    echo "----- last 80 lines of $LOG -----" >&2
    tail -n 80 "$LOG" >&2 || true
    echo "-----" >&2
    local pid
    pid=$(our_pid)
    if [ -n "$pid" ]; then stop_pid "$NAME" "$pid" 5 >&2; fi
    rm -f "$PIDFILE"
    die "$NAME: $1"
}

start() {
    lock_start "$NAME"
    local pid
    pid=$(our_pid)
    if [ -n "$pid" ]; then
        if ready; then
            log "$NAME: already running (pid $pid) and answering on 127.0.0.1:$PORT"
            return 0
        fi
        log "$NAME: pid $pid is up but not answering; waiting"
        wait_until "$START_TIMEOUT" "$pid" ready ||
            die "$NAME: pid $pid does not answer PING; run infra/down and try again"
        return 0
    fi
    rm -f "$PIDFILE"
    mkdir -p "$STATE/logs"
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        install
    fi
    if port_open "$PORT"; then
        die "$NAME: port $PORT is taken by another process $(port_owner "$PORT"); stop it first"
    fi
    rm -rf "$STATE/data"
    mkdir -p "$STATE/data"
    rotate_log "$LOG"

    log "$NAME: starting $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') on 127.0.0.1:$PORT"
    # Daemonized: redis forks, writes the pid file, and this command returns;
    # errors before the fork (bad arguments) land in the same log.
    # shellcheck disable=SC2094 # the log is read only after this returns
    (
        cd "$STATE/data"
        close_fds
        redis-server --bind 127.0.0.1 --port "$PORT" --save '' --appendonly no \
            --daemonize yes --pidfile "$PIDFILE" --logfile "$LOG" --dir "$STATE/data"
    ) >> "$LOG" 2>&1 < /dev/null || fail_start "redis-server refused to start"

    local t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        pid=$(our_pid)
        if [ -n "$pid" ] && ready; then
            log "$NAME: ready in $((SECONDS - t0))s (pid $pid); $(answers)"
            return 0
        fi
        sleep 0.2
    done
    fail_start "not answering PING after ${START_TIMEOUT}s (see $LOG)"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
