#!/usr/bin/env bash
# moe train: the loss falls; N steps, save, resume for M steps gives bitwise the same
# checkpoint (parameters and optimizer state) as N + M steps straight through, at 1
# and at 2 ranks, from the stream (labelled in the step or a step ahead) and from a dataset; a resume with the wrong optimizer is a clear error. The same for a
# DeepSeek-style layer (glu experts, sigmoid router with groups, shared expert), whose
# expert-bias update keeps the load balanced with no aux loss.
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
# Labelling ahead (--label-ahead on: the teacher labels step s + 1 on a thread of its own
# while the student trains on s; a GPU's default at one rank): the same bits as labelling
# in the step, straight and across a resume, and it needs one rank.
moe-run -np 1 moe train "${small[@]}" --steps 7 --label-ahead on --ckpt ahead.h5 >ahead.log 2>&1
check "labelled ahead: 7 steps bitwise as labelled in the step" h5diff straight1.h5 ahead.h5
check "... and the log says so" grep -q "the stream labelled a step ahead" ahead.log
moe-run -np 1 moe train "${small[@]}" --steps 7 --label-ahead on --resume first1.h5 --ckpt ahead_resumed.h5 \
  >ahead_resumed.log 2>&1
check "labelled ahead: a resume at step 4 gives the same 7 steps, bitwise" h5diff straight1.h5 ahead_resumed.h5
# The student's streams at the GPU's greatest priority (MOE_STUDENT_HIGH_PRIORITY=1, a
# trial for a teacher labelling ahead): the CPU has no priorities, so the same bits; a
# value other than 0 or 1 is an error naming the variable.
MOE_STUDENT_HIGH_PRIORITY=1 moe-run -np 1 moe train "${small[@]}" --steps 7 --label-ahead on --ckpt priority.h5 \
  >priority.log 2>&1
check "MOE_STUDENT_HIGH_PRIORITY=1: 7 steps bitwise as without it" h5diff straight1.h5 priority.h5
check "MOE_STUDENT_HIGH_PRIORITY=yes is an error naming it" bash -c \
  "! MOE_STUDENT_HIGH_PRIORITY=yes moe train ${small[*]} --steps 2 >bad_priority.log 2>&1 &&
   grep -q \"MOE_STUDENT_HIGH_PRIORITY = 'yes'; expected 1\" bad_priority.log"
check "labelling a dataset ahead is refused, naming both flags" bash -c \
  "! moe train ${small[*]} --steps 2 --dataset-batches 2 --label-ahead on >refused_dataset.log 2>&1 &&
   grep -q -- '--label-ahead on with --dataset-batches 2; expected a stream' refused_dataset.log"
check "labelling ahead at 2 ranks is refused, naming the flag" bash -c \
  "! moe-run -np 2 moe train ${small[*]} --steps 2 --label-ahead on >refused.log 2>&1 &&
   grep -q -- '--label-ahead on with 2 ranks; expected one rank' refused.log"
# A dataset (--dataset-batches N): batch i is the stream's batch i, so N >= steps trains
# exactly as the stream does; N < steps cycles, and resumes across an epoch's end.
moe-run -np 2 moe train "${small[@]}" --steps 7 --dataset-batches 7 --ckpt dataset7.h5 >dataset7.log 2>&1
same_weights() {
  for group in /experts /gate /optimizer; do h5diff -q "$1" "$2" $group $group >/dev/null || return 1; done
}
weights_differ() { ! same_weights "$@"; }
check "a dataset of 7 batches trains 7 steps bitwise as the stream does" same_weights straight2.h5 dataset7.h5
check "... and the checkpoint says it was a dataset" bash -c "h5dump -a /training/dataset_batches dataset7.h5 | grep -q '(0): 7'"
moe-run -np 2 moe train "${small[@]}" --steps 7 --dataset-batches 3 --ckpt dataset3.h5 >dataset3.log 2>&1
moe-run -np 2 moe train "${small[@]}" --steps 4 --dataset-batches 3 --ckpt dataset3_first.h5 >dataset3_first.log 2>&1
moe-run -np 2 moe train "${small[@]}" --steps 7 --resume dataset3_first.h5 --ckpt dataset3_resumed.h5 >dataset3_resumed.log 2>&1
check "a dataset of 3 batches: 4 steps + resume for 3 = 7 straight, bitwise" h5diff dataset3.h5 dataset3_resumed.h5
check "a dataset of 3 batches cycles (it differs from the stream after step 3)" weights_differ straight2.h5 dataset3.h5
check "the log says the data is a dataset" grep -q "a dataset of 3 batches per rank" dataset3.log
check "a resume keeps the checkpoint's dataset: a contradicting flag is refused" bash -c \
  "moe train ${small[*]} --steps 8 --resume dataset3_first.h5 --dataset-batches 2 2>&1 | grep -q -- '--dataset-batches 2 contradicts'"
check "... and so is a contradicting --tokens" bash -c \
  "moe train ${small[*]} --steps 8 --resume dataset3_first.h5 --tokens 32 2>&1 | grep -q -- '--tokens 32 contradicts'"
check "a dataset larger than the memory is an error naming the flag" bash -c \
  "moe train ${small[*]} --steps 2 --dataset-batches 100000000000 2>&1 | grep -q 'dataset (--dataset-batches 100000000000'"
check "the checkpoint holds optimizer state" bash -c "moe info resumed2.h5 | grep -q 'optimizer   state present'"
check "a resume needs the same optimizer" bash -c \
  "moe train ${small[*]} --steps 8 --resume first1.h5 --optimizer sgd 2>&1 | grep -q 'holds adamw optimizer state but the optimizer given is sgd'"

moe-run -np 2 moe train "${small[@]}" --steps 60 --log-every 20 --lr 0.005 >falls.log 2>&1
losses=($(awk '$1 ~ /^[0-9]+$/ && NF == 7 {print $2}' falls.log))
echo "    logged losses: ${losses[*]}"
check "the loss falls over 60 steps at 2 ranks" awk -v a="${losses[0]:-0}" -v b="${losses[2]:-1}" 'BEGIN { exit !(b < 0.8 * a) }'
# Resume rules and a run that diverges (issue 10).
check "--steps at or below the checkpoint's step is an error" bash -c \
  "moe train ${small[*]} --steps 4 --resume first1.h5 2>&1 | grep -q -- '--steps 4 is at or below the step'"
moe train "${small[@]}" --steps 10 --lr 1e30 --clip 0 --save-every 1 --ckpt diverged.h5 >diverged.log 2>&1
check "a non-finite loss stops the run with an error" \
  bash -c "grep -q 'the loss is .*nan at step 2; training stopped' diverged.log"
check "the last good checkpoint is kept" bash -c "moe info diverged.h5 | grep -q '^step        1$'"
check "... and with the teacher labelling ahead, it stops the same way" bash -c \
  "! moe train ${small[*]} --steps 10 --lr 1e30 --clip 0 --label-ahead on >diverged_ahead.log 2>&1 &&
   grep -q 'the loss is .*nan at step 2; training stopped' diverged_ahead.log"

# DeepSeek-style: glu experts without biases, the sigmoid router with groups and
# scaling, a gated shared expert, no aux loss.
arch=(--experts 8 --top-k 2 --hidden 64 --expert-dim 64 --tokens 512 --log-every 50 --save-every 0
      --expert-kind glu --no-expert-bias --router sigmoid --n-group 2 --topk-group 2 --routed-scaling 2.5
      --shared-expert-dim 32 --shared-gate --aux-coef 0 --lr 0.01)
moe-run -np 2 moe train "${arch[@]}" --steps 7 --log-every 3 --ckpt arch_straight.h5 >arch_straight.log 2>&1
moe-run -np 2 moe train "${arch[@]}" --steps 4 --log-every 3 --ckpt arch_first.h5 >arch_first.log 2>&1
moe-run -np 2 moe train "${arch[@]}" --steps 7 --log-every 3 --resume arch_first.h5 --ckpt arch_resumed.h5 >arch_resumed.log 2>&1
check "DeepSeek-style: 4 steps + resume for 3 = 7 straight, bitwise (expert bias included)" \
  h5diff arch_straight.h5 arch_resumed.h5
check "a config flag that contradicts the checkpoint is refused" bash -c \
  "moe train ${arch[*]} --steps 8 --resume arch_first.h5 --hidden 32 2>&1 | grep -q -- '--hidden 32 contradicts'"
last_load() { awk '$1 ~ /^[0-9]+$/ && NF == 7 {load = $7} END {print load}' "$1"; }
moe-run -np 2 moe train "${arch[@]}" --steps 200 --bias-update-rate 0 >no_update.log 2>&1
moe-run -np 2 moe train "${arch[@]}" --steps 200 --bias-update-rate 1e-2 >update.log 2>&1
without=$(last_load no_update.log) with=$(last_load update.log)
echo "    max load / mean load at step 200: $without without the bias update, $with with it"
check "the bias update keeps the load balanced with no aux loss" \
  awk -v a="$without" -v b="$with" 'BEGIN { exit !(b < a && b <= 1.2) }'
losses=($(awk '$1 ~ /^[0-9]+$/ && NF == 7 {print $2}' update.log))
check "DeepSeek-style: the loss falls" awk -v a="${losses[0]:-0}" -v b="${losses[3]:-1}" 'BEGIN { exit !(b < 0.8 * a) }'
((failures == 0))
