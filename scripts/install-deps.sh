#!/usr/bin/env bash
# Installs the Debian packages that building and testing moe need, and only those
# that are missing, so a second run is quick and needs no network.
#   --with-torch   (kept for old scripts: python3-torch is now always installed, since
#                  the Python package's tests and the PyTorch comparisons need it)
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libopenblas-dev
  libopenmpi-dev openmpi-bin
  libhdf5-openmpi-dev hdf5-tools
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev
  python3-numpy python3-h5py
  # the Python package (python/) and its tests, metrics plots
  python3-dev pybind11-dev python3-pybind11 libdlpack-dev python3-mpi4py python3-pytest
  python3-torch python3-matplotlib
)
for arg in "$@"; do
  case "$arg" in
    --with-torch) ;;
    *) echo "install-deps: unknown option '$arg' (expected --with-torch)" >&2; exit 2 ;;
  esac
done

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
as_root=()
if [[ $(id -u) != 0 ]]; then as_root=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
