#!/usr/bin/env python3
"""Draws a `moe train --metrics FILE.jsonl` file as PNGs in OUT_DIR:

  loss.png         the task loss (and the aux loss) against the step
  expert-load.png  each expert's share of the top-k choices over the mean, expert x step:
                   a balanced router is one flat colour, a collapsing one a bright row
  throughput.png   tokens/s against the step
  phases.png       where a step's time goes (forward and backward phases, ms per step)

Usage: scripts/plot-training.py FILE.jsonl OUT_DIR
Needs matplotlib (Debian python3-matplotlib); run with a python3 that has it, e.g.
/usr/bin/python3 when the first python3 on PATH is another install.
"""
import json
import os
import sys


def read_metrics(path):
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"plot-training: {path}:{number}: not JSON ({e})")
    if not rows:
        sys.exit(f"plot-training: {path} holds no metrics lines")
    for key in ("step", "loss", "tokens_per_s", "chosen_per_expert"):
        if key not in rows[0]:
            sys.exit(f"plot-training: {path}: lines lack '{key}'; expected `moe train --metrics` output")
    return rows


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    try:
        import matplotlib
    except ImportError:
        sys.exit(f"plot-training: {sys.executable} cannot import matplotlib; install python3-matplotlib "
                 "(scripts/install-deps.sh) and run with that python3")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = read_metrics(argv[1])
    out_dir = argv[2]
    os.makedirs(out_dir, exist_ok=True)
    steps = np.array([r["step"] for r in rows])

    def number(r, key):
        v = r.get(key)
        return np.nan if v is None else v

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [number(r, "loss") for r in rows], label="task loss")
    ax.set_xlabel("step")
    ax.set_ylabel("task loss")
    ax.set_yscale("log")
    aux = ax.twinx()
    aux.plot(steps, [number(r, "aux_loss") for r in rows], color="tab:orange", alpha=0.7, label="aux loss")
    aux.set_ylabel("aux loss (1 = balanced)")
    fig.legend(loc="upper right")
    ax.set_title("moe train: loss")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "loss.png"), dpi=120)
    plt.close(fig)

    load = np.array([r["chosen_per_expert"] for r in rows], dtype=float).T  # experts x windows
    mean = load.mean(axis=0, keepdims=True)
    share = np.divide(load, mean, out=np.zeros_like(load), where=mean > 0)
    fig, ax = plt.subplots(figsize=(8, max(3, 0.25 * load.shape[0] + 1.5)))
    # each window's cell spans the steps it sums: (previous logged step, its step]
    edges = np.concatenate([[steps[0] - rows[0].get("steps_in_window", 1)], steps])
    image = ax.pcolormesh(edges, np.arange(load.shape[0] + 1) - 0.5, share, cmap="viridis", vmin=0,
                          vmax=max(2.0, float(share.max())))
    fig.colorbar(image, ax=ax, label="choices / mean over experts")
    ax.set_xlabel("step")
    ax.set_ylabel("expert")
    ax.set_title("expert load (top-k choices before capacity, all ranks)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "expert-load.png"), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [number(r, "tokens_per_s") for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel("tokens/s (all ranks)")
    ax.set_ylim(bottom=0)
    ax.set_title("moe train: throughput")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "throughput.png"), dpi=120)
    plt.close(fig)

    if "forward_ms" in rows[0]:
        phases = [k for k in rows[0]["forward_ms"] if k != "total"]
        fig, ax = plt.subplots(figsize=(7, 4))
        for offset, (label, key) in enumerate([("forward", "forward_ms"), ("backward", "backward_ms")]):
            bottom = 0.0
            for i, phase in enumerate(phases):
                value = float(np.mean([r[key][phase] for r in rows]))
                ax.bar(offset, value, bottom=bottom, color=plt.cm.tab10(i), label=phase if offset == 0 else None)
                bottom += value
        ax.set_xticks([0, 1], ["forward", "backward"])
        ax.set_ylabel("ms per step (mean over the run)")
        ax.set_title("where a step's time goes (rank 0)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "phases.png"), dpi=120)
        plt.close(fig)
    print(f"plot-training: {len(rows)} windows, steps {steps[0]}..{steps[-1]} -> {out_dir}")


if __name__ == "__main__":
    main(sys.argv)
