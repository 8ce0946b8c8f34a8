"""`moe import` of one MoE layer per architecture (Mixtral, Qwen2-MoE, Qwen3-MoE,
DeepSeek-V3) from safetensors files this test writes itself (the format: an 8-byte
little-endian header length, a JSON header, raw little-endian data), one file or
sharded with an index, in BF16, F16 and F32. A numpy implementation of each
architecture's MoE block, written from the models' definitions, computes the expected
output; `moe import` then `moe infer` (dropless) must match it to 1e-5 relative at
P = 1 and 2. A missing tensor, a wrong shape and an unknown dtype are errors naming
the tensor.
usage: test_import.py MOE_BIN_DIR WORK_DIR"""
import json
import os
import shutil
import struct
import subprocess
import sys

import h5py
import numpy as np

bin_dir, work = sys.argv[1], sys.argv[2]
moe, moe_run = os.path.join(bin_dir, "moe"), os.path.join(bin_dir, "moe-run")
os.makedirs(work, exist_ok=True)
failures = []


def check(name, ok, detail=""):
    print(("ok    " if ok else "FAIL  ") + name + ("" if ok else ": " + detail))
    if not ok:
        failures.append(name)


# ---- safetensors writing -------------------------------------------------------------

def to_bf16_bits(a):
    """float32 → bfloat16 bits, round to nearest even."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def stored(a, dtype):
    """The raw bytes of `a` in `dtype`, and the float32 values a reader gets back."""
    if dtype == "BF16":
        bits = to_bf16_bits(a)
        return bits.astype("<u2").tobytes(), from_bf16_bits(bits)
    if dtype == "F16":
        h = a.astype("<f2")
        return h.tobytes(), h.astype(np.float32)
    f = a.astype("<f4")
    return f.tobytes(), f.astype(np.float32)


def write_safetensors(path, tensors):
    """tensors: {name: (dtype, shape, raw bytes)}"""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


# ---- the architectures' MoE blocks, from their definitions (float64) ----------------

def silu(z):
    return z / (1.0 + np.exp(-z))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def glu_mlp(x, gate, up, down):  # PyTorch Linear weights, [out, in]
    return (silu(x @ gate.T) * (x @ up.T)) @ down.T


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def routed(x, weights, indices, experts):
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for w, e in zip(weights[t], indices[t]):
            out[t] += w * glu_mlp(x[t:t + 1], *experts[e])[0]
    return out


def softmax_block(x, p, k, normalize):
    """Mixtral, Qwen2-MoE and Qwen3-MoE: softmax over the router logits, top-k, optional
    renormalisation; Qwen2-MoE adds sigmoid(x·w_s) times the shared expert."""
    probs = softmax(x @ p["gate"].T)
    indices = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    weights = np.take_along_axis(probs, indices, axis=1)
    if normalize:
        weights = weights / weights.sum(axis=1, keepdims=True)
    out = routed(x, weights, indices, p["experts"])
    if "shared" in p:
        out += sigmoid(x @ p["shared_gate"].T) * glu_mlp(x, *p["shared"])
    return out


def deepseek_block(x, p, k, n_group, topk_group, scale):
    """DeepSeek-V3: sigmoid scores; selection by score + correction bias within the
    topk_group groups whose two best scores sum highest; weights are the scores,
    normalised, times the routed scaling factor; plus the shared experts."""
    scores = sigmoid(x @ p["gate"].T)
    choice = scores + p["bias"]
    T, E = choice.shape
    group_scores = np.sort(choice.reshape(T, n_group, -1), axis=2)[:, :, -2:].sum(axis=2)
    groups = np.argsort(-group_scores, axis=1, kind="stable")[:, :topk_group]
    mask = np.zeros((T, n_group), dtype=bool)
    np.put_along_axis(mask, groups, True, axis=1)
    masked = np.where(np.repeat(mask, E // n_group, axis=1), choice, -np.inf)
    indices = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    weights = np.take_along_axis(scores, indices, axis=1)
    weights = weights / (weights.sum(axis=1, keepdims=True) + 1e-20) * scale
    return routed(x, weights, indices, p["experts"]) + glu_mlp(x, *p["shared"])


# ---- models -------------------------------------------------------------------------

rng = np.random.default_rng(7)
H, E, F, LAYER = 24, 8, 16, 1


def make_model(arch, directory, dtype, sharded):
    """Writes layers 0 and 1 (layer 0 different, to catch a wrong layer) and config.json;
    returns layer 1's parameters as the reader sees them (float64) and the settings."""
    os.makedirs(directory, exist_ok=True)
    names = {
        "mixtral": ("block_sparse_moe", ("w1", "w3", "w2"), None),
        "qwen2_moe": ("mlp", ("gate_proj", "up_proj", "down_proj"), "shared_expert"),
        "qwen3_moe": ("mlp", ("gate_proj", "up_proj", "down_proj"), None),
        "deepseek_v3": ("mlp", ("gate_proj", "up_proj", "down_proj"), "shared_experts"),
    }[arch]
    block, projections, shared = names
    tensors, params = {}, {}

    def add(name, a, keep=None):
        raw, back = stored(a, dtype)
        tensors[name] = (dtype, a.shape, raw)
        return back.astype(np.float64).reshape(a.shape)

    shared_dim = 2 * F
    for layer in (0, 1):
        prefix = f"model.layers.{layer}.{block}"
        gate = add(f"{prefix}.gate.weight", rng.normal(0, 0.5, (E, H)).astype(np.float32))
        experts = []
        for e in range(E):
            g = add(f"{prefix}.experts.{e}.{projections[0]}.weight", rng.normal(0, 0.3, (F, H)).astype(np.float32))
            u = add(f"{prefix}.experts.{e}.{projections[1]}.weight", rng.normal(0, 0.3, (F, H)).astype(np.float32))
            d = add(f"{prefix}.experts.{e}.{projections[2]}.weight", rng.normal(0, 0.3, (H, F)).astype(np.float32))
            experts.append((g, u, d))
        p = {"gate": gate, "experts": experts}
        if shared:
            p["shared"] = tuple(
                add(f"{prefix}.{shared}.{proj}.weight", rng.normal(0, 0.3, shape).astype(np.float32))
                for proj, shape in zip(projections, [(shared_dim, H), (shared_dim, H), (H, shared_dim)]))
        if arch == "qwen2_moe":
            p["shared_gate"] = add(f"{prefix}.shared_expert_gate.weight", rng.normal(0, 0.3, (1, H)).astype(np.float32))
        if arch == "deepseek_v3":
            # The correction bias is kept in float32 by DeepSeek's checkpoints.
            raw, back = stored(rng.normal(0, 0.05, (E,)).astype(np.float32), "F32")
            tensors[f"{prefix}.gate.e_score_correction_bias"] = ("F32", (E,), raw)
            p["bias"] = back.astype(np.float64)
        if layer == LAYER:
            params = p
    settings = {"mixtral": dict(k=2, normalize=True), "qwen2_moe": dict(k=3, normalize=False),
                "qwen3_moe": dict(k=2, normalize=True),
                "deepseek_v3": dict(k=3, n_group=4, topk_group=2, scale=2.5)}[arch]
    config = {"hidden_size": H, "num_experts_per_tok": settings["k"], "hidden_act": "silu"}
    if "normalize" in settings:
        config["norm_topk_prob"] = settings["normalize"]
    if arch == "deepseek_v3":
        config.update(n_group=4, topk_group=2, routed_scaling_factor=2.5, scoring_func="sigmoid",
                      first_k_dense_replace=1, norm_topk_prob=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    if sharded:
        names = list(tensors)
        halves = [names[: len(names) // 2], names[len(names) // 2:]]
        weight_map = {}
        for i, part in enumerate(halves):
            file = f"model-0000{i + 1}-of-00002.safetensors"
            write_safetensors(os.path.join(directory, file), {n: tensors[n] for n in part})
            weight_map.update({n: file for n in part})
        with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
    else:
        write_safetensors(os.path.join(directory, "model.safetensors"), tensors)
    return params, settings, tensors


def expected_output(arch, x, params, s):
    if arch == "deepseek_v3":
        return deepseek_block(x, params, s["k"], s["n_group"], s["topk_group"], s["scale"])
    return softmax_block(x, params, s["k"], s["normalize"])


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True)


T = 50
tokens = os.path.join(work, "tokens.h5")
x = rng.normal(0, 1, (T, H)).astype(np.float32)
with h5py.File(tokens, "w") as f:
    f["tokens"] = x

cases = [("mixtral", "BF16", False), ("qwen2_moe", "F16", True), ("qwen3_moe", "F32", False),
         ("deepseek_v3", "BF16", True)]
for arch, dtype, sharded in cases:
    model = os.path.join(work, arch)
    params, settings, tensors = make_model(arch, model, dtype, sharded)
    expected = expected_output(arch, x.astype(np.float64), params, settings)
    what = f"{arch} ({dtype}, {'sharded with an index' if sharded else 'one file'})"
    outputs = []
    for np_ in (1, 2):
        ckpt = os.path.join(work, f"{arch}_{np_}.h5")
        out = os.path.join(work, f"{arch}_{np_}_out.h5")
        imported = run(moe_run, "-np", str(np_), moe, "import", "--model", model, "--arch", arch,
                       "--layer", str(LAYER), "--out", ckpt)
        check(f"import {what} at P = {np_}", imported.returncode == 0, imported.stdout + imported.stderr)
        inferred = run(moe_run, "-np", str(np_), moe, "infer", "--ckpt", ckpt, "--input", tokens, "--output", out)
        check(f"infer {arch} at P = {np_}", inferred.returncode == 0, inferred.stdout + inferred.stderr)
        if imported.returncode or inferred.returncode:
            continue
        with h5py.File(out, "r") as f:
            got = f["output"][...]
        outputs.append(got)
        err = float(np.abs(got - expected).max() / np.abs(expected).max())
        check(f"{arch} at P = {np_} matches the numpy block to 1e-5 (relative error {err:.1e})", err <= 1e-5)
    if len(outputs) == 2:
        check(f"{arch}: P = 2 imports the same checkpoint as P = 1",
              run("h5diff", os.path.join(work, f"{arch}_1.h5"), os.path.join(work, f"{arch}_2.h5")).returncode == 0)

# The settings came from config.json.
info = run(moe, "info", os.path.join(work, "deepseek_v3_1.h5")).stdout
check("DeepSeek-V3's routing settings are in the checkpoint",
      all(s in info for s in ["router                 sigmoid", "n_group                4", "topk_group             2",
                              "routed_scaling_factor  2.5", "shared_expert_dim      32", "expert_bias            false"]),
      info)

# Errors name the tensor.
def fails_with(message, *args):
    r = run(moe, *args)
    return r.returncode != 0 and message in (r.stdout + r.stderr), r.stdout + r.stderr


broken = os.path.join(work, "broken")
shutil.rmtree(broken, ignore_errors=True)
os.makedirs(broken)
_, _, tensors = make_model("qwen3_moe", os.path.join(work, "fresh"), "F32", False)
missing = dict(tensors)
del missing["model.layers.1.mlp.experts.3.up_proj.weight"]
write_safetensors(os.path.join(broken, "model.safetensors"), missing)
ok, out = fails_with("has no tensor model.layers.1.mlp.experts.3.up_proj.weight", "import", "--model", broken,
                     "--arch", "qwen3_moe", "--layer", "1", "--out", os.path.join(work, "x.h5"))
check("a missing tensor is named", ok, out)
wrong = dict(tensors)
name = "model.layers.1.mlp.experts.2.down_proj.weight"
wrong[name] = ("F32", (F, H), tensors[name][2])
write_safetensors(os.path.join(broken, "model.safetensors"), wrong)
ok, out = fails_with(f"tensor {name} has shape [{F}, {H}]; expected [{H}, {F}]", "import", "--model", broken,
                     "--arch", "qwen3_moe", "--layer", "1", "--out", os.path.join(work, "x.h5"))
check("a wrong shape is named", ok, out)
odd = dict(tensors)
odd[name] = ("I8", (H, F), b"\0" * (H * F))
write_safetensors(os.path.join(broken, "model.safetensors"), odd)
ok, out = fails_with(f"tensor {name} has dtype I8; expected BF16, F16 or F32", "import", "--model", broken,
                     "--arch", "qwen3_moe", "--layer", "1", "--out", os.path.join(work, "x.h5"))
check("an unknown dtype is named", ok, out)
ok, out = fails_with("layer 0 of this model is a dense MLP", "import", "--model", os.path.join(work, "deepseek_v3"),
                     "--arch", "deepseek_v3", "--layer", "0", "--out", os.path.join(work, "x.h5"))
check("a dense DeepSeek layer is refused", ok, out)
with open(os.path.join(broken, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", 1 << 40))
ok, out = fails_with("not a safetensors file", "import", "--model", broken, "--arch", "qwen3_moe", "--layer", "1",
                     "--out", os.path.join(work, "x.h5"))
check("a header length past the end of the file is refused", ok, out)

print(f"{len(failures)} failed" if failures else "all import checks passed")
sys.exit(1 if failures else 0)
