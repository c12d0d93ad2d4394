#!/usr/bin/env bash
# keel's whole test suite with its set-up: unit, integration and e2e tests (simulated backend,
# the test API server, real kubectl), plus format and lint checks. Cleans up after itself: every
# test owns a private temp dir and kills what it started by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --check

echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

echo "== cargo test"
# e2e tests start many keel processes; two test threads per core keep the 2-core machines busy
# without starving keel's own timers.
cargo test --all-targets -- --test-threads="${KEEL_TEST_THREADS:-4}"
