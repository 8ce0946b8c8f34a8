"""The same MoE forward in PyTorch eager on the CPU, written the usual way (a loop
over experts with index_add_), with the capacity rule of docs/design.md §1, for the
moe-versus-PyTorch ratio. Imported by compare_pytorch.py."""
import math
import os
import subprocess
import sys
import time

import torch

CONFIGS = {
    "ref": dict(E=8, k=2, H=512, F=2048, T=128, reps=60),
    "mid": dict(E=8, k=2, H=1024, F=4096, T=4096, reps=7),
    "fine": dict(E=64, k=8, H=1024, F=512, T=4096, reps=7),
}


# moe_bench's --activation names, as PyTorch computes them (F.gelu is the erf form).
ACTIVATIONS = {
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "gelu_tanh": lambda z: torch.nn.functional.gelu(z, approximate="tanh"),
    "silu": torch.nn.functional.silu,
}


class TorchMoE:
    """The layer as PyTorch code is usually written (Hugging Face's Mixtral block, say): one
    weight tensor per expert (a stacked [E, H, F] tensor indexed per expert would make
    autograd build a full [E, H, F] gradient for every expert's slice), a loop over the
    experts, and index_add_ for the combine."""

    def __init__(self, E, k, H, F, capacity_factor=1.25, seed=0, requires_grad=False, device="cpu",
                 dtype=torch.float32, activation="relu"):
        g = torch.Generator().manual_seed(seed)
        self.E, self.k, self.cf = E, k, capacity_factor
        self.activation = ACTIVATIONS[activation]

        def param(*shape):
            return (torch.randn(*shape, generator=g) * 0.02).to(device=device, dtype=dtype).requires_grad_(requires_grad)

        self.wg = param(H, E)
        self.w1 = [param(H, F) for _ in range(E)]
        self.b1 = [param(F) for _ in range(E)]
        self.w2 = [param(F, H) for _ in range(E)]
        self.b2 = [param(H) for _ in range(E)]

    def parameters(self):
        return [self.wg, *self.w1, *self.b1, *self.w2, *self.b2]

    def forward(self, x):
        T = x.shape[0]
        probs = torch.softmax(x @ self.wg, dim=-1)
        top_w, top_i = probs.topk(self.k, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        capacity = math.ceil(self.cf * T * self.k / self.E)
        out = torch.zeros_like(x)
        for e in range(self.E):
            tok, slot = (top_i == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            # Slot-major admission: every token's first choice before any second choice.
            order = torch.argsort(slot * T + tok)[:capacity]
            tok, slot = tok[order], slot[order]
            h = self.activation(torch.addmm(self.b1[e], x[tok], self.w1[e]))
            y = torch.addmm(self.b2[e], h, self.w2[e])
            out.index_add_(0, tok, y * top_w[tok, slot].unsqueeze(1))
        return out


def median_ms(run, reps, warmup=2, sync=lambda: None):
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    n = len(times)
    mid = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    return mid * 1e3


def time_config(name, reps=None, training=False, device="cpu", dtype=torch.float32, activation="relu"):
    """Median ms of a forward (no_grad), or of forward + backward with autograd."""
    c = CONFIGS[name]
    model = TorchMoE(c["E"], c["k"], c["H"], c["F"], requires_grad=training, device=device, dtype=dtype,
                     activation=activation)
    x = torch.randn(c["T"], c["H"], generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    x.requires_grad_(training)
    grad = (torch.randn(c["T"], c["H"], generator=torch.Generator().manual_seed(2)) * 1e-3).to(device=device, dtype=dtype)
    if not training:
        def run():
            with torch.no_grad():
                model.forward(x)
    else:
        def run():
            model.forward(x).backward(grad)
            for p in (*model.parameters(), x):
                p.grad = None
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return median_ms(run, reps or c["reps"], sync=sync)


# The thread settings a careful user would try on a CPU: PyTorch's intra-op threads times
# the BLAS's own threads (Debian's PyTorch calls OpenBLAS, which keeps its own pool).
THREAD_SETTINGS = [(t, b) for t in (1, 2) for b in (1, 2)]


def time_in_subprocess(name, training, torch_threads, blas_threads, reps=None, python=sys.executable,
                       activation="relu"):
    """Median ms of the PyTorch layer in a fresh process with those thread settings (a
    process of its own, so no other library in this one has touched the thread pools)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(blas_threads), OMP_NUM_THREADS=str(torch_threads))
    command = [python, os.path.abspath(__file__), "--config", name, "--mode", "training" if training else "forward",
               "--torch-threads", str(torch_threads), "--activation", activation]
    if reps:
        command += ["--reps", str(reps)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def setting_name(setting):
    return f"torch {setting[0]} x OpenBLAS {setting[1]} thread(s)"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="time the PyTorch eager MoE layer")
    parser.add_argument("--config", default="mid", choices=sorted(CONFIGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--mode", default="forward", choices=["forward", "training"])
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--activation", default="relu", choices=sorted(ACTIVATIONS))
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.device == "cuda" and args.dtype == "float32":
        torch.backends.cuda.matmul.allow_tf32 = False
    ms = time_config(args.config, args.reps, args.mode == "training", args.device, getattr(torch, args.dtype),
                     args.activation)
    print(f"{ms:.3f}")
