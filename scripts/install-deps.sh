#!/usr/bin/env bash
# Installs the Debian packages that building, testing and benchmarking moe need,
# and only those that are missing, so a second run is quick and offline-safe.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libopenblas-dev
  libopenmpi-dev openmpi-bin
  libhdf5-openmpi-dev hdf5-tools
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev
  python3-numpy python3-h5py
)
# PyTorch is only for the peer benchmark; skip it with MOE_SKIP_TORCH=1.
if [[ "${MOE_SKIP_TORCH:-0}" != 1 ]]; then packages+=(python3-torch); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) != 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
