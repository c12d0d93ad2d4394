#!/usr/bin/env bash
# keel's benchmarks with their set-up: the criterion hot-path benches, the end-to-end bench
# (test API server + release keel: simulated backend, a private real containerd, and keel's
# native backend on the same runc, CNI bridge and images, in one run: create→Ready for 1 and 20
# pods, and the footprint with 20 pods: keel + monitors vs keel + containerd + shims) and the CRI
# call latency of `keel cri` beside that containerd, then the figures as tables.
# KEEL_BENCH_BACKENDS=sim,cri,native picks the e2e backends; KEEL_BENCH_STEPS picks the parts
# (default hot,stats,e2e,cri,pull,exec; exec: `kubectl exec POD -- true` through the real
# kube-apiserver v1.24 to keel and to the stock kubelet v1.24 on the same containerd,
# benches/exec_kubelet.rs). Usage: bash scripts/bench.sh [--quick]
#   --quick: criterion's short sampling, 3 single-pod runs, 10 s CPU window, 200 pods on the sim.
# keel under test is the shipped release build (`cargo build --release`, Cargo.toml's profile),
# also as the monitors the native backend re-executes; the e2e and CRI-latency harnesses (test
# API server, CRI client) are built in the dev profile and run it through KEEL_BIN, so that one
# fat-LTO build serves the whole run. The criterion benches measure keel's code in their own
# process and are built with the bench (release) profile.
# Output is also saved to target/bench-report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--quick" ]; then
  export KEEL_BENCH_SINGLE_RUNS="${KEEL_BENCH_SINGLE_RUNS:-3}"
  export KEEL_BENCH_CPU_SECS="${KEEL_BENCH_CPU_SECS:-10}"
  export KEEL_BENCH_MANY_PODS="${KEEL_BENCH_MANY_PODS:-200}"
  CRITERION_ARGS=(--warm-up-time 1 --measurement-time 2)
else
  CRITERION_ARGS=()
fi

bash scripts/setup.sh

KEEL_CTRD_DIR=$(mktemp -d /tmp/keel-bench.XXXX)
export KEEL_TEST_CGROUP_ROOT="${KEEL_TEST_CGROUP_ROOT:-/keel-test/${KEEL_CTRD_DIR##*/}}"
ctrd_down() {
  local rc=$?
  trap - EXIT INT TERM
  [ -z "${KEEL_ENVTEST_ASSETS:-}" ] || rm -rf "$KEEL_ENVTEST_ASSETS"
  if ! bash scripts/containerd-env.sh down "$KEEL_CTRD_DIR"; then
    echo "bench.sh: containerd environment teardown left something behind" >&2
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

STEPS=",${KEEL_BENCH_STEPS:-hot,stats,e2e,cri,pull,exec},"
step() { [[ "$STEPS" == *",$1,"* ]]; }

# The real control plane and the stock kubelet for the exec step, as scripts/test.sh links them.
if step exec && [ -z "${KUBEBUILDER_ASSETS:-}" ] && [ -x ../shared/envtest/kube-apiserver ] && [ -x /usr/bin/etcd ]; then
  KEEL_ENVTEST_ASSETS=$(mktemp -d /tmp/keel-envtest-assets.XXXX)
  for b in kube-apiserver kube-controller-manager kubelet; do
    ln -s "$(cd ../shared/envtest && pwd)/$b" "$KEEL_ENVTEST_ASSETS/$b"
  done
  ln -s /usr/bin/etcd "$KEEL_ENVTEST_ASSETS/etcd"
  export KUBEBUILDER_ASSETS="$KEEL_ENVTEST_ASSETS"
fi

echo "== cargo build --release (keel under test)"
cargo build --release --bin keel
# A copy of its own: `cargo bench` below puts its bench-profile keel (dependencies' features
# unified with the dev-dependencies') at the same target/release/keel.
install -D -m 0755 target/release/keel target/bench-bin/keel
export KEEL_BIN="$PWD/target/bench-bin/keel"
if step hot || step stats; then
  echo "== cargo bench --no-run (criterion benches, bench profile)"
  cargo bench --no-run --bench hot_paths --bench stats
fi
if step e2e || step cri || step exec; then
  echo "== cargo test --no-run (e2e, CRI-latency and exec harnesses, dev profile)"
  cargo test --no-run --bench e2e --bench cri_latency --bench exec_kubelet
fi

REPORT=target/bench-report.txt
{
  echo "# keel benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "# commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (with uncommitted changes)'), load average at start $(uptime | sed 's/.*load average: //')"
  echo "# keel binary $KEEL_BIN: $(stat -c %s "$KEEL_BIN" | awk '{printf "%.1f MiB (%d bytes)", $1/1048576, $1}'), $(file -b "$KEEL_BIN" | cut -d, -f1-2)"
  if step hot; then
    echo
    echo "== hot paths (criterion)"
    cargo bench --bench hot_paths -- "${CRITERION_ARGS[@]}" 2>&1 | grep -E '^[a-z_]+/[a-z0-9_]+|time:' | sed -E 's/ +/ /g'
  fi
  if step stats; then
    echo
    echo "== stats summary, 100 sim pods (criterion)"
    cargo bench --bench stats -- "${CRITERION_ARGS[@]}" 2>&1 | grep -E '^[a-z_]+/[a-z0-9_]+|time:' | sed -E 's/ +/ /g'
  fi
  if step e2e; then
    echo
    echo "== end to end"
    cargo test --bench e2e 2>&1 | grep --line-buffered -v -E '^\s*(Finished|Running|Compiling)'
  fi
  if step cri; then
    echo
    echo "== CRI call latency: keel cri --runtime sim beside containerd"
    cargo test --bench cri_latency 2>&1 | grep --line-buffered -v -E '^\s*(Finished|Running|Compiling)'
  fi
  if step exec; then
    echo
    echo "== exec round trip: keel beside the stock kubelet v1.24 (real kube-apiserver, same containerd)"
    cargo test --bench exec_kubelet 2>&1 | grep --line-buffered -v -E '^\s*(Finished|Running|Compiling)'
  fi
  if step pull; then
    echo "== image pull: keel native vs containerd (scripts/bench-pull.sh)"
    bash scripts/bench-pull.sh "$KEEL_BIN"
  fi
  echo
  echo "# load average at end $(uptime | sed 's/.*load average: //')"
} | tee "$REPORT"
