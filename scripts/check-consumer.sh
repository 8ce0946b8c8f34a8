#!/usr/bin/env bash
# Installs a built tree into a scratch prefix and builds and runs tests/consumer
# against it, as a downstream project would. usage: check-consumer.sh BUILD_DIR
set -euo pipefail
source_dir=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
prefix=$build/consumer-check/install
rm -rf "$build/consumer-check"
cmake --install "$build" --prefix "$prefix" >/dev/null
# Same compiler flags as the library (a sanitizer build needs its runtime in the consumer too).
cxx_flags=$(sed -n 's/^CMAKE_CXX_FLAGS:STRING=//p' "$build/CMakeCache.txt")
cmake -S "$source_dir/tests/consumer" -B "$build/consumer-check/build" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="$cxx_flags" >/dev/null
cmake --build "$build/consumer-check/build" >/dev/null
# The consumer must run from the install tree, not the build tree.
LD_LIBRARY_PATH="$prefix/lib:${LD_LIBRARY_PATH:-}" "$build/consumer-check/build/consumer"
