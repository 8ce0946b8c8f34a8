#!/usr/bin/env bash
# Builds the debug preset (AddressSanitizer + UBSan, no CUDA) and runs every test of
# moe's code under it; LeakSanitizer reports of the MPI stack's own allocations are
# suppressed (tests/lsan-mpi.supp, named by the debug test preset), moe's own are not.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
cmake --preset debug >/dev/null
cmake --build --preset debug -j "$(nproc)"
# Tests labelled script run no moe code (the GPU check's scripts on made-up results).
ctest --preset debug -j "$(nproc)" -LE script
echo "check-sanitizers: ok (every test passes under ASan and UBSan)"
