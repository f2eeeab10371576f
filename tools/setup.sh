#!/usr/bin/env bash
# Installs the Debian 12 packages ringbus needs, only those that are missing.
# Idempotent and silent when everything is present. Run as root (or with sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git  # toolchain
  clang libclang-rt-14-dev                           # libFuzzer targets and their sanitizer runtimes
  libgtest-dev libgmock-dev libbenchmark-dev         # tests and micro-benchmarks
  libcli11-dev libfmt-dev libsimdjson-dev            # the ringbus tool
  libboost-dev libreaderwriterqueue-dev libatomic-queue-dev  # benchmark peers
  gnuplot-nox                                        # ringbus bench --plot
  bsdutils                                           # script(1): the tool tests run the bench on a terminal
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "ringbus setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
