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
# The installed `moe` starts by itself (its RPATH finds the installed libmoe), with no
# library path set and the build tree out of reach.
work=$build/consumer-check/run
mkdir -p "$work"
env -u LD_LIBRARY_PATH "$prefix/bin/moe" init --out "$work/model.h5" --experts 4 --top-k 2 --hidden 8 \
    --expert-dim 8 --expert-kind glu >/dev/null
env -u LD_LIBRARY_PATH "$prefix/bin/moe" info "$work/model.h5" | grep -q "all 4 experts verified"
if env -u LD_LIBRARY_PATH ldd "$prefix/bin/moe" | grep -q "$build/libmoe"; then
  echo "check-consumer: the installed moe loads libmoe from the build tree" >&2
  exit 1
fi
echo "check-consumer: the installed moe runs from $prefix"
