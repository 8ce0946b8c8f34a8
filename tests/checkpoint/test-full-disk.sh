#!/usr/bin/env bash
# A full disk during a save (issue 10): every rank ends with the same message, nobody
# hangs or crashes, no partial file is left, and the previous checkpoint is intact —
# at 1 rank, at 2 ranks, and with two jobs racing for the last free space. Runs on a
# small tmpfs it mounts itself (needs root); exits 77 (skipped) where it cannot mount.
# usage: test-full-disk.sh BIN_DIR WORK_DIR
set -uo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../support/checks.sh"
export PATH=$(cd "$1" && pwd):$PATH
work=$2
umount "$work/disk" 2>/dev/null  # a mount left by an interrupted run
rm -rf "$work" && mkdir -p "$work/disk" || exit 1
if ! mount -t tmpfs -o size=20M tmpfs "$work/disk" 2>/dev/null; then
  echo "SKIP: cannot mount a tmpfs here (not root, or not permitted)"
  exit 77
fi
trap 'cd / && umount "$work/disk"' EXIT  # cd out first: a busy mount point will not unmount
cd "$work/disk" || exit 1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
leftovers() { compgen -G "*.moe-tmp-*"; compgen -G "*.moe-lock"; }

moe init --out keep.h5 --experts 4 --hidden 32 --expert-dim 32 --seed 1 >/dev/null || exit 1
before=$(md5sum < keep.h5)
for np in 1 2; do
  out=$(timeout 120 moe-run -np $np moe init --out keep.h5 --experts 8 --hidden 1024 --expert-dim 1024 2>&1)
  status=$?
  check "$np rank(s): a save larger than the disk fails with a message (exit $status)" \
    bash -c "[[ $status == 1 ]] && grep -q 'not enough space to write' <<<'$out'"
  check "$np rank(s): the previous checkpoint is intact" bash -c "[[ \"\$(md5sum < keep.h5)\" == '$before' ]]"
  check "$np rank(s): nothing is left behind" bash -c "[[ -z \"\$(compgen -G '*.moe-tmp-*'; compgen -G '*.moe-lock')\" ]]"
done

# Two jobs that each fit alone but not together: one succeeds, the other ends on every
# rank with a message — before the fix the loser hung in parallel HDF5 for ever.
big=(--experts 8 --hidden 512 --expert-dim 320)
timeout 120 moe-run -np 2 moe init --out a.h5 "${big[@]}" >a.log 2>&1 &
first=$!
timeout 120 moe-run -np 2 moe init --out b.h5 "${big[@]}" >b.log 2>&1 &
second=$!
wait $first; a=$?
wait $second; b=$?
check "two racing 2-rank saves end, neither hangs (exits $a and $b)" bash -c "(( $a != 124 && $b != 124 ))"
check "one of them succeeds" bash -c "(( $a == 0 || $b == 0 ))"
check "the other fails with a message about space" bash -c \
  "(( $a == 0 )) && grep -q 'space' b.log || grep -q 'space' a.log"
check "only complete files are left" bash -c "[[ -z \"\$(compgen -G '*.moe-tmp-*'; compgen -G '*.moe-lock')\" ]]"
for f in a.h5 b.h5; do
  [[ -e $f ]] && check "$f verifies" bash -c "moe info $f | grep -q 'all 8 experts verified'"
done
((failures == 0))
