#!/usr/bin/env bash
# The `moe` program as the README shows it: init, info and infer at 1, 2 and 4 ranks
# (the same output file whatever P when nothing is dropped), and bad arguments or
# files ending with a clear message and a non-zero exit.
# usage: test-moe-cli.sh BIN_DIR WORK_DIR
set -uo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../support/checks.sh"
bin=$(cd "$1" && pwd)
work=$2
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../scripts/find-python.sh"
moe_find_python numpy h5py || exit 1
export PATH=$bin:$PATH
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
fails_with() {  # fails_with MESSAGE COMMAND...: non-zero exit and MESSAGE in the output
  local message=$1
  shift
  local out
  out=$("$@" 2>&1) && { echo "    (exited 0) $out"; return 1; }
  grep -qF -- "$message" <<<"$out" || { echo "    (no '$message' in) $out"; return 1; }
}
same_outputs() {  # same_outputs A B: output within 1e-5 relative, indices equal
  "$MOE_PYTHON" - "$1" "$2" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
err = np.abs(a["output"][...] - b["output"][...]).max() / np.abs(a["output"][...]).max()
same = np.array_equal(a["expert_indices"][...], b["expert_indices"][...])
werr = np.abs(a["expert_weights"][...] - b["expert_weights"][...]).max()
print(f"    relative output difference {err:.2e}, indices equal: {same}, weight difference {werr:.2e}")
sys.exit(0 if err <= 1e-5 and same and werr <= 1e-6 and a["output"].shape == b["output"].shape else 1)
PY
}

check "init (1 rank)" moe init --out model.h5 --experts 8 --top-k 2 --hidden 32 --expert-dim 64 --dropless --seed 3
check "info verifies every checksum" bash -c "moe info model.h5 | grep -q 'all 8 experts verified, and 1 other tensors'"
check "make-tokens [B, S, H]" moe make-tokens --out tokens.h5 --tokens 300 --hidden 32 --batch 3
for np in 1 2 4; do
  check "infer at $np rank(s)" moe-run -np $np moe infer --ckpt model.h5 --input tokens.h5 --output out$np.h5
done
check "2 ranks write the same output file as 1" same_outputs out1.h5 out2.h5
check "infer prints no progress line when stderr is not a terminal" bash -c \
  "! moe infer --ckpt model.h5 --input tokens.h5 --output quiet.h5 2>&1 | grep -q \$'\\r'"
if command -v script >/dev/null; then
  check "infer shows its stage on a terminal, then clears the line" bash -c \
    "script -qec 'moe infer --ckpt model.h5 --input tokens.h5 --output tty.h5' /dev/null | grep -q '\\[4/5\\] forward of 300 tokens'"
fi
check "moe bench prints the reference API's two lines" bash -c \
  "moe bench --experts 4 --hidden 32 --expert-dim 64 --runs 3 | grep -q 'Average time per forward pass: .* ms' &&
   moe bench --experts 4 --hidden 32 --expert-dim 64 --runs 3 | grep -q 'Throughput: .* tokens/sec'"
check "moe bench at 2 ranks: a bad config ends both ranks with the message" fails_with \
  "top_k must be <= num_experts" moe-run -np 2 moe bench --experts 4 --top-k 5 --runs 1
check "moe bench --layer at 2 ranks times every phase" bash -c \
  "moe-run -np 2 moe bench --layer --experts 4 --hidden 32 --expert-dim 64 --tokens 200 --runs 3 | grep -q 'phases, ms per forward: route .* dispatch .* experts'"
check "moe bench --layer in expert groups of 1 at 2 ranks" bash -c \
  "moe-run -np 2 moe bench --layer --expert-parallel 1 --experts 4 --hidden 32 --expert-dim 64 --runs 3 |
   grep -q 'on 2 rank(s) in expert groups of 1 (2 replicas)'"
check "moe bench --expert-parallel needs --layer" fails_with "--expert-parallel requires --layer" \
  moe bench --expert-parallel 1
check "4 ranks write the same output file as 1" same_outputs out1.h5 out4.h5
check "infer at 4 ranks in expert groups of 2" moe-run -np 4 moe infer --ckpt model.h5 --input tokens.h5 \
  --output out4g.h5 --expert-parallel 2
check "... writes the same output file as 1" same_outputs out1.h5 out4g.h5
check "the output file has one aux loss and dropped count per rank" \
  "$MOE_PYTHON" -c "import h5py; f = h5py.File('out4.h5'); assert f['aux_loss'].shape == (4,) and f['dropped'].shape == (4,) and f['output'].shape == (3, 100, 32)"
check "init at 2 ranks writes the same model as at 1" bash -c \
  "moe-run -np 2 moe init --out model2.h5 --experts 8 --top-k 2 --hidden 32 --expert-dim 64 --dropless --seed 3 >/dev/null &&
   h5diff model.h5 model2.h5"

# A DeepSeek-style layer through init, info and infer.
ds=(--experts 8 --top-k 2 --hidden 32 --expert-dim 16 --dropless --seed 4 --expert-kind glu --no-expert-bias
    --router sigmoid --n-group 4 --topk-group 2 --routed-scaling 2.5 --shared-expert-dim 24 --shared-gate)
check "init a glu/sigmoid/shared layer at 1 and 2 ranks: the same file" bash -c \
  "moe init --out ds1.h5 ${ds[*]} >/dev/null && moe-run -np 2 moe init --out ds2.h5 ${ds[*]} >/dev/null && h5diff ds1.h5 ds2.h5"
check "info shows the architecture and verifies every tensor" bash -c \
  "moe info ds1.h5 > ds_info.txt && grep -q 'expert_kind            glu' ds_info.txt && grep -q 'router                 sigmoid' ds_info.txt &&
   grep -q '|w_gate|' ds_info.txt && grep -q '^/shared/gate ' ds_info.txt && grep -q '^/gate/expert_bias' ds_info.txt &&
   grep -q 'all 8 experts verified, and 6 other tensors' ds_info.txt"
check "infer a glu/sigmoid/shared layer at 1 and 2 ranks" bash -c \
  "moe infer --ckpt ds1.h5 --input tokens.h5 --output ds_out1.h5 >/dev/null && moe-run -np 2 moe infer --ckpt ds1.h5 --input tokens.h5 --output ds_out2.h5 >/dev/null"
check "2 ranks infer the same output as 1 (glu, sigmoid, shared)" same_outputs ds_out1.h5 ds_out2.h5
check "an unknown expert kind names the choices" fails_with "--expert-kind: swiglu not in {ffn,glu}" moe init --out x.h5 --expert-kind swiglu

# Empty input: no tokens at all, or fewer tokens than ranks (issue 10).
moe make-tokens --out empty.h5 --tokens 0 --hidden 32 >/dev/null
moe make-tokens --out one.h5 --tokens 1 --hidden 32 >/dev/null
for np in 1 2 4; do
  check "infer of 0 tokens at $np rank(s)" bash -c "moe-run -np $np moe infer --ckpt model.h5 --input empty.h5 --output empty_out$np.h5 >/dev/null &&
    \"$MOE_PYTHON\" -c \"import h5py; f = h5py.File('empty_out$np.h5'); assert f['output'].shape == (0, 32) and f['aux_loss'].shape == ($np,)\""
done
check "infer of 1 token at 4 ranks" moe-run -np 4 moe infer --ckpt model.h5 --input one.h5 --output one_out.h5

# Outputs that would destroy something (issue 10): an input, a device, a FIFO.
cp model.h5 keep.h5
check "infer refuses --output equal to --ckpt" fails_with "is the same file as --ckpt" \
  moe infer --ckpt model.h5 --input tokens.h5 --output model.h5
check "infer refuses --output equal to --input, through another path" fails_with "is the same file as --input" \
  moe-run -np 2 moe infer --ckpt model.h5 --input tokens.h5 --output ./../cli/tokens.h5
check "the checkpoint is untouched" cmp model.h5 keep.h5
check "an output that is a device is refused" fails_with "it exists and is not a regular file (a character device)" \
  moe make-tokens --out /dev/null --tokens 4 --hidden 8
mkfifo pipe
check "an output that is a FIFO is refused" fails_with "(a FIFO)" moe init --out pipe --experts 4 --hidden 8 --expert-dim 8
check "the FIFO is still a FIFO" test -p pipe

check "an unknown command is named" fails_with "unknown command 'bogus'; expected one of init, info" moe bogus
check "a range error says what was expected" fails_with "--steps: must be >= 0 (got -1)" moe train --steps -1
check "a range error for --tokens" fails_with "--tokens: must be > 0 (got 0)" moe train --tokens 0
check "a NaN clipping norm is refused, not taken as no clipping" fails_with "--clip: must be >= 0 (got nan)" \
  moe train --clip nan
check "a negative seed is refused, not wrapped" fails_with "--data-seed: must be >= 0 (got -1)" moe train --data-seed -1
check "... for init too" fails_with "--seed: must be >= 0 (got -3)" moe init --out seed.h5 --seed -3
check "top-1 with renormalised weights: a note that the router gets no task gradient" bash -c \
  "moe train --top-k 1 --steps 1 --tokens 64 --hidden 16 --expert-dim 16 2>&1 >/dev/null | grep -q 'gives the router no gradient'"
check "... and none with --raw-weights or top-2" bash -c \
  "! moe train --top-k 1 --raw-weights --steps 1 --tokens 64 --hidden 16 --expert-dim 16 2>&1 | grep -q 'no gradient' &&
   ! moe train --top-k 2 --steps 1 --tokens 64 --hidden 16 --expert-dim 16 2>&1 | grep -q 'no gradient'"
check "a negative --save-every is refused" fails_with "--save-every: must be >= 0 (got -1)" moe train --save-every -1

# Expert groups with replicas (--expert-parallel): the same training, loss for loss, as
# one group of every rank, and a checkpoint that resumes at another grouping.
train_small=(train --hidden 16 --expert-dim 32 --tokens 32 --steps 20 --log-every 10 --router sigmoid)
# step, loss and aux of each logged line; the grouping changes only the order of sums.
losses() { grep -E '^ +[0-9]+ +[0-9.]+ ' "$1" | awk '{print $1, $2, $3}'; }
moe-run -np 4 moe "${train_small[@]}" --ckpt ep_all.h5 > ep_all.txt 2>&1
moe-run -np 4 moe "${train_small[@]}" --ckpt ep_2.h5 --expert-parallel 2 > ep_2.txt 2>&1
check "--expert-parallel 2 at 4 ranks says so" grep -q "on 4 rank(s) in expert groups of 2 (2 replicas)" ep_2.txt
check "... and logs the losses of one group of 4, within 1e-4" bash -c "$(declare -f losses)
  paste -d ' ' <(losses ep_all.txt) <(losses ep_2.txt) | awk 'NF == 6 && \$1 == \$4 { n++;
    for (i = 2; i <= 3; i++) if ((\$i - \$(i + 3))^2 > (1e-4 * \$i)^2) bad++ } END { exit !(n == 2 && !bad) }'"
check "a grouped checkpoint resumes in groups of 1" moe-run -np 4 moe "${train_small[@]}" --steps 30 --resume ep_2.h5 \
  --ckpt ep_resumed.h5 --expert-parallel 1
check "--expert-parallel that does not divide the ranks is named" fails_with \
  "expert_parallel_size = 3 with 4 ranks; expected a divisor of the number of ranks" \
  timeout 60 moe-run -np 4 moe "${train_small[@]}" --expert-parallel 3

# Ranks given different command lines (issue 10): an error naming the option and ranks.
cat > per_rank.sh <<'SH'
#!/usr/bin/env bash
# Rank 1 gets "$1 $2" appended; the others do not.
extra=()
[[ ${OMPI_COMM_WORLD_RANK:-0} == 1 ]] && extra=("$1" "$2")
shift 2
exec moe "$@" "${extra[@]}"
SH
chmod +x per_rank.sh
check "a --steps that differs between ranks is named, not a hang" fails_with \
  "--steps differs between ranks (rank(s) 0 have one value, rank(s) 1 another" \
  timeout 60 moe-run -np 2 ./per_rank.sh --steps 7 train --experts 4 --hidden 16 --expert-dim 16 --tokens 16 --steps 3
check "a --ckpt that differs between ranks is named" fails_with "--ckpt differs between ranks" \
  timeout 60 moe-run -np 2 ./per_rank.sh --ckpt other.h5 train --experts 4 --hidden 16 --expert-dim 16 --steps 1 --ckpt a.h5
check "an --lr that differs between ranks is named" fails_with "--lr differs between ranks" \
  timeout 60 moe-run -np 2 ./per_rank.sh --lr 0.5 train --experts 4 --hidden 16 --expert-dim 16 --steps 1

# Damaged files end with a message naming the file and the object (issue 10).
moe init --out intact.h5 --experts 4 --top-k 2 --hidden 8 --expert-dim 8 >/dev/null
head -c 3000 intact.h5 > truncated.h5
check "a truncated file is named as such" fails_with "'truncated.h5' cannot be opened as an HDF5 file: it is truncated or damaged" moe info truncated.h5
"$MOE_PYTHON" - <<'PY'
import shutil, h5py
shutil.copy("intact.h5", "group.h5")
with h5py.File("group.h5", "r+") as f:
    del f["experts/w1"]
    f.create_group("experts/w1")
shutil.copy("intact.h5", "dangling.h5")
with h5py.File("dangling.h5", "r+") as f:
    del f["experts/w2"]
    f["experts/w2"] = h5py.SoftLink("/nowhere")
PY
check "a group where a dataset belongs is named" fails_with "'group.h5': /experts/w1 is a group; expected a dataset" \
  moe-run -np 2 moe infer --ckpt group.h5 --input tokens.h5 --output o.h5
check "a dangling link is named" fails_with "'dangling.h5': /experts/w2 is a link to nothing (dangling)" moe info dangling.h5

check "a missing checkpoint" fails_with "'absent.h5' does not exist" moe infer --ckpt absent.h5 --input tokens.h5 --output o.h5
check "a missing checkpoint, 2 ranks" fails_with "'absent.h5' does not exist" moe-run -np 2 moe infer --ckpt absent.h5 --input tokens.h5 --output o.h5
check "a token file without /tokens" fails_with "has no dataset /tokens" moe-run -np 2 moe infer --ckpt model.h5 --input model.h5 --output o.h5
check "tokens of another hidden size" bash -c "moe make-tokens --out t16.h5 --tokens 4 --hidden 16 >/dev/null; $(declare -f fails_with); fails_with 'expected [T, 32]' moe infer --ckpt model.h5 --input t16.h5 --output o.h5"
check "ranks that do not divide the experts" fails_with "num_experts = 8 is not divisible by the number of ranks (3)" moe-run -np 3 moe infer --ckpt model.h5 --input tokens.h5 --output o.h5
check "a missing option" fails_with "--output is required" moe infer --ckpt model.h5 --input tokens.h5
check "a bad config value" fails_with "top_k must be <= num_experts" moe init --out bad.h5 --experts 4 --top-k 5
check "an unwritable output" fails_with "does not exist" moe infer --ckpt model.h5 --input tokens.h5 --output no/dir/o.h5
check "not a checkpoint" fails_with "not a moe checkpoint" moe info tokens.h5

flip_bits() {  # flip_bits FILE DATASET CHUNK BYTE MASK: XOR one stored byte of a chunk
  "$MOE_PYTHON" - "$@" <<'PY'
import sys, h5py
path, dataset, chunk, at, mask = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5], 0)
with h5py.File(path, "r") as f:
    offset = f[dataset].id.get_chunk_info(chunk).byte_offset + at
with open(path, "r+b") as raw:
    raw.seek(offset)
    byte = raw.read(1)
    raw.seek(offset)
    raw.write(bytes([byte[0] ^ mask]))
PY
}
flip_bits model.h5 experts/w2 5 64 0xFF
check "info reports a corrupted chunk (exit 3)" bash -c "moe info model.h5 > info.txt; test \$? = 3 && grep -q '1 of 8 experts and 0 of 1 other tensors FAILED' info.txt && grep -q '^     5 .*FAILED' info.txt"
check "infer refuses a corrupted checkpoint" fails_with "Fletcher32" moe-run -np 2 moe infer --ckpt model.h5 --input tokens.h5 --output o.h5
# One flipped bit in the router's gate (unchecked before format 2, issue 10).
flip_bits keep.h5 gate/weight 0 8 0x01
check "info reports a flipped bit in /gate/weight, without numbers for it" bash -c \
  "moe info keep.h5 > gate_info.txt; test \$? = 3 && grep -q '^/gate/weight  *-  FAILED' gate_info.txt && grep -q '0 of 8 experts and 1 of 1 other tensors FAILED' gate_info.txt"
check "infer refuses a checkpoint whose gate is corrupt" fails_with "reading /gate/weight failed" \
  moe infer --ckpt keep.h5 --input tokens.h5 --output o.h5

((failures == 0))
