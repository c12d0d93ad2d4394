#!/usr/bin/env bash
# Image pull benchmark: keel's native image service against containerd, same image, same local
# registry, same run. The image (~100 MB, 4 layers of random, incompressible bytes on busybox) is
# built with umoci and pushed with skopeo to the environment's docker-registry; then, RUNS times
# each: `keel images pull` into an empty store, `ctr -n k8s.io images pull --plain-http` and
# `crictl pull` (CRI) into containerd with the image and its content removed first. Reported:
# wall time of each pull, and the on-disk size of what it stored (keel: content + snapshots;
# containerd: growth of its content store + overlayfs snapshotter).
#
# Needs a running scripts/containerd-env.sh environment (source its env: KEEL_CRI_SOCKET,
# KEEL_TEST_REGISTRY, KEEL_CONTAINERD_DIR). Usage:
#   bash scripts/bench-pull.sh [KEEL_BINARY]      (default target/release/keel)
#   KEEL_BENCH_PULL_RUNS (default 3), KEEL_BENCH_PULL_MB per layer (default 25)
set -euo pipefail
cd "$(dirname "$0")/.."

KEEL_BIN=${1:-target/release/keel}
RUNS=${KEEL_BENCH_PULL_RUNS:-3}
LAYER_MB=${KEEL_BENCH_PULL_MB:-25}
: "${KEEL_CRI_SOCKET:?source the containerd-env.sh env first}"
: "${KEEL_TEST_REGISTRY:?source the containerd-env.sh env first}"
: "${KEEL_CONTAINERD_DIR:?source the containerd-env.sh env first}"
[ -x "$KEEL_BIN" ] || { echo "bench-pull: $KEEL_BIN not built" >&2; exit 1; }
CRICTL=${CRICTL:-$(command -v crictl || echo /work/shared/tools/crictl)}
SOCK=${KEEL_CRI_SOCKET#unix://}
CTR=(ctr -a "$SOCK" -n k8s.io)
IMAGE="$KEEL_TEST_REGISTRY/bench/pull:$(date +%s)"

WORK=$(mktemp -d /tmp/keel-bench-pull.XXXX)
cleanup() {
  [ -z "${baseline:-}" ] || ctrd_clear || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- the image: busybox plus 4 layers of random bytes ---------------------------------------------
layout="$WORK/layout"
umoci init --layout "$layout"
umoci new --image "$layout:v1"
busybox=$(command -v busybox)
for i in 1 2 3 4; do
  bundle="$WORK/bundle$i"
  umoci unpack --image "$layout:v1" "$bundle" >/dev/null
  mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/data"
  [ -e "$bundle/rootfs/bin/busybox" ] || cp "$busybox" "$bundle/rootfs/bin/busybox"
  head -c "$((LAYER_MB * 1024 * 1024))" /dev/urandom >"$bundle/rootfs/data/blob$i"
  umoci repack --image "$layout:v1" "$bundle"
  rm -rf "$bundle"
done
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$layout:v1" "docker://$IMAGE"
compressed=$(skopeo inspect --tls-verify=false --raw "docker://$IMAGE" |
  python3 -c 'import json,sys; m=json.load(sys.stdin); print(sum(l["size"] for l in m["layers"]))')

# --- timing helpers ----------------------------------------------------------------------------------
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
du_b() { du -sb "$@" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

ctrd_root="$KEEL_CONTAINERD_DIR/root"
ctrd_dirs=("$ctrd_root/io.containerd.content.v1.content" "$ctrd_root/io.containerd.snapshotter.v1.overlayfs")
# The CRI plugin adds `repo@digest` and `sha256:<id>` names beside the tag: every name that was
# not there before the bench goes, with --sync so containerd's GC frees content and snapshots.
baseline=$("${CTR[@]}" images ls -q)
ctrd_clear() {
  local name
  for name in $("${CTR[@]}" images ls -q); do
    grep -qxF "$name" <<<"$baseline" || "${CTR[@]}" images rm --sync "$name" >/dev/null
  done
  sync
}

keel_t=() ctr_t=() cri_t=()
keel_size=0 ctr_size=0 cri_size=0
for run in $(seq 1 "$RUNS"); do
  root="$WORK/keel-root"
  rm -rf "$root"
  sync
  t0=$(now)
  "$KEEL_BIN" images pull -q --root-dir "$root" "$IMAGE" >/dev/null
  t1=$(now)
  sync
  keel_t+=("$(secs "$t0" "$t1")")
  keel_size=$(du_b "$root/native/images/content" "$root/native/images/snapshots")

  ctrd_clear
  before=$(du_b "${ctrd_dirs[@]}")
  t0=$(now)
  "${CTR[@]}" images pull --plain-http "$IMAGE" >/dev/null
  t1=$(now)
  sync
  ctr_t+=("$(secs "$t0" "$t1")")
  ctr_size=$(($(du_b "${ctrd_dirs[@]}") - before))

  ctrd_clear
  before=$(du_b "${ctrd_dirs[@]}")
  t0=$(now)
  "$CRICTL" --runtime-endpoint "unix://$SOCK" pull "$IMAGE" >/dev/null
  t1=$(now)
  sync
  cri_t+=("$(secs "$t0" "$t1")")
  cri_size=$(($(du_b "${ctrd_dirs[@]}") - before))
  echo "pull run $run: keel ${keel_t[-1]} s, ctr ${ctr_t[-1]} s, crictl ${cri_t[-1]} s" >&2
done
ctrd_clear
rm -rf "$WORK/keel-root"

echo "image: 4 random layers of $LAYER_MB MiB on busybox, $(mib "$compressed") compressed, local docker-registry (plain HTTP)"
printf '| %s | %s | %s | %s |\n' "client" "pull time, median of $RUNS (all)" "stored on disk" "what is stored"
echo "|---|---|---|---|"
printf '| keel images pull (native store) | %s s (%s) | %s | content (manifest, config) + unpacked layers |\n' \
  "$(printf '%s\n' "${keel_t[@]}" | median)" "${keel_t[*]}" "$(mib "$keel_size")"
printf '| ctr images pull --plain-http | %s s (%s) | %s | content (compressed layers) + overlayfs snapshots |\n' \
  "$(printf '%s\n' "${ctr_t[@]}" | median)" "${ctr_t[*]}" "$(mib "$ctr_size")"
printf '| crictl pull (CRI) | %s s (%s) | %s | content (compressed layers) + overlayfs snapshots |\n' \
  "$(printf '%s\n' "${cri_t[@]}" | median)" "${cri_t[*]}" "$(mib "$cri_size")"
