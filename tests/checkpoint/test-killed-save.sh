#!/usr/bin/env bash
# A process killed (SIGKILL) in the middle of a save leaves the previous checkpoint
# at its name loadable and unchanged: saves go to a unique "<name>.moe-tmp-<hex>" and
# are renamed only when complete. While a save runs, a second writer of the same name
# is refused; the next save after a killed one clears its leftover.
# usage: test-killed-save.sh BIN_DIR WORK_DIR
set -uo pipefail
moe=$(cd "$1" && pwd)/moe
work=$2
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

"$moe" init --out model.h5 --experts 4 --top-k 1 --hidden 16 --expert-dim 32 --seed 1 >/dev/null || exit 1
before=$(md5sum < model.h5)

# A save big enough (~1 GB) to be caught in the act.
"$moe" init --out model.h5 --experts 16 --top-k 2 --hidden 2048 --expert-dim 4096 --seed 2 >/dev/null &
saver=$!
tmp() { compgen -G "model.h5.moe-tmp-*" | head -1; }
for _ in $(seq 1 3000); do
  [[ -n "$(tmp)" && -s "$(tmp)" ]] && break
  kill -0 $saver 2>/dev/null || break
  sleep 0.01
done
if [[ -z "$(tmp)" ]]; then
  echo "FAIL: never saw the save in progress (the saver ended or did not start)"
  exit 1
fi
status=0
second=$("$moe" init --out model.h5 --experts 4 --top-k 1 --hidden 16 --expert-dim 32 --seed 4 2>&1)
[[ $? != 0 && "$second" == *"another job is writing 'model.h5'"* ]] \
  && echo "ok    a second writer of model.h5 is refused while the first writes" \
  || { echo "FAIL  a second writer was not refused: $second"; status=1; }
kill -KILL $saver
wait $saver 2>/dev/null
echo "killed the saver while $(tmp) held $(stat -c %s "$(tmp)") bytes"

[[ "$(md5sum < model.h5)" == "$before" ]] && echo "ok    model.h5 is byte-for-byte the previous checkpoint" \
  || { echo "FAIL  model.h5 changed"; status=1; }
"$moe" info model.h5 | grep -q "E=4 k=1 H=16 F=32" && "$moe" info model.h5 | grep -q "all 4 experts verified" \
  && echo "ok    model.h5 loads and verifies" || { echo "FAIL  model.h5 does not load"; status=1; }
# The killed saver's leftover is removed by the next save, which leaves nothing behind.
"$moe" init --out model.h5 --experts 4 --top-k 1 --hidden 16 --expert-dim 32 --seed 3 >/dev/null \
  && [[ -z "$(tmp)" && ! -e model.h5.moe-lock ]] && echo "ok    the next save clears the leftover temporary file" \
  || { echo "FAIL  the next save did not succeed cleanly: $(ls)"; status=1; }
exit $status
