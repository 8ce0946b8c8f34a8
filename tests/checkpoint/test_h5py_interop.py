"""Checkpoints and h5py, both ways:
1. a checkpoint written by `moe init` is read with h5py alone, one expert's output and
   the whole layer are recomputed in numpy, and match what `moe infer` wrote;
2. a checkpoint written by h5py (float64, contiguous, no Fletcher32 filter) is loaded
   by `moe infer` and gives the numpy layer's output.
usage: test_h5py_interop.py MOE_BINARY WORK_DIR"""
import os
import subprocess
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy_moe  # noqa: E402

moe, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
failures = []


def check(name, ok, detail=""):
    print(("ok    " if ok else "FAIL  ") + name + ("" if ok else ": " + detail))
    if not ok:
        failures.append(name)


def run(*args):
    subprocess.run([moe, *args], check=True, stdout=subprocess.DEVNULL)


def relative_error(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


tokens = os.path.join(work, "tokens.h5")
run("make-tokens", "--out", tokens, "--tokens", "96", "--hidden", "24", "--seed", "4")
with h5py.File(tokens, "r") as f:
    x = f["tokens"][...].astype(np.float64)

# 1. moe writes, h5py + numpy read and recompute.
ckpt = os.path.join(work, "moe_written.h5")
run("init", "--out", ckpt, "--experts", "6", "--top-k", "2", "--hidden", "24", "--expert-dim", "40",
    "--activation", "silu", "--capacity-factor", "1.0", "--seed", "9")
config, params = numpy_moe.load(ckpt)
with h5py.File(ckpt, "r") as f:
    check("format attributes", f.attrs["format"] == "moe-checkpoint" and int(f.attrs["format_version"]) == 2
          and f.attrs["expert_kind"] == "ffn" and f.attrs["router"] == "softmax" and int(f.attrs["expert_bias"]) == 1)
    check("the gate is Fletcher32-checksummed too", f["gate/weight"].fletcher32)
    check("expert datasets are Fletcher32-checksummed, one expert per chunk",
          f["experts/w1"].fletcher32 and f["experts/w1"].chunks == (1, 24, 40))
out_file = os.path.join(work, "moe_out.h5")
run("infer", "--ckpt", ckpt, "--input", tokens, "--output", out_file)
with h5py.File(out_file, "r") as f:
    moe_out, moe_idx, moe_w = f["output"][...], f["expert_indices"][...], f["expert_weights"][...]
ref_out, ref_idx, ref_w = numpy_moe.layer(config, params, x)
check("indices equal numpy's", np.array_equal(moe_idx, ref_idx))
check("weights match numpy's", relative_error(moe_w, ref_w) <= 1e-5, str(relative_error(moe_w, ref_w)))
check("output matches numpy's", relative_error(moe_out, ref_out) <= 1e-5, str(relative_error(moe_out, ref_out)))
# One expert alone: with top-1, normalised weights are 1 and nothing is dropped, so
# every token routed to expert 3 gets exactly expert 3's output.
top1 = os.path.join(work, "top1.h5")
run("init", "--out", top1, "--experts", "6", "--top-k", "1", "--hidden", "24", "--expert-dim", "40", "--dropless",
    "--seed", "10")
run("infer", "--ckpt", top1, "--input", tokens, "--output", out_file)
config1, params1 = numpy_moe.load(top1)
with h5py.File(out_file, "r") as f:
    rows = f["expert_indices"][...][:, 0] == 3
    got = f["output"][...][rows]
check("some tokens go to expert 3", rows.sum() > 0)
y3 = numpy_moe.expert(config1, params1, 3, x[rows])
check("expert 3's output recomputed in numpy", relative_error(got, y3) <= 1e-5, str(relative_error(got, y3)))

# 2. h5py writes (float64, contiguous, no filter), moe reads.
plain = os.path.join(work, "h5py_written.h5")
rng = np.random.default_rng(5)
E, k, H, F = 4, 2, 24, 32
with h5py.File(plain, "w") as f:
    for key, value in dict(format="moe-checkpoint", format_version=1, num_experts=E, top_k=k, hidden_dim=H,
                           expert_dim=F, normalize_top_k=1, drop_tokens=0, activation="gelu", step=12).items():
        f.attrs[key] = value
    f.attrs["capacity_factor"] = 1.25
    f["gate/weight"] = rng.normal(0, 0.3, (H, E))
    f["experts/w1"] = rng.normal(0, 0.2, (E, H, F))
    f["experts/b1"] = rng.normal(0, 0.1, (E, F))
    f["experts/w2"] = rng.normal(0, 0.2, (E, F, H))
    f["experts/b2"] = rng.normal(0, 0.1, (E, H))
info = subprocess.run([moe, "info", plain], capture_output=True, text=True)
check("moe info reads the h5py file and reports no checksums", info.returncode == 0 and "none stored" in info.stdout,
      info.stdout + info.stderr)
check("moe info shows the step", "step        12" in info.stdout, info.stdout)
out_plain = os.path.join(work, "plain_out.h5")
run("infer", "--ckpt", plain, "--input", tokens, "--output", out_plain)
config, params = numpy_moe.load(plain)
# moe stores float32: compare against numpy on the float32-rounded parameters.
params = {name: value.astype(np.float32).astype(np.float64) for name, value in params.items()}
ref_out, ref_idx, _ = numpy_moe.layer(config, params, x)
with h5py.File(out_plain, "r") as f:
    check("h5py-written checkpoint: indices equal numpy's", np.array_equal(f["expert_indices"][...], ref_idx))
    err = relative_error(f["output"][...], ref_out)
    check("h5py-written checkpoint: output matches numpy's", err <= 1e-5, str(err))

sys.exit(1 if failures else 0)
