"""moe versus PyTorch eager on the CPU for the benchmark configs, measured in one run.

Honest baseline: PyTorch runs in a process of its own under each thread setting a
careful user would try (torch.set_num_threads 1 or 2, OpenBLAS 1 or 2 threads), and the
fastest is kept and named. moe_bench and every PyTorch setting are timed in
interleaved rounds (moe, then each setting, then moe again ...); each figure is the
median over rounds, so drift on a shared machine hits all of them.

usage: compare_pytorch.py MOE_BENCH [--config ref,mid,fine] [--mode forward|training]
                          [--activation relu|gelu|gelu_tanh|silu] [--rounds 3] [--plot DIR]
training: forward + backward, PyTorch autograd against MoELayer.backward."""
import argparse
import csv
import io
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_moe  # noqa: E402


def moe_bench_ms(binary, name, mode, activation):
    out = subprocess.run([binary, "--config", name, "--csv", "--mode", mode, "--activation", activation], check=True,
                         capture_output=True, text=True).stdout
    return float(next(csv.DictReader(io.StringIO(out)))["moe_ms"])


def plot(rows, mode, directory):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    names = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(names, [r[1] / r[2] for r in rows], color="tab:blue")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("PyTorch ms / moe ms (above 1: moe faster)")
    ax.set_title(f"moe vs best-tuned PyTorch eager, {mode}")
    for i, r in enumerate(rows):
        ax.annotate(f"{r[1] / r[2]:.2f}", (i, r[1] / r[2]), ha="center", va="bottom")
    fig.tight_layout()
    path = os.path.join(directory, f"compare-pytorch-{mode}.png")
    fig.savefig(path, dpi=120)
    print(f"chart: {path}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("moe_bench")
    parser.add_argument("--config", default="ref,mid,fine")
    parser.add_argument("--mode", choices=["forward", "training"], default="forward")
    parser.add_argument("--activation", choices=sorted(torch_moe.ACTIVATIONS), default="relu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plot", metavar="DIR", help="also draw the ratios as a PNG chart in DIR")
    args = parser.parse_args()

    import torch

    training = args.mode == "training"
    what = "forward + backward (autograd)" if training else "forward"
    print(f"moe vs PyTorch {torch.__version__} eager {what} (loop over experts with index_add_), "
          f"{args.activation} experts, CPU, "
          f"medians over {args.rounds} interleaved rounds; PyTorch at its fastest of "
          f"{len(torch_moe.THREAD_SETTINGS)} thread settings")
    print(f"{'cfg':5} {'torch ms':>9} {'moe ms':>9} {'speed-up':>9}   PyTorch setting used")
    rows = []
    for name in args.config.split(","):
        moe_runs, torch_runs = [], {s: [] for s in torch_moe.THREAD_SETTINGS}
        for _ in range(args.rounds):
            moe_runs.append(moe_bench_ms(args.moe_bench, name, args.mode, args.activation))
            for setting in torch_moe.THREAD_SETTINGS:
                torch_runs[setting].append(
                    torch_moe.time_in_subprocess(name, training, *setting, activation=args.activation))
        medians = {s: statistics.median(v) for s, v in torch_runs.items()}
        best = min(medians, key=medians.get)
        moe_ms = statistics.median(moe_runs)
        rows.append((name, medians[best], moe_ms))
        print(f"{name:5} {medians[best]:9.2f} {moe_ms:9.2f} {medians[best] / moe_ms:9.2f}   "
              f"{torch_moe.setting_name(best)}  (others: "
              + ", ".join(f"{s[0]}x{s[1]} {m:.1f}" for s, m in medians.items() if s != best) + ")")
    print("speed-up = PyTorch ms / moe ms (above 1: moe is faster)")
    if args.plot:
        plot(rows, args.mode, args.plot)


if __name__ == "__main__":
    main()
