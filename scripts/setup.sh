#!/usr/bin/env bash
# Installs what building and testing keel needs on a fresh Debian machine (idempotent).
# Needs root for apt-get; skips anything already present.
set -euo pipefail

need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo (Rust toolchain) is required" >&2; exit 1; }
command -v kubectl >/dev/null 2>&1 || echo "setup: warning: kubectl not found; e2e tests need it" >&2
echo "setup: ok"
