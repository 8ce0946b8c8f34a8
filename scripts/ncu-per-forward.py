#!/usr/bin/env python3
"""Where a forward's (or training step's) GPU time goes, from the CSV of gpu-check's section 5.

ncu --print-summary per-kernel --csv writes one line per kernel: its invocations and
the minimum, maximum and average of gpu__time_duration.sum over them (ns, with
thousands separators). The profiled gpu_bench run makes `--forwards` forwards (ten:
three warm-ups, two timed, five for the phases), so a kernel's time per forward is
invocations x average / forwards. Prints the kernels by that time, largest first,
each with its share of the total, the cuBLAS products (nvjet, xmma, cutlass, gemm)
summed on one line, and the total; the bench's own set-up (fill_kernel) is left out.
Last, the largest reduction kernel's share (names with "sum": the column sums and
their finishing passes), for issue 11's "no reduction over 2% of a forward or
backward". --pass names what one of the profiled passes is ("forward", "training
step"); the arithmetic is the same.

usage: scripts/ncu-per-forward.py NCU_CSV [--forwards 10] [--top 15] [--pass forward]
Only the standard library: it runs under any python3.
"""
import argparse
import csv
import re
import sys

GEMM = re.compile(r"nvjet|xmma|cutlass|gemm", re.IGNORECASE)
SETUP = re.compile(r"fill_kernel")
REDUCTION = re.compile(r"sums?(_|<|$)")


def short_name(name):
    """The kernel's name without its argument list and namespaces."""
    name = name.split("(")[0]
    name = re.sub(r"^void ", "", name)
    return re.sub(r"(moe::)?(<unnamed>::)?", "", name)


def per_forward(lines, forwards):
    """{kernel: (launches per forward, µs per forward)} and the GEMMs' sum."""
    rows = csv.DictReader(line for line in lines if line.startswith('"'))
    kernels, gemm_launches, gemm_us = {}, 0.0, 0.0
    for row in rows:
        name = row.get("Kernel Name") or row.get("Function Name") or ""
        if SETUP.search(name):
            continue
        launches = int(row["Invocations"].replace(",", ""))
        average_us = float(row["Average"].replace(",", "")) / 1000.0
        if row.get("Metric Unit") == "usecond":
            average_us *= 1000.0
        if GEMM.search(name):
            gemm_launches += launches / forwards
            gemm_us += launches * average_us / forwards
            continue
        key = short_name(name)
        old = kernels.get(key, (0.0, 0.0))
        kernels[key] = (old[0] + launches / forwards, old[1] + launches * average_us / forwards)
    return kernels, (gemm_launches, gemm_us)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--forwards", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--pass", dest="unit", default="forward")
    args = parser.parse_args()
    with open(args.csv, encoding="utf-8", errors="replace") as f:
        kernels, (gemm_launches, gemm_us) = per_forward(f.readlines(), args.forwards)
    if not kernels and gemm_launches == 0:
        print(f"{args.csv}: no kernel lines", file=sys.stderr)
        return 1
    table = sorted(kernels.items(), key=lambda item: -item[1][1])
    total = gemm_us + sum(us for _, us in kernels.values())

    def share(us):
        return 100.0 * us / total if total > 0 else 0.0

    unit = args.unit.replace(" ", "_")
    print(f"{'µs/' + unit:>10} {'launches':>8} {'share':>6}  kernel  ({args.forwards} {args.unit}s; "
          "ncu's times, kernels one at a time)")
    print(f"{gemm_us:10.1f} {gemm_launches:8.1f} {share(gemm_us):5.1f}%  cuBLAS products (every GEMM kernel)")
    for name, (launches, us) in table[: args.top]:
        print(f"{us:10.1f} {launches:8.1f} {share(us):5.1f}%  {name}")
    rest = table[args.top :]
    if rest:
        rest_us = sum(us for _, (_, us) in rest)
        print(f"{rest_us:10.1f} {sum(n for _, (n, _) in rest):8.1f} {share(rest_us):5.1f}%  {len(rest)} others")
    print(f"{total:10.1f} {'':8} {'':6}  every kernel")
    reductions = [(us, name) for name, (_, us) in table if REDUCTION.search(name)]
    if reductions:
        us, name = max(reductions)
        print(f"largest reduction: {name} {share(us):.1f}% of every kernel (issue 11: at most 2%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
