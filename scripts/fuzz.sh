#!/usr/bin/env bash
# Runs every fuzz target (fuzz/) for a bounded time on the installed stable toolchain:
# cargo-fuzz from crates.io, rustc accepting its nightly flags through RUSTC_BOOTSTRAP=1.
# Built without a sanitizer (`-s none`): the targets are safe Rust, where ASan finds nothing
# the panics and assertions do not, and an ASan build of keel and tokio costs minutes of CI.
# Each run starts from the checked-in seeds plus the (git-ignored) corpus of earlier runs and
# prints its executions; a crash fails the run and leaves the input in fuzz/artifacts/<target>/.
#   KEEL_FUZZ_SECONDS  seconds per target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_PER_TARGET="${KEEL_FUZZ_SECONDS:-20}"
if [ "$SECONDS_PER_TARGET" = 0 ]; then
  echo "fuzz: skipped (KEEL_FUZZ_SECONDS=0)"
  exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
FLAGS=(-s none --features keel-sessions)
cargo fuzz build "${FLAGS[@]}"
for target in spdy_frames ws_frames log_parser static_pod kubelet_config layer_unpack; do
  mkdir -p "corpus/$target"
  dirs=("corpus/$target")
  [ -d "seeds/$target" ] && dirs+=("seeds/$target")
  log=$(mktemp)
  if ! cargo fuzz run "${FLAGS[@]}" "$target" "${dirs[@]}" -- \
    -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    rm -f "$log"
    echo "fuzz: $target failed; the crashing input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  echo "fuzz: $target: ${execs:-?} executions in ${SECONDS_PER_TARGET} s"
  rm -f "$log"
done
