#!/usr/bin/env bash
# README command (1): set-up, a release build, and the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DRINGBUS_BUILD_TESTS=OFF >/dev/null
cmake --build build/release --target ringbus
exec build/release/tools/ringbus demo "$@"
