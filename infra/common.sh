# shellcheck shell=bash
# Helpers shared by infra/*/run.sh and infra/{up,down,status,logs}.
# Sourced, never run. Every path here is absolute, so the scripts work from
# any current directory.

INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$INFRA_DIR/.." && pwd)
# Everything a server writes (data, logs, pid files) lives under here, inside
# target/ by default so that `cargo clean` or `rm -rf target` removes it.
STATE_ROOT=${TERN_INFRA_STATE:-$REPO_DIR/target/infra}
case $STATE_ROOT in /*) ;; *) STATE_ROOT=$(pwd)/$STATE_ROOT ;; esac

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '%s error: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# port_owner PORT: "name pid=N" of whoever listens on PORT, for error messages.
port_owner() {
    if command -v ss >/dev/null; then
        ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n 1
    fi
}

# read_pid FILE: the pid stored in FILE, or nothing.
read_pid() {
    [ -f "$1" ] || return 0
    local pid
    pid=$(tr -dc '0-9' < "$1")
    printf '%s' "$pid"
}

# pid_alive PID: the process exists (zombies count as gone).
pid_alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$st" != Z ]
}

# pid_cmdline_has PID TEXT: the process' command line contains TEXT, so a pid
# reused by an unrelated process is never taken for ours.
pid_cmdline_has() {
    pid_alive "$1" && tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# stop_pid NAME PID TIMEOUT: SIGTERM, wait up to TIMEOUT seconds, then SIGKILL.
stop_pid() {
    local name=$1 pid=$2 timeout=$3 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < timeout * 5; i++)); do
        pid_alive "$pid" || { log "$name: stopped (pid $pid)"; return 0; }
        sleep 0.2
    done
    log "$name: still running after ${timeout}s, sending SIGKILL to pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.2
    done
    die "$name: pid $pid survived SIGKILL"
}

# find_java: the java binary to use: $JAVA if set, else `java` on PATH, else
# Debian's OpenJDK 17. Prints its path; the caller checks the version.
find_java() {
    if [ -n "${JAVA:-}" ]; then
        printf '%s' "$JAVA"
        return
    fi
    if command -v java >/dev/null && [ "$(java_major java)" = 17 ]; then
        printf 'java'
        return
    fi
    local j
    for j in /usr/lib/jvm/java-17-openjdk-*/bin/java; do
        [ -x "$j" ] && { printf '%s' "$j"; return; }
    done
    printf 'java'
}

# java_major JAVA: the feature version (17, 21, 25...) of that java, or nothing.
java_major() {
    "$1" -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n 1
}

# fetch_jars DIR: collect the runtime jars named by DIR/pom.xml into DIR/lib.
# Skipped when DIR/lib is complete for the current pom (its sha256 is stored in
# lib/.complete once every jar is in place). Downloads go through `mvn` into
# ~/.m2, so only the first run on a machine hits Maven Central. One `mvn` at a
# time (flock): two at once would race on the same files in ~/.m2.
fetch_jars() {
    local dir=$1 mvnlog=$2 sum
    sum=$(sha256sum "$dir/pom.xml" | cut -d' ' -f1)
    if [ -f "$dir/lib/.complete" ] && [ "$(cat "$dir/lib/.complete")" = "$sum" ]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install -y maven)"
    mkdir -p "$STATE_ROOT"
    log "$(basename "$dir"): collecting jars with Maven into $dir/lib (first run only)"
    local start=$SECONDS
    if ! (
        cd "$dir" &&
            flock 9 &&
            rm -rf lib.partial &&
            mvn -B -q dependency:copy-dependencies -DincludeScope=runtime \
                -DoutputDirectory=lib.partial
    ) 9>"$STATE_ROOT/.maven.lock" >"$mvnlog" 2>&1; then
        tail -n 80 "$mvnlog" >&2
        die "$(basename "$dir"): mvn could not collect the jars (full log: $mvnlog)"
    fi
    rm -rf "${dir:?}/lib"
    mv "$dir/lib.partial" "$dir/lib"
    printf '%s\n' "$sum" > "$dir/lib/.complete"
    log "$(basename "$dir"): $(find "$dir/lib" -name '*.jar' | wc -l) jars," \
        "$(du -sm "$dir/lib" | cut -f1) MiB, in $((SECONDS - start))s"
}

# close_fds: close every descriptor above 2 in the current (sub)shell. Called
# just before a server is exec'd, so it holds none of its caller's pipes
# (a caller reading our output would otherwise wait for the server to exit)
# nor the start lock.
close_fds() {
    local fd n
    for fd in /proc/"$BASHPID"/fd/*; do
        n=${fd##*/}
        if [ "$n" -gt 2 ] 2>/dev/null; then exec {n}>&-; fi
    done
}

# lock_start NAME: one `run.sh start` per server at a time (two concurrent
# `infra/up` would otherwise both start a JVM). The lock is fd 8: the launched
# server must close it (close_fds), or it would hold the lock while it runs.
lock_start() {
    mkdir -p "$STATE_ROOT"
    exec 8>"$STATE_ROOT/.$1.start.lock"
    flock -w 600 8 || die "$1: another start still holds $STATE_ROOT/.$1.start.lock"
}

# rotate_log FILE: keep the previous run's log as FILE.prev.
rotate_log() {
    if [ -f "$1" ]; then mv -f "$1" "$1.prev"; fi
}

# wait_until TIMEOUT PID CHECK...: poll CHECK every second until it succeeds
# (0), the process PID dies (1) or TIMEOUT seconds pass (2).
wait_until() {
    local timeout=$1 pid=$2 deadline
    shift 2
    deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if "$@"; then return 0; fi
        pid_alive "$pid" || return 1
        sleep 1
    done
    "$@" && return 0
    return 2
}

# status_line NAME STATE PID PORT [DETAIL]: the one line `status` prints.
status_line() {
    printf '%-10s %-9s pid %-8s port %-5s %s\n' "$1" "$2" "${3:--}" "$4" "${5:-}"
}

# The stop and status of every server script. The script defines NAME,
# PORT, PIDFILE and STOP_TIMEOUT, and the functions our_pid (our server's
# pid, or nothing) and answers (one line on its health; fails when unhealthy).
# STOP_NOTE, if set, is added to the "stopping" line (a server slow to stop).

# shellcheck disable=SC2153 # NAME, PORT, PIDFILE: set by the sourcing script
# stop: SIGTERM our server, SIGKILL after STOP_TIMEOUT; "not running" is fine.
stop() {
    local pid
    pid=$(our_pid)
    if [ -z "$pid" ]; then
        rm -f "$PIDFILE"
        log "$NAME: not running"
        return 0
    fi
    log "$NAME: stopping pid $pid${STOP_NOTE:-}"
    stop_pid "$NAME" "$pid" "$STOP_TIMEOUT"
    rm -f "$PIDFILE"
}

# status: one line; exit 0 only when running and healthy.
status() {
    local pid detail
    pid=$(our_pid)
    if [ -z "$pid" ]; then
        status_line "$NAME" stopped "" "$PORT"
        return 1
    fi
    if detail=$(answers 2>&1); then
        status_line "$NAME" running "$pid" "$PORT" "$detail"
    else
        status_line "$NAME" unhealthy "$pid" "$PORT" "$detail"
        return 1
    fi
}
