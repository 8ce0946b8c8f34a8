"""The padding cost of experts padded to the most rows kept (MOE_EXPERT_ROWS=padded,
docs/design.md §4b): each token chooses k distinct experts uniformly at random; every
expert is padded to M = the most rows any expert kept, rounded up to 8; the cost is
E·M / (T·k) - 1, the extra expert rows. Five draws per config of issue 11, from a fixed
seed. Needs numpy (Debian's python3-numpy: run with /usr/bin/python3).
usage: /usr/bin/python3 bench/padding_cost.py"""
import numpy as np

CONFIGS = {"fine": (64, 8, 8192), "deepseek": (64, 8, 4096), "mid": (8, 2, 4096), "mixtral": (8, 2, 8192)}


def main():
    rng = np.random.default_rng(2026)
    for name, (experts, k, tokens) in CONFIGS.items():
        costs = []
        for _ in range(5):
            choices = np.argsort(rng.random((tokens, experts)), axis=1)[:, :k].ravel()  # k distinct per token
            most = np.bincount(choices, minlength=experts).max()
            padded = (most + 7) // 8 * 8
            costs.append(experts * padded / (tokens * k) - 1)
        print(f"{name}: E={experts} k={k} T={tokens}: extra rows " + ", ".join(f"{c:.1%}" for c in costs))


if __name__ == "__main__":
    main()
