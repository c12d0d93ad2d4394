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

echo "== fuzz targets, bounded (scripts/fuzz.sh)"
bash scripts/fuzz.sh

# A private real containerd + runc + CNI + registry for the CRI tests (scripts/containerd-env.sh),
# torn down on every exit path. Short path: unix socket paths are limited to 108 bytes.
KEEL_CTRD_DIR=$(mktemp -d /tmp/keel-ctrd.XXXX)
# Pod cgroups of this run live under their own parent, so parallel runs never remove each other's.
export KEEL_TEST_CGROUP_ROOT="${KEEL_TEST_CGROUP_ROOT:-/keel-test/${KEEL_CTRD_DIR##*/}}"
ctrd_down() {
  local rc=$?
  trap - EXIT INT TERM
  if ! bash scripts/containerd-env.sh down "$KEEL_CTRD_DIR"; then
    echo "test.sh: containerd environment teardown left something behind" >&2
    [ "$rc" -ne 0 ] || rc=1
  fi
  exit "$rc"
}
trap ctrd_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
echo "== containerd environment ($KEEL_CTRD_DIR)"
bash scripts/containerd-env.sh up "$KEEL_CTRD_DIR"
# shellcheck source=/dev/null
. "$KEEL_CTRD_DIR/env"

echo "== cargo test"
# e2e tests start many keel processes; two test threads per core keep the 2-core machines busy
# without starving keel's own timers.
# Benches (benches/) are built by clippy above and run by scripts/bench.sh, not here.
cargo test --lib --bins --tests -- --test-threads="${KEEL_TEST_THREADS:-4}"
