#!/usr/bin/env bash
# The README's main job: installs what is missing, builds, and runs the reference
# API's complete forward example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target complete_moe_example
./build/examples/complete_moe_example
