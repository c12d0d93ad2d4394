#!/usr/bin/env bash
# keel's whole test suite with its set-up: unit, integration and e2e tests (simulated backend,
# the test API server, real kubectl), plus format and lint checks. Cleans up after itself: every
# test owns a private temp dir and kills what it started by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

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
  [ -z "${KEEL_ENVTEST_ASSETS:-}" ] || rm -rf "$KEEL_ENVTEST_ASSETS"
  [ -z "${envtest_summary:-}" ] || echo "== $envtest_summary"
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

# The real API server tier (tests/support/envtest): kube-apiserver, kube-controller-manager and
# etcd in $KUBEBUILDER_ASSETS (controller-runtime's envtest convention); without it, the v1.24
# binaries of ../shared/envtest and Debian's etcd, linked into a temp assets dir.
if ! command -v etcd >/dev/null 2>&1; then
  echo "== installing etcd-server"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; } \
    || echo "test.sh: could not install etcd-server" >&2
fi
envtest_summary="real API server tier skipped: no assets (set KUBEBUILDER_ASSETS)"
if [ -z "${KUBEBUILDER_ASSETS:-}" ] && [ -x ../shared/envtest/kube-apiserver ] \
  && [ -x ../shared/envtest/kube-controller-manager ] && [ -x /usr/bin/etcd ]; then
  KEEL_ENVTEST_ASSETS=$(mktemp -d /tmp/keel-envtest-assets.XXXX)
  ln -s "$(cd ../shared/envtest && pwd)/kube-apiserver" "$KEEL_ENVTEST_ASSETS/kube-apiserver"
  ln -s "$(cd ../shared/envtest && pwd)/kube-controller-manager" "$KEEL_ENVTEST_ASSETS/kube-controller-manager"
  ln -s /usr/bin/etcd "$KEEL_ENVTEST_ASSETS/etcd"
  # The stock kubelet, for the tests that run it on `keel cri` (tests/e2e/real_kubelet_on_keel_cri.rs).
  [ ! -x ../shared/envtest/kubelet ] || ln -s "$(cd ../shared/envtest && pwd)/kubelet" "$KEEL_ENVTEST_ASSETS/kubelet"
  export KUBEBUILDER_ASSETS="$KEEL_ENVTEST_ASSETS"
fi
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  envtest_summary="real API server tier: assets in $KUBEBUILDER_ASSETS ($("$KUBEBUILDER_ASSETS/kube-apiserver" --version 2>/dev/null || echo "kube-apiserver missing"))"
fi
echo "== $envtest_summary"

echo "== cargo test"
# e2e tests start many keel processes; two test threads per core keep the 2-core machines busy
# without starving keel's own timers.
# Benches (benches/) are built by clippy above and run by scripts/bench.sh, not here.
cargo test --lib --bins --tests -- --test-threads="${KEEL_TEST_THREADS:-4}"
