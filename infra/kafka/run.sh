#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) on loopback.
#
#   run.sh start    collect the jars (first run), format fresh storage, start
#                   the broker in the background, wait until a Metadata request
#                   lists it. Already running and healthy: does nothing.
#   run.sh stop     SIGTERM by pid file, SIGKILL after 60 s.
#   run.sh status   one line; exit 0 only when running and answering.
#   run.sh tool NAME ARGS...   run a Kafka command-line tool from the jars:
#                   topics, console-producer, console-consumer, storage, or a
#                   main class name.
#
# Ports: 9092 (PLAINTEXT clients), 9093 (controller). State and logs under
# ${TERN_INFRA_STATE:-<repo>/target/infra}/kafka. JAVA overrides `java`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../common.sh
. "$HERE/../common.sh"

NAME=kafka
PORT=9092
CONTROLLER_PORT=9093
STATE=$STATE_ROOT/kafka
PIDFILE=$STATE/kafka.pid
LOG=$STATE/logs/server.log
START_TIMEOUT=180
STOP_TIMEOUT=60
# Every JVM of ours carries this, so a recycled pid is never taken for ours.
MARK="-Dtern.infra.state=$STATE"
CP="$HERE/lib/*"

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
    [ "$major" -ge 17 ] || die "$NAME: Kafka 4 needs Java 17 or newer, '$java' is $major"
    printf '%s' "$java"
}

# tool CLASS ARGS...: run a Kafka tool with a small heap and quiet logging.
tool() {
    local class=$1 java
    shift
    case $class in
        topics) class=org.apache.kafka.tools.TopicCommand ;;
        console-producer) class=org.apache.kafka.tools.ConsoleProducer ;;
        console-consumer) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
        storage) class=kafka.tools.StorageTool ;;
    esac
    [ -f "$HERE/lib/.complete" ] || fetch_jars "$HERE" "$STATE_ROOT/kafka-maven.log"
    java=$(java_bin)
    "$java" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$HERE/tools-log4j2.properties" \
        -cp "$CP" "$class" "$@"
}

# answers: the broker serves Metadata and lists itself (not just an open port).
answers() {
    local py
    py=$(command -v python3 || true)
    if [ -n "$py" ]; then
        "$py" "$INFRA_DIR/probe.py" kafka 127.0.0.1 "$PORT"
    else
        # No python: ask with Kafka's own tool (a JVM start, so slower).
        timeout 60 "$0" tool topics --bootstrap-server "127.0.0.1:$PORT" --list >/dev/null &&
            echo "kafka: TopicCommand --list ok"
    fi
}

ready() {
    grep -q 'Kafka Server started' "$LOG" 2>/dev/null && port_open "$PORT" && answers >/dev/null 2>&1
}

fail_start() {
    local pid=$1 msg=$2
    echo "----- last 80 lines of $LOG -----" >&2
    tail -n 80 "$LOG" >&2 || true
    echo "-----" >&2
    if [ -n "$pid" ] && pid_alive "$pid"; then stop_pid "$NAME" "$pid" 10 >&2; fi
    rm -f "$PIDFILE"
    die "$NAME: $msg"
}

start() {
    lock_start "$NAME"
    local pid java cid p rc=0
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
    for p in "$PORT" "$CONTROLLER_PORT"; do
        if port_open "$p"; then
            die "$NAME: port $p is taken by another process $(port_owner "$p"); stop it first"
        fi
    done

    mkdir -p "$STATE/logs"
    fetch_jars "$HERE" "$STATE/logs/maven.log"
    java=$(java_bin)

    # Fresh storage every start: tests use random topic names and expect nothing.
    rm -rf "$STATE/data"
    mkdir -p "$STATE/data"
    rotate_log "$LOG"
    sed "s#@DATA@#$STATE/data#" "$HERE/server.properties.in" > "$STATE/server.properties"
    cid=$(tool storage random-uuid)
    tool storage format --standalone --cluster-id "$cid" \
        --config "$STATE/server.properties" > "$STATE/logs/format.log" 2>&1 ||
        { cat "$STATE/logs/format.log" >&2; die "$NAME: formatting storage failed"; }

    log "$NAME: starting on 127.0.0.1:$PORT (controller $CONTROLLER_PORT), java $(java_major "$java"), cluster $cid"
    # setsid: own session, so a Ctrl-C aimed at the caller does not reach the
    # broker. It execs (no fork) here, so $! is the JVM's pid.
    (
        cd "$STATE"
        close_fds
        exec setsid "$java" "$MARK" -Xms256m -Xmx512m \
            -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
            -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError \
            -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
            -Dkafka.logs.dir="$STATE/logs" \
            -cp "$CP" kafka.Kafka "$STATE/server.properties"
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
    tool) shift; [ $# -ge 1 ] || die "usage: $0 tool NAME|CLASS ARGS..."; tool "$@" ;;
    *) echo "usage: $0 start|stop|status|tool NAME ARGS..." >&2; exit 2 ;;
esac
