#!/usr/bin/env bash
# Fuzzes every file moe reads, with libFuzzer (clang) under ASan and UBSan:
#   moe_fuzz_safetensors  moe's own safetensors and JSON parsing (moe import)
#   moe_fuzz_files        checkpoints and token files (HDF5, through libhdf5)
# usage: scripts/fuzz.sh SECONDS [--smoke]
#   SECONDS per target. Seeds (valid files of every kind, and hostile ones) are made
#   fresh; findings are written under build-fuzz/findings/. Each finding is shown with
#   the first frame of its stack that is not the sanitizer's, and counted as inside
#   libhdf5 or elsewhere. Both are moe's failures: moe reads every file's metadata in a
#   child process first (checkpoint/detail/hdf5_probe.hpp), so a libhdf5 crash or hang
#   there must end as an error. Exit status: non-zero on any finding.
#   --smoke (CI): the safetensors target for SECONDS, the files target on its seeds only.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: scripts/fuzz.sh SECONDS [--smoke]}
smoke=${2:-}
root=$PWD
bash scripts/install-deps.sh >/dev/null
missing=()
for p in clang-14 libclang-rt-14-dev libomp-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  as_root=()
  [[ $(id -u) != 0 ]] && as_root=(sudo)
  "${as_root[@]}" apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
build=$root/build-fuzz
CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_WITH_CUDA=OFF -DMOE_BUILD_FUZZ=ON \
  -DMOE_BUILD_BENCH=OFF -DMOE_BUILD_EXAMPLES=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer" >/dev/null || exit 1
cmake --build "$build" -j "$(nproc)" --target moe_fuzz_files moe_fuzz_safetensors moe_cli >"$build/build.log" 2>&1 ||
  { tail -30 "$build/build.log"; exit 1; }
export ASAN_OPTIONS=detect_leaks=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# A file whose metadata libhdf5 loops on must end as moe's error before the fuzzer's own
# 20 s timeout calls it a hang.
export MOE_FILE_PROBE_SECONDS=5
# What libFuzzer's handlers write from inside moe's probe children (tests/fuzz/fuzz_files.cpp).
export MOE_FUZZ_CHILD_DIR=$build/probe-children

# Seeds.
seeds=$build/seeds
rm -rf "$seeds" "$build/findings" "$MOE_FUZZ_CHILD_DIR" &&
  mkdir -p "$seeds/files" "$seeds/safetensors" "$build/findings" "$MOE_FUZZ_CHILD_DIR"
moe=$build/bin/moe
(cd "$seeds/files" &&
  "$moe" init --out ffn.h5 --experts 2 --top-k 1 --hidden 8 --expert-dim 4 >/dev/null &&
  "$moe" init --out arch.h5 --experts 4 --top-k 2 --hidden 8 --expert-dim 4 --expert-kind glu --no-expert-bias \
    --router sigmoid --n-group 2 --shared-expert-dim 4 --shared-gate >/dev/null &&
  "$moe" train --experts 2 --top-k 1 --hidden 8 --expert-dim 4 --tokens 4 --steps 1 --ckpt trained.h5 >/dev/null &&
  "$moe" make-tokens --out tokens.h5 --tokens 3 --hidden 8 >/dev/null &&
  head -c 1500 ffn.h5 > truncated.h5 && printf 'not hdf5' > text.h5) || exit 1
source scripts/find-python.sh
moe_find_python numpy
"$MOE_PYTHON" - "$seeds/safetensors" <<'PY'
import json, struct, sys, os
def write(path, tensors, extra=b""):
    header, blobs, off = {}, [], 0
    for name, (dt, shape, raw) in tensors.items():
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw); off += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text))); f.write(text); f.write(b"".join(blobs) + extra)
d = sys.argv[1]
write(os.path.join(d, "small"), {"a": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
                                 "t": ("BF16", [3], b"\x80\x3f\x00\x40\x40\x40")})
write(os.path.join(d, "f16"), {"t": ("F16", [2], b"\x00\x3c\x00\xc0")})
g = struct.pack("<8f", *range(8))
write(os.path.join(d, "layer"), {"model.layers.0.mlp.gate.weight": ("F32", [2, 4], g),
                                 "model.layers.0.mlp.experts.0.gate_proj.weight": ("F32", [2, 4], g)})
PY

# Runs TARGET on CORPUS; prints "executions crashes".
fuzz() {
  local target=$1 corpus=$2 log=$build/findings/$1.log
  shift 2
  (cd "$build/findings" && "$build/tests/$target" "$corpus" -max_len=100000 -timeout=20 -rss_limit_mb=4096 "$@" \
     >"$log" 2>&1)
  local runs
  runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | awk '{s += $2} END {print s + 0}')
  # Fork mode reports progress lines "#N: cov: …" instead.
  [[ $runs == 0 ]] && runs=$(grep -oE "^#[0-9]+:" "$log" | tail -1 | tr -d '#:')
  echo "${runs:-0}"
}

status=0
st_runs=$(fuzz moe_fuzz_safetensors "$seeds/safetensors" -max_total_time="$seconds" -print_final_stats=1)
st_crashes=$(compgen -G "$build/findings/crash-*" | wc -l)
echo "moe_fuzz_safetensors: $st_runs inputs executed in ${seconds} s, $st_crashes crashes"
((st_crashes > 0)) && status=1
mkdir -p "$build/findings/safetensors" && mv "$build"/findings/crash-* "$build/findings/safetensors/" 2>/dev/null

if [[ $smoke == --smoke ]]; then
  files_runs=$(fuzz moe_fuzz_files "$seeds/files" -runs=0 -print_final_stats=1)
  echo "moe_fuzz_files: the $(ls "$seeds/files" | wc -l) seed files read without a finding"
  grep -q "ERROR" "$build/findings/moe_fuzz_files.log" && { echo "moe_fuzz_files: FAIL on a seed"; status=1; }
  exit $status
fi

files_runs=$(fuzz moe_fuzz_files "$seeds/files" -max_total_time="$seconds" -fork=1 -ignore_crashes=1 \
               -ignore_timeouts=1 -ignore_ooms=1 -print_final_stats=1)
hdf5=0 ours=0
for crash in "$build"/findings/crash-* "$build"/findings/timeout-* "$build"/findings/oom-*; do
  [[ -e $crash ]] || continue
  # The first frame that is not the sanitizer's own tells whose code failed.
  # (A timeout input is re-run with libFuzzer's own alarm, which prints the stack.)
  first=$(timeout -s INT 120 "$build/tests/moe_fuzz_files" -timeout=10 "$crash" 2>&1 | grep -E "^ +#[0-9]+ " |
          grep -vE "interceptor|libasan|sanitizer|fuzzer::|libc\.so|asan::| in (malloc|calloc|realloc) " | head -1)
  if [[ $first == *libhdf5* ]]; then hdf5=$((hdf5 + 1)); else ours=$((ours + 1)); fi
  echo "moe_fuzz_files: $crash: $first"
done
echo "moe_fuzz_files: $files_runs inputs executed in ${seconds} s; findings inside libhdf5: $hdf5; elsewhere: $ours"
((hdf5 + ours > 0)) && status=1
exit $status
