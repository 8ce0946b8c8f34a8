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
# The installed Python package (when built) imports from the prefix alone and finds the
# installed libmoe through its RPATH.
python=$(sed -n 's/^MOE_PYTHON_EXECUTABLE:[A-Z]*=//p; s/^Python3_EXECUTABLE:[A-Z]*=//p' "$build/CMakeCache.txt" | head -1)
package=$(find "$prefix" -path '*site-packages/moe/__init__.py' 2>/dev/null | head -1)
if [[ -n "$package" && -n "$python" ]]; then
  site=$(dirname "$(dirname "$package")")
  (cd "$work" && env -u LD_LIBRARY_PATH PYTHONPATH="$site" "$python" -c \
    "import moe; assert moe.__file__.startswith('$prefix'), moe.__file__; moe.MoELayer(moe.MOEConfig(4, 2, 8, 8))")
  if ldd "$(dirname "$package")"/_moe*.so | grep -q "$build/libmoe"; then
    echo "check-consumer: the installed Python package loads libmoe from the build tree" >&2
    exit 1
  fi
  echo "check-consumer: the installed Python package imports from $site"
fi
