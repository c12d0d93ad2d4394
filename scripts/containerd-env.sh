#!/usr/bin/env bash
# A private, real CRI runtime environment for keel's tests: containerd (CRI plugin) + runc + CNI
# bridge networking + a local docker-registry, with deterministic busybox test images built offline.
#
#   scripts/containerd-env.sh up DIR     install what is missing, start everything under DIR,
#                                        write DIR/env (source it to get KEEL_* variables)
#   scripts/containerd-env.sh down DIR   stop and remove everything `up` (and tests) created
#   scripts/containerd-env.sh restart DIR  stop containerd (by its PID file) and start it again
#                                        exactly as `up` does; shims and containers keep running
#
# Both are idempotent. Everything lives under DIR except what is global by nature (the CNI bridge,
# pod cgroups, portmap iptables rules, libcni's result cache, shim sockets in /run/containerd/s);
# `down` removes those by the names and IDs this DIR recorded, never by pattern alone.
# Facts and workarounds for these machines: /work/shared/reference/containerd-here.md.
# Needs root. Keep DIR short: unix socket paths are limited to 108 bytes.
set -euo pipefail
# Note: never `cmd | grep -q` here: with pipefail, grep's early exit makes cmd die of SIGPIPE and
# the pipeline fail at random. Match on captured output instead.

PROG="containerd-env"
# Marks a directory as ours, so `down` never deletes a directory it did not create.
MARKER=".keel-containerd-env"
SOCKET_WAIT_SECS=20
REGISTRY_WAIT_SECS=20
STOP_WAIT_SECS=10
# Bridges keelbr0..keelbrN on subnets 10.(89+i).0.0/16: each environment claims a free one, so
# several environments (parallel test runs) can coexist on one machine.
BRIDGE_PREFIX="keelbr"
BRIDGE_MAX=31
SUBNET_BASE=89
PACKAGES=(containerd runc containernetworking-plugins docker-registry busybox-static skopeo umoci apache2-utils iptables
  ca-certificates curl tar gzip coreutils iproute2 util-linux mount findutils mawk)
# Applets the test images must have, checked after building (sh, echo, ... : see tests/README.md).
REQUIRED_APPLETS=(sh echo sleep cat ls id env true false printf wc head tail md5sum sha256sum grep kill)
BUSYBOX_TAG="1.36"
PAUSE_IMAGE="localhost/pause:1"
BUSYBOX_IMAGE="docker.io/library/busybox:${BUSYBOX_TAG}"

log() { echo "$PROG: $*" >&2; }
die() { echo "$PROG: error: $*" >&2; exit 1; }
warn() { echo "$PROG: warning: $*" >&2; }

usage() {
  echo "usage: $0 up|down|restart DIR" >&2
  exit 2
}

# --- small helpers ------------------------------------------------------------------------------

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
size_of() { stat -c %s "$1"; }

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

read_pid() {
  local f=$1
  [ -s "$f" ] || return 1
  local pid
  pid=$(tr -dc '0-9' <"$f")
  [ -n "$pid" ] || return 1
  echo "$pid"
}

# True when PID runs EXE (guards against PID reuse before we signal anything).
pid_runs() {
  local pid=$1 exe=$2
  pid_alive "$pid" || return 1
  local cmd
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmd" == *"$exe"* ]]
}

# Stop PID (if it still runs EXE): TERM, wait, then KILL.
stop_pid() {
  local pid=$1 exe=$2 what=$3
  if ! pid_runs "$pid" "$exe"; then
    return 0
  fi
  log "stopping $what (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < STOP_WAIT_SECS * 10; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  warn "$what (pid $pid) did not exit after ${STOP_WAIT_SECS}s; sending KILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  warn "$what (pid $pid) survived KILL"
  return 1
}

json_escape() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '%s' "$s"
}

# --- install ------------------------------------------------------------------------------------

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get to install them"
  [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]}; run as root to install them"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get -o DPkg::Lock::Timeout=300 -q) apt_log
  apt_log=$(mktemp /tmp/keel-ctrd-apt.XXXXXX)
  if ! "${apt[@]}" update -qq >"$apt_log" 2>&1; then
    tail -n 30 "$apt_log" >&2
    rm -f "$apt_log"
    die "apt-get update failed"
  fi
  # Without a policy-rc.d, docker-registry's init script would start a system-wide registry
  # (port 5000) that nobody stops. We run private instances only, so deny service starts for the
  # duration of the install (as Docker images do), and restore the machine after.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# Temporary, from keel scripts/containerd-env.sh: no service starts.\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  local ok=1
  "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1 || ok=0
  if [ "$own_policy" -eq 1 ]; then
    rm -f "$policy"
    trap - EXIT
  fi
  if [ "$ok" -ne 1 ]; then
    tail -n 30 "$apt_log" >&2
    rm -f "$apt_log"
    die "apt-get install ${missing[*]} failed"
  fi
  rm -f "$apt_log"
}

check_tools() {
  local t
  for t in containerd ctr containerd-shim-runc-v2 runc docker-registry skopeo umoci htpasswd iptables iptables-save \
    iptables-restore ip ss curl tar gzip sha256sum setsid umount find awk; do
    command -v "$t" >/dev/null 2>&1 || die "required tool '$t' not found after install"
  done
  local plugin
  for plugin in bridge host-local portmap loopback; do
    [ -x "/usr/lib/cni/$plugin" ] || die "CNI plugin /usr/lib/cni/$plugin missing"
  done
  busybox_static >/dev/null
}

busybox_static() {
  local b
  b=$(dpkg-query -L busybox-static 2>/dev/null | grep -E '/bin/busybox$' | head -n1) || true
  if [ -z "$b" ] || [ ! -x "$b" ]; then
    die "busybox-static's /bin/busybox not found"
  fi
  echo "$b"
}

# --- layout -------------------------------------------------------------------------------------

prepare_dir() {
  mkdir -p "$DIR"
  if [ ! -e "$DIR/$MARKER" ]; then
    if [ -n "$(ls -A "$DIR")" ]; then
      die "$DIR is not empty and was not created by $PROG; refusing to use it"
    fi
    : >"$DIR/$MARKER"
  fi
  mkdir -p "$DIR/root" "$DIR/state" "$DIR/opt" "$DIR/cni/net.d" "$DIR/cni/ipam" "$DIR/certs.d" \
    "$DIR/registry/data" "$DIR/images"
  chmod 0711 "$DIR"
}

# --- CNI ----------------------------------------------------------------------------------------

subnet_in_use() {
  local prefix=$1
  grep -q "^${prefix//./\\.}\." <<<"$(ip -4 route show)" && return 0
  grep -q "inet ${prefix//./\\.}\." <<<"$(ip -4 addr show)" && return 0
  return 1
}

# Claim a bridge: `ip link add` is atomic, so two concurrent `up`s never get the same one.
claim_bridge() {
  if [ -s "$DIR/bridge" ]; then
    BRIDGE=$(cat "$DIR/bridge")
    SUBNET_PREFIX=$(cat "$DIR/subnet-prefix")
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
      return 0
    fi
    ip link add "$BRIDGE" type bridge || die "cannot re-create bridge $BRIDGE"
    return 0
  fi
  local i
  for ((i = 0; i <= BRIDGE_MAX; i++)); do
    local br="${BRIDGE_PREFIX}${i}" prefix="10.$((SUBNET_BASE + i))"
    ip link show "$br" >/dev/null 2>&1 && continue
    subnet_in_use "$prefix" && continue
    if ip link add "$br" type bridge 2>/dev/null; then
      BRIDGE=$br
      SUBNET_PREFIX=$prefix
      echo "$BRIDGE" >"$DIR/bridge"
      echo "$SUBNET_PREFIX" >"$DIR/subnet-prefix"
      return 0
    fi
  done
  die "no free bridge name ${BRIDGE_PREFIX}0..${BRIDGE_MAX} (leftovers of earlier runs? see 'ip link')"
}

write_cni_config() {
  CNI_NETWORK="keel-${BRIDGE}"
  cat >"$DIR/cni/net.d/10-keel.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "${CNI_NETWORK}",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "${SUBNET_PREFIX}.0.0/16", "gateway": "${SUBNET_PREFIX}.0.1" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$(json_escape "$DIR/cni/ipam")"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "loopback" }
  ]
}
EOF
}

# --- containerd ---------------------------------------------------------------------------------

write_containerd_config() {
  local runc_bin
  runc_bin=$(command -v runc)
  cat >"$DIR/containerd.toml" <<EOF
# Generated by scripts/containerd-env.sh: a private containerd for keel's tests.
version = 2
root = "$DIR/root"
state = "$DIR/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # No CAP_SYS_RESOURCE here: a negative oom_score_adj for the pause container would fail.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$runc_bin"
        Root = "$DIR/state/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$DIR/certs.d"
EOF
}

ctr_() { ctr -a "$SOCK" "$@"; }

containerd_answers() { ctr_ version >/dev/null 2>&1; }

start_containerd() {
  local pid
  if pid=$(read_pid "$DIR/containerd.pid") && pid_runs "$pid" containerd && containerd_answers; then
    log "containerd already running (pid $pid)"
    return 0
  fi
  if pid=$(read_pid "$DIR/containerd.pid"); then
    stop_pid "$pid" containerd containerd || true
  fi
  rm -f "$SOCK" "$SOCK.ttrpc"
  log "starting containerd on $SOCK"
  setsid containerd --config "$DIR/containerd.toml" >>"$DIR/containerd.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$DIR/containerd.pid"
  local i
  for ((i = 0; i < SOCKET_WAIT_SECS * 10; i++)); do
    if ! pid_alive "$pid"; then
      tail -n 30 "$DIR/containerd.log" >&2 || true
      die "containerd exited during start-up (log: $DIR/containerd.log)"
    fi
    if [ -S "$SOCK" ] && containerd_answers; then
      return 0
    fi
    sleep 0.1
  done
  tail -n 30 "$DIR/containerd.log" >&2 || true
  die "containerd did not answer on $SOCK within ${SOCKET_WAIT_SECS}s (log: $DIR/containerd.log)"
}

# --- registry -----------------------------------------------------------------------------------

port_listening() { [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }

registry_answers() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/v2/" 2>/dev/null; }

write_registry_config() {
  local port=$1
  cat >"$DIR/registry/config.yml" <<EOF
# Generated by scripts/containerd-env.sh: a private registry for keel's pull tests.
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DIR/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
}

# Starts the registry on a free port; a port taken between the check and the bind is retried.
start_registry() {
  local pid port
  if pid=$(read_pid "$DIR/registry.pid") && [ -s "$DIR/registry.port" ] &&
    pid_runs "$pid" docker-registry && registry_answers "$(cat "$DIR/registry.port")"; then
    REGISTRY_PORT=$(cat "$DIR/registry.port")
    log "registry already running (pid $pid, port $REGISTRY_PORT)"
    return 0
  fi
  if pid=$(read_pid "$DIR/registry.pid"); then
    stop_pid "$pid" docker-registry registry || true
  fi
  local attempt
  for ((attempt = 0; attempt < 10; attempt++)); do
    port=$((20000 + RANDOM % 40000))
    port_listening "$port" && continue
    write_registry_config "$port"
    log "starting docker-registry on 127.0.0.1:$port"
    setsid docker-registry serve "$DIR/registry/config.yml" >>"$DIR/registry.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$DIR/registry.pid"
    echo "$port" >"$DIR/registry.port"
    local i
    for ((i = 0; i < REGISTRY_WAIT_SECS * 10; i++)); do
      pid_alive "$pid" || break
      if registry_answers "$port"; then
        REGISTRY_PORT=$port
        return 0
      fi
      sleep 0.1
    done
    if pid_alive "$pid"; then
      stop_pid "$pid" docker-registry registry || true
      tail -n 20 "$DIR/registry.log" >&2 || true
      die "registry did not answer on 127.0.0.1:$port/v2/ within ${REGISTRY_WAIT_SECS}s"
    fi
    if grep -q 'address already in use' "$DIR/registry.log" 2>/dev/null; then
      warn "port $port was taken; trying another"
      continue
    fi
    tail -n 20 "$DIR/registry.log" >&2 || true
    die "registry exited during start-up (log: $DIR/registry.log)"
  done
  die "could not find a free port for the registry"
}

# --- images -------------------------------------------------------------------------------------

# Deterministic: fixed modes, mtimes, owners and order; gzip without name/time; JSON by hand.
# The same busybox-static package gives the same bytes and digests on every machine.
build_images() {
  local out="$DIR/images"
  if [ -s "$out/images.tar" ] && [ -s "$out/layout/index.json" ]; then
    return 0
  fi
  rm -rf "$out/rootfs" "$out/layout" "$out/work"
  mkdir -p "$out/rootfs" "$out/work"
  local rootfs="$out/rootfs" bb
  bb=$(busybox_static)

  mkdir -p "$rootfs"/{bin,dev,etc,proc,root,sys,tmp}
  cp "$bb" "$rootfs/bin/busybox"
  local applet
  while read -r applet; do
    if [ -n "$applet" ] && [ "$applet" != busybox ]; then
      ln -s busybox "$rootfs/bin/$applet"
    fi
  done < <("$bb" --list | LC_ALL=C sort)
  for applet in "${REQUIRED_APPLETS[@]}"; do
    [ -L "$rootfs/bin/$applet" ] || die "busybox-static lacks the '$applet' applet"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
    >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$rootfs/etc/group"
  chmod 0755 "$rootfs" "$rootfs"/{bin,dev,etc,proc,sys} "$rootfs/bin/busybox"
  chmod 0700 "$rootfs/root"
  chmod 1777 "$rootfs/tmp"
  chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"

  local work="$out/work"
  (cd "$rootfs" && LC_ALL=C tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    --no-acls --no-xattrs --no-selinux -cf "$work/layer.tar" bin dev etc proc root sys tmp)
  gzip -n -6 -c "$work/layer.tar" >"$work/layer.tar.gz"
  local diff_id layer_digest layer_size arch
  diff_id=$(sha256_of "$work/layer.tar")
  layer_digest=$(sha256_of "$work/layer.tar.gz")
  layer_size=$(size_of "$work/layer.tar.gz")
  arch=$(dpkg --print-architecture)

  local blobs="$out/layout/blobs/sha256"
  mkdir -p "$blobs"
  cp "$work/layer.tar.gz" "$blobs/$layer_digest"

  local env='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'
  local history='"history":[{"created":"1970-01-01T00:00:00Z","created_by":"keel scripts/containerd-env.sh: busybox-static rootfs"}]'
  local rootfs_json="\"rootfs\":{\"diff_ids\":[\"sha256:$diff_id\"],\"type\":\"layers\"}"
  printf '{"architecture":"%s","config":{"Cmd":["sh"],%s},"created":"1970-01-01T00:00:00Z",%s,"os":"linux",%s}' \
    "$arch" "$env" "$history" "$rootfs_json" >"$work/busybox-config.json"
  printf '{"architecture":"%s","config":{"Entrypoint":["/bin/busybox","sleep","infinity"],%s},"created":"1970-01-01T00:00:00Z",%s,"os":"linux",%s}' \
    "$arch" "$env" "$history" "$rootfs_json" >"$work/pause-config.json"

  local name cfg_digest cfg_size
  local -A man_digest man_size
  for name in busybox pause; do
    cfg_digest=$(sha256_of "$work/$name-config.json")
    cfg_size=$(size_of "$work/$name-config.json")
    cp "$work/$name-config.json" "$blobs/$cfg_digest"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
      "$cfg_digest" "$cfg_size" "$layer_digest" "$layer_size" >"$work/$name-manifest.json"
    man_digest[$name]=$(sha256_of "$work/$name-manifest.json")
    man_size[$name]=$(size_of "$work/$name-manifest.json")
    cp "$work/$name-manifest.json" "$blobs/${man_digest[$name]}"
  done

  printf '{"imageLayoutVersion":"1.0.0"}' >"$out/layout/oci-layout"
  # io.containerd.image.name names the image for `ctr images import`; ref.name is the tag skopeo's
  # oci:DIR:REF looks up.
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s,%s]}' \
    "$(printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}' \
      "${man_digest[busybox]}" "${man_size[busybox]}" "$BUSYBOX_IMAGE" "$BUSYBOX_TAG")" \
    "$(printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}' \
      "${man_digest[pause]}" "${man_size[pause]}" "$PAUSE_IMAGE" "pause-1")" \
    >"$out/layout/index.json"

  (cd "$out/layout" && LC_ALL=C tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -cf "$out/images.tar.tmp" oci-layout index.json blobs)
  mv "$out/images.tar.tmp" "$out/images.tar"
  rm -rf "$work" "$rootfs"
  log "built images: busybox manifest sha256:${man_digest[busybox]}, pause manifest sha256:${man_digest[pause]}"
}

import_images() {
  log "importing $BUSYBOX_IMAGE and $PAUSE_IMAGE into containerd (namespace k8s.io)"
  ctr_ -n k8s.io images import --snapshotter overlayfs "$DIR/images/images.tar" >/dev/null ||
    die "ctr images import failed"
  local img
  for img in "$BUSYBOX_IMAGE" "$PAUSE_IMAGE"; do
    grep -qxF "$img" <<<"$(ctr_ -n k8s.io images ls -q)" || die "image $img missing after import"
  done
}

push_images() {
  local tag
  for tag in "$BUSYBOX_TAG" latest; do
    log "pushing 127.0.0.1:$REGISTRY_PORT/keel/busybox:$tag"
    skopeo --insecure-policy copy -q --preserve-digests --dest-tls-verify=false \
      "oci:$DIR/images/layout:$BUSYBOX_TAG" "docker://127.0.0.1:$REGISTRY_PORT/keel/busybox:$tag" >&2 ||
      die "skopeo copy to 127.0.0.1:$REGISTRY_PORT/keel/busybox:$tag failed"
  done
}

write_env() {
  cat >"$DIR/env.tmp" <<EOF
export KEEL_CRI_SOCKET=$SOCK
export KEEL_TEST_REGISTRY=127.0.0.1:$REGISTRY_PORT
export KEEL_CONTAINERD_DIR=$DIR
export KEEL_CNI_BRIDGE=$BRIDGE
export KEEL_CNI_SUBNET=$SUBNET_PREFIX.0.0/16
export KEEL_TEST_CGROUP_ROOT=$CGROUP_ROOT
EOF
  mv "$DIR/env.tmp" "$DIR/env"
}

cmd_up() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (containerd, runc and CNI need it)"
  local start=$SECONDS
  local sock_len=$((${#SOCK} + 6))
  [ "$sock_len" -lt 108 ] || die "socket path $SOCK.ttrpc is too long for a unix socket; use a shorter DIR"
  install_packages
  check_tools
  prepare_dir
  echo "$CGROUP_ROOT" >"$DIR/cgroup-root"
  claim_bridge
  write_cni_config
  write_containerd_config
  build_images
  start_containerd
  import_images
  start_registry
  push_images
  write_env
  log "up in $((SECONDS - start))s: source $DIR/env (socket $SOCK, registry 127.0.0.1:$REGISTRY_PORT, bridge $BRIDGE)"
}

# Stop containerd and start it again with the same config (tests of a runtime restart under keel).
# SIGTERM leaves the shims, and so the containers, running, as a real containerd restart does.
cmd_restart() {
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  [ -e "$DIR/$MARKER" ] || die "$DIR was not created by '$PROG up'; refusing to touch it"
  [ -s "$DIR/containerd.toml" ] || die "$DIR/containerd.toml missing; run '$PROG up $DIR' first"
  local pid
  if pid=$(read_pid "$DIR/containerd.pid"); then
    stop_pid "$pid" containerd containerd || die "containerd (pid $pid) did not stop"
  fi
  start_containerd
  log "restart: containerd answers on $SOCK (pid $(read_pid "$DIR/containerd.pid"))"
}

# --- down ---------------------------------------------------------------------------------------

# Graceful part: through containerd, while it still runs.
remove_containers_via_ctr() {
  local pid
  pid=$(read_pid "$DIR/containerd.pid") || return 0
  pid_runs "$pid" containerd || return 0
  containerd_answers || return 0
  local ns id
  for ns in $(ctr_ namespaces ls -q 2>/dev/null); do
    for id in $(ctr_ -n "$ns" tasks ls -q 2>/dev/null); do
      ctr_ -n "$ns" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    # The CRI plugin deletes exited tasks itself, concurrently: only a task or container that is
    # still listed after a failed removal is worth a warning.
    for id in $(ctr_ -n "$ns" tasks ls -q 2>/dev/null); do
      if ! ctr_ -n "$ns" tasks rm -f "$id" >/dev/null 2>&1 &&
        grep -qxF "$id" <<<"$(ctr_ -n "$ns" tasks ls -q 2>/dev/null)"; then
        warn "could not remove task $ns/$id"
      fi
    done
    for id in $(ctr_ -n "$ns" containers ls -q 2>/dev/null); do
      if ! ctr_ -n "$ns" containers rm "$id" >/dev/null 2>&1 &&
        grep -qxF "$id" <<<"$(ctr_ -n "$ns" containers ls -q 2>/dev/null)"; then
        warn "could not remove container $ns/$id"
      fi
    done
  done
}

# Containers runc still knows about under our private runc root (e.g. containerd died early).
remove_runc_leftovers() {
  local r id
  [ -d "$DIR/state/runc" ] || return 0
  for r in "$DIR"/state/runc/*/; do
    [ -d "$r" ] || continue
    for id in $(runc --root "$r" list -q 2>/dev/null); do
      log "force-deleting leftover runc container $id"
      runc --root "$r" delete --force "$id" >/dev/null 2>&1 || warn "runc delete $id failed"
    done
  done
}

# Shims of this DIR only: their command line has `-address DIR/containerd.sock`.
kill_shims() {
  local p pid args i found
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ -r "$p/cmdline" ] || continue
    mapfile -d '' -t args 2>/dev/null <"$p/cmdline" || continue
    found=0
    for ((i = 0; i + 1 < ${#args[@]}; i++)); do
      if [ "${args[$i]}" = "-address" ] && [ "${args[$((i + 1))]}" = "$SOCK" ]; then
        found=1
        break
      fi
    done
    [ "$found" -eq 1 ] || continue
    [[ "${args[0]:-}" == *containerd-shim* ]] || continue
    log "killing leftover shim pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
  done
  # containerd 1.6 keeps shim sockets in /run/containerd/s; a killed shim leaves its socket. Each
  # task bundle records its shim's address, so only this DIR's sockets are removed.
  local f addr
  while IFS= read -r -d '' f; do
    addr=$(cat "$f" 2>/dev/null) || continue
    addr=${addr#unix://}
    if [[ "$addr" == /run/containerd/s/* ]] && [ -S "$addr" ]; then
      rm -f "$addr"
    fi
  done < <(find "$DIR/state" -path '*io.containerd.runtime.v2.task/*' -name address -type f -print0 2>/dev/null)
}

# Mount points under DIR from /proc/self/mountinfo (octal escapes decoded), deepest first.
mounts_under_dir() {
  local mp
  while read -r _ _ _ _ mp _; do
    mp=$(printf '%b' "$mp")
    if [ "$mp" = "$DIR" ] || [[ "$mp" == "$DIR"/* ]]; then
      echo "$mp"
    fi
  done </proc/self/mountinfo | awk '{ print gsub("/", "/"), $0 }' | sort -rn -k1,1 | cut -d' ' -f2- | uniq
}

unmount_all() {
  local pass mp left
  for ((pass = 0; pass < 5; pass++)); do
    left=$(mounts_under_dir)
    [ -n "$left" ] || return 0
    while IFS= read -r mp; do
      umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
    done <<<"$left"
  done
  left=$(mounts_under_dir)
  [ -z "$left" ] || { warn "still mounted under $DIR: $left"; return 1; }
}

# Network namespaces containerd pinned under its state dir (unmounted above): delete the files.
remove_netns() {
  local f
  while IFS= read -r -d '' f; do
    rm -f "$f" 2>/dev/null || warn "could not remove netns file $f"
  done < <(find "$DIR/state" -path '*/netns/*' -type f -print0 2>/dev/null)
}

# portmap's per-pod DNAT rules carry the network name in their comment; CNI DEL never ran for
# pods removed by force, so remove those rules and their per-pod chains here. iptables-restore
# --noflush takes the rules exactly as iptables-save printed them (no shell re-parsing).
remove_portmap_rules() {
  local net=$1
  command -v iptables-save >/dev/null 2>&1 || return 0
  local rules line chain
  # iptables-save prints the comment as: "dnat name: \"NET\" id: \"ID\""
  local pattern="name: \\\"$net\\\" id:"
  rules=$(iptables-save -t nat 2>/dev/null | grep '^-A CNI-HOSTPORT-DNAT ' | grep -F -- "$pattern" || true)
  if [ -n "$rules" ]; then
    local chains=()
    while IFS= read -r line; do
      chain=$(sed -n 's/.* -j \(CNI-DN-[0-9a-f]*\).*/\1/p' <<<"$line")
      [ -z "$chain" ] || chains+=("$chain")
      printf '*nat\n-D %s\nCOMMIT\n' "${line#-A }" | iptables-restore --noflush ||
        warn "could not delete iptables rule: $line"
    done <<<"$rules"
    for chain in "${chains[@]}"; do
      iptables -t nat -F "$chain" 2>/dev/null || true
      iptables -t nat -X "$chain" 2>/dev/null || true
    done
  fi
  # portmap creates its shared chains on first use and never removes them. Remove them only when
  # no pod of any network still has a DNAT rule (another environment may use them).
  iptables -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1 || return 0
  if grep -q '^-A ' <<<"$(iptables -t nat -S CNI-HOSTPORT-DNAT)"; then
    return 0
  fi
  local spec
  for spec in "PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT" \
    "OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"; do
    # shellcheck disable=SC2086 # fixed rule specs, split into words on purpose
    iptables -t nat -D $spec 2>/dev/null || true
  done
  iptables -t nat -D POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" \
    -j CNI-HOSTPORT-MASQ 2>/dev/null || true
  for chain in CNI-HOSTPORT-DNAT CNI-HOSTPORT-MASQ CNI-HOSTPORT-SETMARK; do
    iptables -t nat -F "$chain" 2>/dev/null || true
    iptables -t nat -X "$chain" 2>/dev/null || true
  done
}

# IDs of every container and sandbox this containerd knew, read before anything is removed.
collect_ids() {
  local d
  for d in "$DIR"/state/io.containerd.runtime.v2.task/*/* "$DIR"/root/io.containerd.grpc.v1.cri/sandboxes/* \
    "$DIR"/root/io.containerd.grpc.v1.cri/containers/*; do
    [ -d "$d" ] && basename "$d"
  done | sort -u
}

# libcni caches each ADD result (in /var/lib/cni, not configurable in containerd 1.6) until DEL.
remove_cni_cache() {
  local id
  for id in "$@"; do
    rm -f /var/lib/cni/results/*-"$id"-* 2>/dev/null || true
  done
}

remove_bridge() {
  local br
  [ -s "$DIR/bridge" ] || return 0
  br=$(cat "$DIR/bridge")
  remove_portmap_rules "keel-$br"
  if ip link show "$br" >/dev/null 2>&1; then
    log "deleting bridge $br"
    ip link del "$br" || { warn "could not delete bridge $br"; return 1; }
  fi
}

# Pod cgroups under the test cgroup root, in every v1 hierarchy and the unified v2 mount.
remove_cgroups() {
  local root=$CGROUP_ROOT
  [ -s "$DIR/cgroup-root" ] && root=$(cat "$DIR/cgroup-root")
  root="/${root#/}"
  [ "$root" != "/" ] || { warn "cgroup root is /; not removing cgroups"; return 0; }
  local mnt fstype bad=0 d
  while read -r _ mnt fstype _; do
    [ "$fstype" = cgroup ] || [ "$fstype" = cgroup2 ] || continue
    mnt=$(printf '%b' "$mnt")
    [ -d "$mnt$root" ] || continue
    local attempt
    for ((attempt = 0; attempt < 20; attempt++)); do
      # Deepest first; rmdir only succeeds on cgroups without processes or children.
      while IFS= read -r -d '' d; do
        rmdir "$d" 2>/dev/null || true
      done < <(find "$mnt$root" -depth -type d -print0 2>/dev/null)
      [ -d "$mnt$root" ] || break
      sleep 0.1
    done
    if [ -d "$mnt$root" ]; then
      warn "cgroup $mnt$root remains (processes still inside?)"
      bad=1
      continue
    fi
    # A nested root (e.g. /keel-test/RUN): also remove its parents once nothing else uses them.
    d=${root%/*}
    while [ -n "$d" ] && rmdir "$mnt$d" 2>/dev/null; do
      d=${d%/*}
    done
  done </proc/self/mounts
  return $bad
}

cmd_down() {
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  if [ ! -d "$DIR" ]; then
    log "$DIR does not exist; nothing to do"
    return 0
  fi
  [ -e "$DIR/$MARKER" ] || die "$DIR was not created by '$PROG up'; refusing to touch it"
  local rc=0 pid ids
  mapfile -t ids < <(collect_ids)
  remove_containers_via_ctr
  # Both at once: each may take a second or two to drain its connections.
  local reg_stop=""
  if pid=$(read_pid "$DIR/registry.pid"); then
    stop_pid "$pid" docker-registry registry &
    reg_stop=$!
  fi
  if pid=$(read_pid "$DIR/containerd.pid"); then
    stop_pid "$pid" containerd containerd || rc=1
  fi
  if [ -n "$reg_stop" ]; then
    wait "$reg_stop" || rc=1
  fi
  remove_runc_leftovers
  kill_shims
  unmount_all || rc=1
  remove_netns
  remove_cni_cache "${ids[@]}"
  remove_bridge || rc=1
  remove_cgroups || rc=1
  if [ -n "$(mounts_under_dir)" ]; then
    die "mounts remain under $DIR; not deleting it"
  fi
  rm -rf --one-file-system "$DIR" || { warn "could not delete $DIR"; rc=1; }
  if [ "$rc" -eq 0 ]; then
    log "down: $DIR removed"
  else
    warn "down finished with leftovers (see warnings above)"
  fi
  return $rc
}

# --- main ---------------------------------------------------------------------------------------

[ $# -eq 2 ] || usage
ACTION=$1
[ -n "$2" ] || usage
DIR=$(realpath -m -- "$2")
[ "$DIR" != "/" ] || die "refusing to use / as DIR"
SOCK="$DIR/containerd.sock"
# Each environment owns its own cgroup parent (down removes it), so two environments on one
# machine never remove each other's pod cgroups.
CGROUP_ROOT=${KEEL_TEST_CGROUP_ROOT:-/keel-test/${DIR##*/}}
BRIDGE=""
SUBNET_PREFIX=""
REGISTRY_PORT=""

case "$ACTION" in
  up) cmd_up ;;
  down) cmd_down ;;
  restart) cmd_restart ;;
  *) usage ;;
esac
