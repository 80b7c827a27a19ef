#!/usr/bin/env bash
# Single-node Apache Cassandra 5.0 on loopback, for tests and local runs.
#
#   run.sh start    collect the jars (first run), wipe the data, start the node
#                   in the background, wait until it logs 'Startup complete',
#                   port 9042 accepts and a CQL query answers (up to 240 s).
#                   Already running and healthy: does nothing.
#   run.sh stop     SIGTERM by pid file, SIGKILL after 60 s.
#   run.sh status   one line; exit 0 only when running and answering CQL.
#   run.sh tool nodetool ARGS... | CLASS ARGS...   a Cassandra tool from the jars.
#
# Ports: 9042 (CQL), 7000 (storage, gossip), 7199 (JMX, for nodetool); all on
# 127.0.0.1. State and logs under ${TERN_INFRA_STATE:-<repo>/target/infra}/cassandra.
# Needs Java 17 (not 21+): the default `java`, else Debian's OpenJDK 17, or JAVA.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../common.sh
. "$HERE/../common.sh"

NAME=cassandra
PORT=9042
OTHER_PORTS="7000 7199"
STATE=$STATE_ROOT/cassandra
PIDFILE=$STATE/cassandra.pid
LOG=$STATE/logs/server.log
START_TIMEOUT=240
STOP_TIMEOUT=60
# Every JVM of ours carries this, so a recycled pid is never taken for ours.
MARK="-Dtern.infra.state=$STATE"

our_pid() {
    local pid
    pid=$(read_pid "$PIDFILE")
    if [ -n "$pid" ] && pid_cmdline_has "$pid" "$MARK"; then printf '%s' "$pid"; fi
}

java_bin() {
    local java major
    java=$(find_java)
    major=$(java_major "$java")
    [ -n "$major" ] || die "$NAME: cannot run '$java' (set JAVA to a JDK 17 java)"
    [ "$major" = 17 ] ||
        die "$NAME: Cassandra 5.0 runs here on Java 17, '$java' is $major (set JAVA=/usr/lib/jvm/java-17-openjdk-amd64/bin/java)"
    printf '%s' "$java"
}

# answers: a CQL query works (not just an open port).
answers() {
    local py
    py=$(command -v python3 || true)
    if [ -n "$py" ]; then
        "$py" "$INFRA_DIR/probe.py" cql 127.0.0.1 "$PORT"
    else
        port_open "$PORT" && echo "cassandra: port $PORT open (no python3 for a CQL check)"
    fi
}

ready() {
    grep -q 'Startup complete' "$LOG" 2>/dev/null && port_open "$PORT" && answers >/dev/null 2>&1
}

tool() {
    local class=$1 java
    shift
    case $class in
        nodetool) class=org.apache.cassandra.tools.NodeTool ;;
    esac
    java=$(java_bin)
    local -a jpms
    # the same JPMS exports/opens as the server: the tools touch JDK internals
    read -r -a jpms <<< "$(grep -E '^--add-(exports|opens)' "$HERE/jvm17.options" | tr '\n' ' ')"
    "$java" -Xmx256m -XX:+UseSerialGC "${jpms[@]}" \
        -Dlogback.configurationFile="$HERE/logback.xml" \
        -cp "$HERE:$HERE/lib/*" "$class" "$@"
}

fail_start() {
    local pid=$1 msg=$2
    echo "----- last 80 lines of $LOG -----" >&2
    tail -n 80 "$LOG" >&2 || true
    echo "-----" >&2
    if [ -n "$pid" ] && pid_alive "$pid"; then stop_pid "$NAME" "$pid" 20 >&2; fi
    rm -f "$PIDFILE"
    die "$NAME: $msg"
}

start() {
    lock_start "$NAME"
    local pid java jamm p rc=0
    local -a opts
    pid=$(our_pid)
    if [ -n "$pid" ]; then
        if ready; then
            log "$NAME: already running (pid $pid) and answering on 127.0.0.1:$PORT"
            return 0
        fi
        log "$NAME: pid $pid is up but not ready yet; waiting"
        wait_until "$START_TIMEOUT" "$pid" ready || rc=$?
        [ "$rc" = 0 ] && { log "$NAME: ready (pid $pid)"; return 0; }
        echo "----- last 80 lines of $LOG -----" >&2
        tail -n 80 "$LOG" >&2 || true
        die "$NAME: pid $pid did not become ready; run infra/down and try again"
    fi
    rm -f "$PIDFILE"
    for p in "$PORT" $OTHER_PORTS; do
        if port_open "$p"; then
            die "$NAME: port $p is taken by another process $(port_owner "$p"); stop it first"
        fi
    done

    mkdir -p "$STATE/logs"
    fetch_jars "$HERE" "$STATE/logs/maven.log"
    java=$(java_bin)
    jamm=$(find "$HERE/lib" -name 'jamm-*.jar' | head -n 1)
    [ -n "$jamm" ] || die "$NAME: no jamm jar in $HERE/lib (needed as -javaagent)"
    # One option per line; split on whitespace on purpose (see jvm17.options).
    read -r -a opts <<< "$(grep '^-' "$HERE/jvm17.options" | tr '\n' ' ')"

    # Fresh data every start: tests create their own keyspaces.
    rm -rf "$STATE/data"
    mkdir -p "$STATE/data"
    rotate_log "$LOG"

    log "$NAME: starting on 127.0.0.1:$PORT, java $(java_major "$java"), heap 1 GiB"
    # setsid: own session, so a Ctrl-C aimed at the caller does not reach the
    # node. It execs (no fork) here, so $! is the JVM's pid.
    (
        cd "$STATE"
        close_fds
        export MALLOC_ARENA_MAX=4
        exec setsid "$java" "$MARK" "${opts[@]}" -javaagent:"$jamm" \
            -Dcassandra.config="file://$HERE/cassandra.yaml" \
            -Dlogback.configurationFile="$HERE/logback.xml" \
            -Dcassandra.storagedir="$STATE/data" \
            -Dcassandra.logdir="$STATE/logs" \
            -Dcassandra-foreground=yes \
            -Dcassandra.jmx.local.port=7199 \
            -Dcom.sun.management.jmxremote.authenticate=false \
            -XX:HeapDumpPath="$STATE" \
            -cp "$HERE:$HERE/lib/*" org.apache.cassandra.service.CassandraDaemon
    ) > "$LOG" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$PIDFILE"

    local t0=$SECONDS
    wait_until "$START_TIMEOUT" "$pid" ready || rc=$?
    case $rc in
        0) log "$NAME: ready in $((SECONDS - t0))s (pid $pid); $(answers 2>&1)" ;;
        1) fail_start "" "exited during start-up (see $LOG)" ;;
        *) fail_start "$pid" "not ready after ${START_TIMEOUT}s (see $LOG)" ;;
    esac
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    tool) shift; [ $# -ge 1 ] || die "usage: $0 tool nodetool|CLASS ARGS..."; tool "$@" ;;
    *) echo "usage: $0 start|stop|status|tool nodetool|CLASS ARGS..." >&2; exit 2 ;;
esac
