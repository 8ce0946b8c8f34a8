"""What the Python binding costs: forward + backward of one layer through moe.torch.MoE
against the C++ moe_bench --mode training on the same config, and against the PyTorch
loop over experts with autograd (bench/torch_moe.py), in one run. The three are timed in
interleaved rounds (moe_bench, moe.torch, PyTorch loop, again ...) and each figure is
the median over rounds of that round's median, so drift on a shared machine hits all.

usage: python_binding.py MOE_BENCH [--config mid] [--rounds 3]
Targets (issue 12): moe.torch / moe_bench >= 0.95, and moe.torch >= 1.5x the PyTorch loop."""
import argparse
import csv
import io
import os
import statistics
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_moe  # noqa: E402

import moe  # noqa: E402
import moe.torch  # noqa: E402


def moe_torch_ms(c, reps):
    config = moe.MOEConfig(c["E"], c["k"], c["H"], c["F"])
    module = moe.torch.MoE(config, seed=1)
    with torch.no_grad():  # a small gate keeps routing near uniform, as moe_bench does
        module.gate.weight.copy_(torch.randn(c["H"], c["E"], generator=torch.Generator().manual_seed(11)) * 0.02)
    x = torch.randn(c["T"], c["H"], generator=torch.Generator().manual_seed(10)).requires_grad_()
    grad = torch.randn(c["T"], c["H"], generator=torch.Generator().manual_seed(12)) * 1e-3
    aux_weight, z_weight = torch.tensor(0.01), torch.tensor(1e-3)

    def step():
        out, aux, z = module(x, return_losses=True)
        torch.autograd.backward((out, aux, z), (grad, aux_weight, z_weight))
        x.grad = None  # the parameters' gradients accumulate, as in moe_bench

    return torch_moe.median_ms(step, reps)


def moe_bench_ms(binary, name, reps):
    out = subprocess.run([binary, "--config", name, "--csv", "--mode", "training", "--reps", str(reps)], check=True,
                         capture_output=True, text=True).stdout
    row = next(csv.DictReader(io.StringIO(out)))
    return float(row["moe_ms"]), float(row["sgemm_ms"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("moe_bench")
    parser.add_argument("--config", default="mid", choices=["ref", "mid", "fine"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    c = torch_moe.CONFIGS[args.config]
    # moe_bench (C++) takes every core. moe.torch runs with the OpenMP count it finds, which
    # PyTorch sets at import (Debian's PyTorch 1.13: one thread on these machines), so the
    # count is set here, as a user wanting the cores would.
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    threads = torch.get_num_threads()
    print(f"forward + backward, config {args.config} (E={c['E']} k={c['k']} H={c['H']} F={c['F']} T={c['T']}), "
          f"{args.rounds} interleaved rounds of {args.reps}, {threads} thread(s), torch {torch.__version__}")
    runs = {"moe_bench (C++)": [], "moe.torch.MoE": [], "PyTorch loop": [], "dense sgemm": []}
    settings = []
    for _ in range(args.rounds):
        cpp, dense = moe_bench_ms(args.moe_bench, args.config, args.reps)
        runs["moe_bench (C++)"].append(cpp)
        runs["dense sgemm"].append(dense)
        runs["moe.torch.MoE"].append(moe_torch_ms(c, args.reps))
        # PyTorch at its fastest thread setting, each in a process of its own: constructing
        # a moe layer sets this process's OpenMP threads, which PyTorch shares.
        loops = {s: torch_moe.time_in_subprocess(args.config, True, *s, reps=args.reps)
                 for s in torch_moe.THREAD_SETTINGS}
        best = min(loops, key=loops.get)
        runs["PyTorch loop"].append(loops[best])
        settings.append(torch_moe.setting_name(best))
    ms = {k: statistics.median(v) for k, v in runs.items()}
    for k, v in ms.items():
        print(f"  {k:16} {v:9.2f} ms   (rounds: {', '.join(f'{t:.1f}' for t in runs[k])})")
    print(f"PyTorch loop: the fastest of {len(torch_moe.THREAD_SETTINGS)} thread settings per round: "
          + ", ".join(settings))
    print(f"moe.torch / moe_bench speed: {ms['moe_bench (C++)'] / ms['moe.torch.MoE']:.3f}  (target >= 0.95)")
    print(f"moe.torch / PyTorch loop speed: {ms['PyTorch loop'] / ms['moe.torch.MoE']:.2f}x  (target >= 1.5)")


if __name__ == "__main__":
    main()
