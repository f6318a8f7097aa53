#!/usr/bin/env bash
# Builds the fuzz targets and runs each one, then prints what each did.
#
#   bash fuzz/run.sh --seconds 20      # CI: every target for 20 s
#   bash fuzz/run.sh --runs 10000000   # the long local run (README, "Fuzzing")
#
# libFuzzer through cargo-fuzz. cargo-fuzz passes nightly-only flags
# (-Zsanitizer and friends) to rustc; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. No sanitizer: the crate forbids unsafe code, so the
# bugs to find are panics, overflows (debug assertions are on), hangs and
# unbounded allocations, which libFuzzer reports without one.
# A crash, a timeout or running out of memory fails the run; the input is
# left in fuzz/artifacts/TARGET/ to become a regression test.
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:---seconds}
amount=${2:-20}
# Both build cargo fuzz's default: optimized, with debug assertions.
case "$mode" in
  --seconds) limit=(-max_total_time="$amount") ;;
  --runs) limit=(-runs="$amount") ;;
  *) echo "usage: $0 --seconds N | --runs N" >&2; exit 2 ;;
esac

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
python3 seeds.py >/dev/null
export RUSTC_BOOTSTRAP=1
cargo fuzz build --sanitizer none
bin=target/x86_64-unknown-linux-gnu/release

targets=$(cargo fuzz list)
failed=0
printf '%-24s %12s %8s %10s\n' target executions seconds result
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  # What fuzzing found before, first: each must now pass.
  if compgen -G "regressions/$t/*" >/dev/null; then
    "$bin/$t" -timeout=10 -rss_limit_mb=1024 regressions/"$t"/* >/dev/null 2>&1 \
      || { echo "$t: a regression input fails again" >&2; failed=1; }
  fi
  start=$(date +%s)
  log=$(mktemp)
  if "$bin/$t" "corpus/$t" "${limit[@]}" -rss_limit_mb=1024 -timeout=10 \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed=1
    tail -40 "$log" >&2
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  printf '%-24s %12s %8s %10s\n' "$t" "${runs:-?}" "$(($(date +%s) - start))" "$result"
  rm -f "$log"
done
exit "$failed"
