#!/usr/bin/env bash
# Fuzz smoke run (CI): build every cargo-fuzz target once (nightly,
# AddressSanitizer), then run each for FUZZ_SECONDS (default 60) from its
# committed seed corpus (fuzz/corpus/<target>/) with memory limits.
# Exits non-zero when a target crashes, leaks past the limits or times out;
# the crashing input is left in fuzz/artifacts/<target>/.
#
#   bash scripts/fuzz-smoke.sh [TARGET...]
#   FUZZ_SECONDS=600 bash scripts/fuzz-smoke.sh deid      # a longer run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
log() { printf '[fuzz-smoke] %s\n' "$*"; }

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  log "installing the nightly toolchain (cargo-fuzz needs -Zsanitizer)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

TARGETS=("$@")
if [ "${#TARGETS[@]}" -eq 0 ]; then
  mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi

t0=$(date +%s)
cargo +nightly fuzz build
t1=$(date +%s)
log "build: $((t1 - t0))s"

failed=()
for t in "${TARGETS[@]}"; do
  # the committed seeds stay untouched: libFuzzer adds what it finds to a
  # scratch corpus (first directory), reading the seeds from the second
  scratch="corpus-run/$t"
  mkdir -p "$scratch" "corpus/$t" "artifacts/$t"
  log "$t: ${SECONDS_EACH}s"
  if nice -n "${FUZZ_NICE:-0}" cargo +nightly fuzz run "$t" "$scratch" "corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -timeout=10 -max_len=1048576 -print_final_stats=1 \
      >"artifacts/$t.log" 2>&1; then
    log "$t: $(grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "artifacts/$t.log" | tr '\n' ' ')"
  else
    log "$t: FAILED (log: fuzz/artifacts/$t.log)"
    tail -n 40 "artifacts/$t.log" || true
    failed+=("$t")
  fi
done
t2=$(date +%s)
log "runs: $((t2 - t1))s"
if [ "${#failed[@]}" -gt 0 ]; then
  log "crashed: ${failed[*]}"
  exit 1
fi
log "no crash in ${#TARGETS[@]} targets"
