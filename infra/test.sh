#!/usr/bin/env bash
# The project's one test command (`make test`, and what CI runs).
# On a fresh machine of our kind it builds everything, installs and starts
# what the tests need (Kafka, Cassandra, Redis and SeaweedFS through infra/up:
# Maven Central jars, Debian's redis-server, weed built from source with Go),
# runs every test, and stops the servers again. Set TERN_KEEP_INFRA=1 to leave
# the servers running.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

# Build first: on 2 cores the build and the JVMs' start-up would fight.
cargo build --workspace --all-targets --locked
# The Helm chart, offline (helm and kubernetes-validate are installed on
# first use; no cluster needed).
if ! helm/test.sh; then
    echo "chart checks failed" >&2
    exit 1
fi
# weed too, before the servers start: the first time on a machine it is a
# ~6 min Go build (cached in infra/seaweedfs/lib/ after that, a no-op), and
# here its time shows on its own line instead of inside infra/up.
if ! infra/seaweedfs/run.sh build; then
    echo "building weed (SeaweedFS) failed" >&2
    exit 1
fi

if ! infra/up; then
    echo "infra/up failed; server logs follow" >&2
    infra/logs >&2 || true
    exit 1
fi
if [ "${TERN_KEEP_INFRA:-0}" != 1 ]; then
    trap 'infra/down >/dev/null 2>&1 || true' EXIT
fi

# The real-backend tests run only when these are set (and fail if the
# server they name is down).
export TERN_TEST_KAFKA=127.0.0.1:9092
export TERN_TEST_CQL=127.0.0.1:9042
export TERN_TEST_REDIS=redis://127.0.0.1:6379/
export TERN_TEST_S3_ENDPOINT=http://127.0.0.1:8333
export TERN_TEST_S3_BUCKET=tern-archive
export TERN_TEST_S3_ACCESS_KEY=tern-test
export TERN_TEST_S3_SECRET_KEY=tern-test-secret

if ! cargo test --workspace --locked -- --test-threads "${TEST_THREADS:-2}"; then
    echo "tests failed; server logs follow" >&2
    infra/logs >&2 || true
    exit 1
fi

# Last, alone: tests that pause or restart the shared servers.
if ! TERN_TEST_OUTAGES=1 cargo test -p tern-server --locked --test outages -- --test-threads 1; then
    echo "outage tests failed; server logs follow" >&2
    infra/logs >&2 || true
    exit 1
fi
