#!/usr/bin/env bash
# README command (2): set-up, then every test tier in three builds:
#   build/test   unit, stress, process (crash and kill tests included), tool and package
#   build/tsan   unit (the benchmark's included), stress, process and tool tiers under ThreadSanitizer
#   build/asan   unit, stress, process and tool tiers under AddressSanitizer + UBSan
#   (In both sanitizer builds the `ringbus` tool and the tests' own code, but the stress
#   tier's, are built at -O0; the library is not. See CMakeLists.txt.)
#   build/fuzz   the libFuzzer targets (clang), 30 s each on the seed corpus
# (Process tests start their children by re-executing the test binary, so TSan sees
# fresh processes.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
jobs=$(nproc)

step() { printf '\n== %s (%d s in)\n' "$*" "$SECONDS"; }
# Names a tier left in /dev/shm (a test that removes what it creates leaves none). They
# are reported, not removed: the report says which tier left them.
shm_before=$(ls /dev/shm 2>/dev/null | sort)
left_behind() {
  local now extra
  now=$(ls /dev/shm 2>/dev/null | sort)
  extra=$(comm -13 <(printf '%s\n' "$shm_before") <(printf '%s\n' "$now") | grep -v '^$' || true)
  if [ -n "$extra" ]; then
    printf 'warning: the %s left these in /dev/shm:\n%s\n' "$1" "$extra"
  fi
  shm_before=$now
}

step "build: tests (RelWithDebInfo)"
cmake -S . -B build/test -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/test -j "$jobs"
step "tests: every tier"
ctest --test-dir build/test --output-on-failure -j 1
left_behind "tests (RelWithDebInfo)"

step "build: ThreadSanitizer"
cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRINGBUS_SANITIZE=thread \
  -DRINGBUS_BUILD_TOOLS=ON -DRINGBUS_BUILD_BENCH=ON >/dev/null
cmake --build build/tsan -j "$jobs" --target unit_tests stress_tests process_tests crash_tests kill_tests \
  bench_tests ringbus tool_tests
# A race in the tool (the demo's and the benchmark's threads) ends it with status 66, which
# the tool tests' exit-code checks catch.
step "tests: unit, stress, process and tool tiers under TSan"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build/tsan --output-on-failure -L "unit|stress|process|tool"
left_behind "tests under TSan"

step "build: AddressSanitizer + UBSan"
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRINGBUS_SANITIZE=address \
  -DRINGBUS_BUILD_TOOLS=ON -DRINGBUS_BUILD_BENCH=ON >/dev/null
cmake --build build/asan -j "$jobs" --target unit_tests stress_tests process_tests crash_tests kill_tests \
  bench_tests ringbus tool_tests
step "tests: unit, stress, process and tool tiers under ASan + UBSan"
ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1" \
  ctest --test-dir build/asan --output-on-failure -L "unit|stress|process|tool"
left_behind "tests under ASan + UBSan"

step "build: fuzz targets (clang, libFuzzer + ASan/UBSan)"
cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DRINGBUS_FUZZ=ON -DRINGBUS_SANITIZE=address -DRINGBUS_BUILD_TESTS=OFF -DRINGBUS_BUILD_TOOLS=OFF \
  -DRINGBUS_BUILD_BENCH=OFF >/dev/null
cmake --build build/fuzz -j "$jobs"
step "fuzz: attach and record decoding, ${RINGBUS_FUZZ_SECONDS:-30} s each"
bash tests/fuzz/run.sh build/fuzz "${RINGBUS_FUZZ_SECONDS:-30}"

step "all tests passed"
