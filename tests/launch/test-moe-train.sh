#!/usr/bin/env bash
# moe train: the loss falls; N steps, save, resume for M steps gives bitwise the same
# checkpoint (parameters and optimizer state) as N + M steps straight through, at 1
# and at 2 ranks; a resume with the wrong optimizer is a clear error.
# usage: test-moe-train.sh BIN_DIR WORK_DIR
set -uo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../support/checks.sh"
bin=$(cd "$1" && pwd)
work=$2
export PATH=$bin:$PATH
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
small=(--experts 4 --top-k 2 --hidden 32 --expert-dim 64 --tokens 64 --log-every 3 --save-every 0 --capacity-factor 1.0)

for np in 1 2; do
  run=(moe-run -np $np moe train "${small[@]}")
  "${run[@]}" --steps 7 --ckpt straight$np.h5 >straight$np.log 2>&1
  "${run[@]}" --steps 4 --ckpt first$np.h5 >first$np.log 2>&1
  "${run[@]}" --steps 7 --resume first$np.h5 --ckpt resumed$np.h5 >resumed$np.log 2>&1
  check "4 steps + resume for 3 = 7 steps straight, bitwise, at $np rank(s)" h5diff straight$np.h5 resumed$np.h5
  check "the resumed run says where it resumed ($np rank(s))" grep -q "resumed at step 4" resumed$np.log
done
check "the checkpoint holds optimizer state" bash -c "moe info resumed2.h5 | grep -q 'optimizer   state present'"
check "a resume needs the same optimizer" bash -c \
  "moe train ${small[*]} --steps 8 --resume first1.h5 --optimizer sgd 2>&1 | grep -q 'holds adamw optimizer state but the optimizer given is sgd'"

moe-run -np 2 moe train "${small[@]}" --steps 60 --log-every 20 --lr 0.005 >falls.log 2>&1
losses=($(awk '$1 ~ /^[0-9]+$/ && NF == 7 {print $2}' falls.log))
echo "    logged losses: ${losses[*]}"
check "the loss falls over 60 steps at 2 ranks" awk -v a="${losses[0]:-0}" -v b="${losses[2]:-1}" 'BEGIN { exit !(b < 0.8 * a) }'
((failures == 0))
