#!/usr/bin/env bash
# Runs keel on its embedded default: standalone (no API server), the static pods in
# examples/static-pods, the simulated backend. Pod status changes are printed on stdout.
# State goes to ./.keel-run (delete it to start afresh). Ctrl-C stops keel.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --quiet
exec ./target/release/keel run --standalone \
  --pod-manifest-path examples/static-pods \
  --root-dir "$PWD/.keel-run/root" \
  --pod-logs-dir "$PWD/.keel-run/pods" \
  "$@"
