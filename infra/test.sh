#!/usr/bin/env bash
# The project's one test command (`make test`, and what CI runs).
# It sets up everything the tests need on a fresh machine of our kind, then
# runs them. Today the tests need only the Rust toolchain: the embedded
# pipeline has no external servers. When the Kafka/Cassandra/Redis tests
# land, this script starts those servers through infra/ first.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

# Build once up front, so test timings and failures are about tests.
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads "${TEST_THREADS:-2}"
