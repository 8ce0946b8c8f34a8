"""moe versus PyTorch eager on the CPU for the benchmark configs, measured in one run:
for each config PyTorch is timed, then moe_bench, then PyTorch again, and the ratio
uses the mean of the two PyTorch medians, so drift on a shared machine hits both.

usage: compare_pytorch.py MOE_BENCH [--config ref,mid,fine] [--threads N] [--mode forward|training]
training: forward + backward, PyTorch autograd against MoELayer.backward."""
import argparse
import csv
import io
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_moe  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("moe_bench")
    parser.add_argument("--config", default="ref,mid,fine")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--mode", choices=["forward", "training"], default="forward")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    training = args.mode == "training"
    what = "forward + backward (autograd)" if training else "forward"
    print(f"moe vs PyTorch {torch.__version__} eager {what} (loop over experts with index_add_), "
          f"{args.threads} thread(s) each, CPU")
    print(f"{'cfg':5} {'torch ms':>9} {'moe ms':>9} {'moe/PyTorch':>12}   (speed-up: torch time / moe time)")
    for name in args.config.split(","):
        before = torch_moe.time_config(name, training=training)
        out = subprocess.run([args.moe_bench, "--config", name, "--csv", "--mode", args.mode], env=env, check=True,
                             capture_output=True, text=True).stdout
        row = next(csv.DictReader(io.StringIO(out)))
        after = torch_moe.time_config(name, training=training)
        torch_ms = 0.5 * (before + after)
        moe_ms = float(row["moe_ms"])
        print(f"{name:5} {torch_ms:9.2f} {moe_ms:9.2f} {torch_ms / moe_ms:12.2f}")


if __name__ == "__main__":
    main()
