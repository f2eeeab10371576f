#!/usr/bin/env bash
# README command (1): set-up, a release build, and the main job: the latency and
# throughput report (about 4-5 minutes; `--quick` for about 30 s). Extra arguments go to
# `ringbus bench`. Results: build/bench/results.json and build/bench/latency.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DRINGBUS_BUILD_TESTS=OFF >/dev/null
cmake --build build/release --target ringbus ringbus_micro_bench
mkdir -p build/bench
exec build/release/tools/ringbus bench --json build/bench/results.json --plot build/bench/latency.png "$@"
