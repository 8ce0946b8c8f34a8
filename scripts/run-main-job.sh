#!/usr/bin/env bash
# The README's main job: installs what is missing, builds, and trains a layer across
# two ranks on the synthetic teacher task (about a minute on 2 cores), writing a
# checkpoint with optimizer state to out/train.h5. Extra arguments go to `moe train`
# (e.g. --steps 200, or --resume out/train.h5 --steps 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target moe_cli
mkdir -p out
build/bin/moe-run -np 2 build/bin/moe train --ckpt out/train.h5 "$@"
build/bin/moe info out/train.h5 | head -5
