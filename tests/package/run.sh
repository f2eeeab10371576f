#!/usr/bin/env bash
# Installs the build at $1 into a scratch prefix, then builds and runs the consumer
# project against it with find_package, and again with add_subdirectory($2).
set -euo pipefail
build="$1"
source="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$source/tests/package/consumer" -B "$work/found" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/found" >/dev/null
"$work/found/consumer"
cmake -S "$source/tests/package/consumer" -B "$work/sub" -G Ninja -DRINGBUS_SOURCE_DIR="$source" >/dev/null
cmake --build "$work/sub" --target consumer >/dev/null
"$work/sub/consumer"
