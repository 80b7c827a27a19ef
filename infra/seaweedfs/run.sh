#!/usr/bin/env bash
# SeaweedFS (S3-compatible object storage) on loopback, for tests and local
# runs: one `weed server` process holding master, volume server, filer and the
# S3 gateway, with one identity and the bucket the tests use.
#
#   run.sh build    build the pinned `weed` from source with Go (first run on a
#                   machine only, ~6 min on 2 cores) into infra/seaweedfs/lib/.
#   run.sh start    build if needed, wipe the data, start in the background,
#                   create the bucket, wait until a signed S3 request lists it.
#                   Already running and healthy: does nothing.
#   run.sh stop     SIGTERM by pid file, SIGKILL after 30 s.
#   run.sh status   one line; exit 0 only when running and the bucket lists.
#   run.sh shell    `weed shell` against this server (reads commands on stdin).
#
# S3 on 127.0.0.1:8333, access key tern-test, secret tern-test-secret, bucket
# tern-archive; anonymous requests are refused (403). Other ports, all on
# 127.0.0.1: master 9333, volume 8081, filer 8888, and each one's gRPC port
# 10000 higher (19333, 18081, 18888, 18333). State and logs under
# ${TERN_INFRA_STATE:-<repo>/target/infra}/seaweedfs. WEED overrides the binary.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../common.sh
. "$HERE/../common.sh"

NAME=seaweedfs
# A seaweedfs commit of 2026-11-09 (pseudo-version; `weed version` says 4.53).
# `go install` refuses it (its go.mod has replace directives), so build()
# compiles the module's own tree. Change it here and the next start builds again.
MODULE=github.com/seaweedfs/seaweedfs
VERSION=v0.0.0-20261109003541-7506e5f91cd6
PORT=8333
MASTER_PORT=9333
VOLUME_PORT=8081
FILER_PORT=8888
GRPC_OFFSET=10000
BUCKET=tern-archive
ACCESS_KEY=tern-test
SECRET_KEY=tern-test-secret
STATE=$STATE_ROOT/seaweedfs
PIDFILE=$STATE/seaweedfs.pid
LOG=$STATE/logs/server.log
# Outside target/ (git-ignored, like the Kafka and Cassandra jars), so that
# `rm -rf target` does not cost another 6-minute build.
LIB=$HERE/lib
START_TIMEOUT=60
# SIGTERM takes ~16 s: `weed server` stops its volume server before the filer,
# whose last metadata-log flush then retries for its fixed 15 s budget.
STOP_NOTE=" (may take ~16 s)"
STOP_TIMEOUT=30

# our_pid: the pid in our pid file, if that process is a weed serving our
# data folder.
our_pid() {
    local pid
    pid=$(read_pid "$PIDFILE")
    if [ -n "$pid" ] && pid_cmdline_has "$pid" "-dir=$STATE/data"; then printf '%s' "$pid"; fi
}

# weed_bin: the binary to run: $WEED if set, else the one build() made.
weed_bin() {
    if [ -n "${WEED:-}" ]; then
        [ -x "$WEED" ] || die "$NAME: WEED=$WEED is not an executable file"
        printf '%s' "$WEED"
    else
        printf '%s' "$LIB/weed"
    fi
}

built() {
    [ -x "$LIB/weed" ] && [ -f "$LIB/.complete" ] && [ "$(cat "$LIB/.complete")" = "$VERSION" ]
}

find_go() {
    if command -v go >/dev/null; then
        printf 'go'
    elif [ -x /usr/local/go/bin/go ]; then
        printf '/usr/local/go/bin/go'
    else
        die "$NAME: go not found (not on PATH, not /usr/local/go/bin/go); install Go 1.26.6+ from https://go.dev/dl/, needed once to build weed"
    fi
}

# build: the pinned weed into $LIB/weed, unless it is there already
# ($LIB/.complete holds the version it was built from). The source comes from
# the Go module proxy into the module cache (read-only there, so the binary is
# written elsewhere); the compiled packages stay in Go's build cache. One build
# at a time (flock): a second caller waits, then finds it done.
build() {
    if [ -n "${WEED:-}" ]; then
        log "$NAME: WEED=$WEED is set, nothing to build"
        return 0
    fi
    built && return 0
    local go buildlog=$STATE/logs/build.log t0=$SECONDS
    go=$(find_go)
    mkdir -p "$STATE/logs"
    exec 9>"$STATE_ROOT/.seaweedfs.build.lock"
    if ! flock -n 9; then
        log "$NAME: another build of weed is running; waiting for it"
        flock 9
    fi
    if built; then
        exec 9>&-
        return 0
    fi
    log "$NAME: building weed $VERSION with $("$go" version | cut -d' ' -f3-) (first run only, ~6 min on 2 cores; log: $buildlog)"
    # Outside any go.mod or go.work, so nothing of the caller's applies.
    if ! (
        cd "$STATE_ROOT" &&
            export GOWORK=off &&
            "$go" mod download -json "$MODULE@$VERSION" > "$STATE/logs/module.json" &&
            dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' "$STATE/logs/module.json") &&
            [ -n "$dir" ] && [ -d "$dir/weed" ] &&
            echo "source: $dir" &&
            rm -rf "$LIB.partial" && mkdir -p "$LIB.partial" &&
            cd "$dir" &&
            "$go" build -o "$LIB.partial/weed" ./weed
    ) > "$buildlog" 2>&1; then
        cat "$STATE/logs/module.json" >> "$buildlog" 2>/dev/null || true
        tail -n 60 "$buildlog" >&2
        rm -rf "$LIB.partial"
        die "$NAME: building weed failed (full log: $buildlog)"
    fi
    rm -rf "$LIB"
    mv "$LIB.partial" "$LIB"
    printf '%s\n' "$VERSION" > "$LIB/.complete"
    exec 9>&-
    log "$NAME: built $LIB/weed ($("$LIB/weed" version 2>/dev/null | head -n 1 | sed 's/^version //')," \
        "$(du -m "$LIB/weed" | cut -f1) MiB) in $((SECONDS - t0))s"
}

# s3 CURL_ARGS...: a request to the S3 port signed with our key (AWS SigV4,
# as an SDK would sign it). Prints the HTTP status code.
s3() {
    curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" "$@"
}

list_code() { s3 "http://127.0.0.1:$PORT/$BUCKET?list-type=2&max-keys=1" 2>/dev/null || true; }

# answers: a signed ListObjectsV2 on the bucket answers 200.
answers() {
    local code version
    port_open "$PORT" || { echo "seaweedfs: nothing accepts connections on $PORT"; return 1; }
    code=$(list_code)
    [ "$code" = 200 ] || { echo "seaweedfs: listing s3://$BUCKET answered HTTP ${code:-none}"; return 1; }
    version=$(curl -s --max-time 5 "http://127.0.0.1:$MASTER_PORT/dir/status" 2>/dev/null |
        sed -n 's/.*"Version": *"\([^"]*\)".*/\1/p' | sed 's/ *$//')
    echo "seaweedfs: s3://$BUCKET lists, version ${version:-?}"
}

ready() { answers >/dev/null 2>&1; }

# bucket_ready: the bucket lists and takes a write; if S3 answers but the
# bucket is missing, create it first (200 created, 409 it already exists).
bucket_ready() {
    port_open "$PORT" || return 1
    local code
    code=$(list_code)
    [ "$code" = 200 ] && { writable; return; }
    [ "$code" = 404 ] || return 1
    code=$(s3 -X PUT "http://127.0.0.1:$PORT/$BUCKET" 2>/dev/null || true)
    case $code in
        200) log "$NAME: created bucket $BUCKET" ;;
        409) ;;
        *) return 1 ;;
    esac
    [ "$(list_code)" = 200 ] && writable
}

# writable: an object can be written and deleted. Listing needs only the
# filer; a write needs a volume server that registered with free slots, and
# one that finds its disk "low" registers none (every write then fails,
# which the archive tests would only see as missing messages).
writable() {
    local key="$BUCKET/.tern-start-probe" code
    # curl signs no body hash, so the body is declared unsigned (as S3 allows).
    code=$(s3 -X PUT -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --data-binary probe \
        "http://127.0.0.1:$PORT/$key" 2>/dev/null || true)
    [ "$code" = 200 ] || return 1
    code=$(s3 -X DELETE "http://127.0.0.1:$PORT/$key" 2>/dev/null || true)
    [ "$code" = 204 ] || [ "$code" = 200 ]
}

fail_start() {
    local pid=$1 msg=$2
    echo "----- last 80 lines of $LOG -----" >&2
    tail -n 80 "$LOG" >&2 || true
    echo "-----" >&2
    if [ -n "$pid" ] && pid_alive "$pid"; then stop_pid "$NAME" "$pid" 5 >&2; fi
    rm -f "$PIDFILE"
    die "$NAME: $msg"
}

check_curl() {
    command -v curl >/dev/null || die "$NAME: curl not found (apt-get install -y curl); it signs the S3 probes"
    curl --help all 2>/dev/null | grep -q -- '--aws-sigv4' ||
        die "$NAME: this curl cannot sign S3 requests (--aws-sigv4 needs curl 7.75+)"
}

start() {
    lock_start "$NAME"
    check_curl
    local pid weed p rc=0
    pid=$(our_pid)
    if [ -n "$pid" ]; then
        if ready; then
            log "$NAME: already running (pid $pid) and answering on 127.0.0.1:$PORT"
            return 0
        fi
        log "$NAME: pid $pid is up but s3://$BUCKET does not list yet; waiting"
        wait_until "$START_TIMEOUT" "$pid" bucket_ready || rc=$?
        [ "$rc" = 0 ] && { log "$NAME: ready (pid $pid)"; return 0; }
        echo "----- last 80 lines of $LOG -----" >&2
        tail -n 80 "$LOG" >&2 || true
        die "$NAME: pid $pid did not become ready; run infra/down and try again"
    fi
    rm -f "$PIDFILE"
    for p in "$PORT" "$MASTER_PORT" "$VOLUME_PORT" "$FILER_PORT" \
        $((PORT + GRPC_OFFSET)) $((MASTER_PORT + GRPC_OFFSET)) \
        $((VOLUME_PORT + GRPC_OFFSET)) $((FILER_PORT + GRPC_OFFSET)); do
        if port_open "$p"; then
            die "$NAME: port $p is taken by another process $(port_owner "$p"); stop it first"
        fi
    done

    mkdir -p "$STATE/logs"
    [ -n "${WEED:-}" ] || build
    weed=$(weed_bin)

    # Fresh data every start, as for the other servers: tests expect an empty
    # bucket and use their own key prefixes anyway.
    rm -rf "$STATE/data"
    mkdir -p "$STATE/data"
    rotate_log "$LOG"
    # The one identity. With any identity configured, anonymous requests are
    # refused, so clients must sign as they would against real S3.
    printf '{"identities":[{"name":"tern","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
        "$ACCESS_KEY" "$SECRET_KEY" > "$STATE/s3.json"

    log "$NAME: starting on 127.0.0.1:$PORT (S3), master $MASTER_PORT, volume $VOLUME_PORT, filer $FILER_PORT"
    # -logtostderr: glog would otherwise write its files to /tmp.
    # -volume.max/-master.volumeSizeLimitMB: every bucket is a collection that
    # takes 7 volume slots at its first write, and the filer needs some for
    # its own log; the default 8 slots of 30 GiB leave no room for a second
    # bucket. Volume files are sparse, so unused slots cost no disk.
    # -volume.minFreeSpace: by default a disk under 1% free makes the volume
    # server register no writable slot, and every S3 write fails; a test
    # machine's big, nearly full disk can have GiBs left under 1%.
    # -s3.port.iceberg/-s3.port.lance=0: catalogs we do not use (8181, 9101).
    # -master.telemetry=false: no usage reports to seaweedfs.com.
    # HOME: weed reads master.toml, security.toml... from ~/.seaweedfs too;
    # the working directory and HOME are our state folder, so none applies.
    # setsid: own session, so a Ctrl-C aimed at the caller does not reach the
    # server. It execs (no fork) here, so $! is weed's pid.
    (
        cd "$STATE"
        close_fds
        export HOME=$STATE
        exec setsid "$weed" -logtostderr server \
            -dir="$STATE/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -master.port="$MASTER_PORT" -master.port.grpc=$((MASTER_PORT + GRPC_OFFSET)) \
            -volume.port="$VOLUME_PORT" -volume.port.grpc=$((VOLUME_PORT + GRPC_OFFSET)) \
            -filer.port="$FILER_PORT" -filer.port.grpc=$((FILER_PORT + GRPC_OFFSET)) \
            -s3 -s3.port="$PORT" -s3.port.grpc=$((PORT + GRPC_OFFSET)) \
            -s3.config="$STATE/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 \
            -volume.max=100 -master.volumeSizeLimitMB=128 -volume.preStopSeconds=0 \
            -volume.minFreeSpace=256MiB \
            -master.telemetry=false
    ) > "$LOG" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$PIDFILE"

    local t0=$SECONDS
    wait_until "$START_TIMEOUT" "$pid" bucket_ready || rc=$?
    case $rc in
        0) log "$NAME: ready in $((SECONDS - t0))s (pid $pid); $(answers 2>&1)" ;;
        1) fail_start "" "exited during start-up (see $LOG)" ;;
        *)
            local why="s3://$BUCKET does not list"
            [ "$(list_code)" = 200 ] && why="s3://$BUCKET lists but takes no write (no writable volume: is the disk full? $(df -h --output=avail "$STATE" | tail -n 1 | tr -d ' ') free)"
            fail_start "$pid" "not ready after ${START_TIMEOUT}s: $why (see $LOG)"
            ;;
    esac
}

case "${1:-}" in
    build)
        if [ -z "${WEED:-}" ] && built; then
            log "$NAME: weed $VERSION already built ($LIB/weed)"
        else
            build
        fi
        ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    shell)
        shift
        [ -n "$(our_pid)" ] || die "$NAME: not running (infra/seaweedfs/run.sh start)"
        cd "$STATE" && HOME=$STATE exec "$(weed_bin)" -logtostderr shell -master="127.0.0.1:$MASTER_PORT" "$@"
        ;;
    *) echo "usage: $0 build|start|stop|status|shell" >&2; exit 2 ;;
esac
