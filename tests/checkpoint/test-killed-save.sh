#!/usr/bin/env bash
# A process killed (SIGKILL) in the middle of a save leaves the previous checkpoint
# at its name loadable and unchanged: saves go to "<name>.moe-tmp" and are renamed
# only when complete.   usage: test-killed-save.sh BIN_DIR WORK_DIR
set -uo pipefail
moe=$(cd "$1" && pwd)/moe
work=$2
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

"$moe" init --out model.h5 --experts 4 --top-k 1 --hidden 16 --expert-dim 32 --seed 1 >/dev/null || exit 1
before=$(md5sum < model.h5)

# A save big enough (~1 GB) to be caught in the act.
"$moe" init --out model.h5 --experts 16 --top-k 2 --hidden 2048 --expert-dim 4096 --seed 2 >/dev/null &
saver=$!
for _ in $(seq 1 3000); do
  [[ -s model.h5.moe-tmp ]] && break
  kill -0 $saver 2>/dev/null || break
  sleep 0.01
done
if [[ ! -s model.h5.moe-tmp ]]; then
  echo "FAIL: never saw the save in progress (the saver ended or did not start)"
  exit 1
fi
kill -KILL $saver
wait $saver 2>/dev/null
echo "killed the saver while model.h5.moe-tmp held $(stat -c %s model.h5.moe-tmp) bytes"

status=0
[[ "$(md5sum < model.h5)" == "$before" ]] && echo "ok    model.h5 is byte-for-byte the previous checkpoint" \
  || { echo "FAIL  model.h5 changed"; status=1; }
"$moe" info model.h5 | grep -q "E=4 k=1 H=16 F=32" && "$moe" info model.h5 | grep -q "all 4 experts verified" \
  && echo "ok    model.h5 loads and verifies" || { echo "FAIL  model.h5 does not load"; status=1; }
# The leftover temporary file is overwritten by the next save.
"$moe" init --out model.h5 --experts 4 --top-k 1 --hidden 16 --expert-dim 32 --seed 3 >/dev/null \
  && [[ ! -e model.h5.moe-tmp ]] && echo "ok    the next save replaces the leftover temporary file" \
  || { echo "FAIL  the next save did not succeed cleanly"; status=1; }
exit $status
