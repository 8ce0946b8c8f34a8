"""Draws bench/scaling.sh's table (CSV) as PNG charts: weak-scaling efficiency per traffic
mode, and the all-to-all phases against raw MPI_Alltoallv.
usage: plot_scaling.py TABLE.csv OUT_DIR"""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(table, out_dir):
    rows = list(csv.DictReader(open(table)))
    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in sorted({r["mode"] for r in rows if r["section"] == "weak"}):
        points = [(int(r["ranks"]), float(r["efficiency"])) for r in rows if r["section"] == "weak" and r["mode"] == mode]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=mode)
    ax.set_xlabel("ranks (1 thread each, same tokens per rank)")
    ax.set_ylabel("efficiency t(1) / t(P)")
    ax.set_xticks([1, 2, 4])
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("moe weak scaling, mid config")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "scaling-efficiency.png"), dpi=120)
    plt.close(fig)

    a2a = [r for r in rows if r["section"] == "alltoall"]
    if a2a:
        fig, ax = plt.subplots(figsize=(6, 4))
        ranks = [r["ranks"] for r in a2a]
        x = range(len(a2a))
        ax.bar([i - 0.27 for i in x], [float(r["phases_ms"]) for r in a2a], width=0.27, label="moe all-to-all phases")
        ax.bar([i for i in x], [float(r["raw_ms"]) for r in a2a], width=0.27, label="raw MPI_Alltoallv, same rows")
        ax.bar([i + 0.27 for i in x], [float(r["raw_remote_ms"]) for r in a2a], width=0.27,
               label="raw MPI_Alltoallv, rows crossing ranks")
        ax.set_xticks(list(x), [f"{r} ranks" for r in ranks])
        ax.set_ylabel("ms per forward")
        ax.legend(loc="upper left")
        ax.set_title("all-to-all: the layer's phases against raw MPI")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "scaling-alltoall.png"), dpi=120)
        plt.close(fig)
    print(f"charts: {out_dir}/scaling-efficiency.png, {out_dir}/scaling-alltoall.png")


if __name__ == "__main__":
    main(*sys.argv[1:])
