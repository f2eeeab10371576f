#!/usr/bin/env bash
# Runs the fuzz targets of build dir $1 for $2 seconds each (default 30) on a fresh seed
# corpus, keeping what they find under $1/fuzz-corpus. Exit status 1 on a crash.
set -euo pipefail
build="$1"
seconds="${2:-30}"
corpus="$build/fuzz-corpus"
mkdir -p "$corpus/attach" "$corpus/decode" "$corpus/json"
"$build/tests/fuzz/fuzz_make_corpus" "$corpus/attach" "$corpus/decode" "$corpus/json"
for target in attach decode json; do
  echo "fuzz_$target: ${seconds}s"
  # An input longer than -max_len is cut to it, seeds included: the attach seeds are whole
  # segments (172,032 bytes at the smallest capacity), which a cut one refuses at once.
  max_len=131072
  if [ "$target" = attach ]; then max_len=262144; fi
  too_long=$(find "$corpus/$target" -type f -size +"${max_len}"c | head -n 1)
  if [ -n "$too_long" ]; then
    echo "fuzz_$target: the seed $too_long is longer than -max_len $max_len, which would cut it"
    exit 1
  fi
  "$build/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
    -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$build/fuzz-$target-" "$corpus/$target" 2>&1 |
    grep -E "^(#[0-9]+[[:space:]]*(DONE|INITED)|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==ERROR|SUMMARY|Done)" || true
  if ls "$build"/fuzz-$target-crash-* "$build"/fuzz-$target-leak-* "$build"/fuzz-$target-timeout-* >/dev/null 2>&1; then
    echo "fuzz_$target found a failing input:" "$build"/fuzz-$target-*
    exit 1
  fi
done
