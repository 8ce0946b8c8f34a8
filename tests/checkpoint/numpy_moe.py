"""docs/design.md §1 in numpy (float64), from a checkpoint read with h5py alone: proof that
the file describes itself, and the reference the interoperability tests compare with."""
import math

import h5py
import numpy as np


def load(path):
    with h5py.File(path, "r") as f:
        a = f.attrs
        config = dict(E=int(a["num_experts"]), k=int(a["top_k"]), H=int(a["hidden_dim"]),
                      F=int(a["expert_dim"]), cf=float(a["capacity_factor"]),
                      normalize=bool(a["normalize_top_k"]), drop=bool(a["drop_tokens"]),
                      activation=a["activation"] if isinstance(a["activation"], str) else a["activation"].decode())
        params = {name: f[path][...].astype(np.float64)
                  for name, path in [("gate", "gate/weight"), ("w1", "experts/w1"), ("b1", "experts/b1"),
                                     ("w2", "experts/w2"), ("b2", "experts/b2")]}
    return config, params


def activate(name, z):
    if name == "relu":
        return np.maximum(z, 0)
    if name == "gelu":
        from math import erf
        return 0.5 * z * (1 + np.vectorize(erf)(z / math.sqrt(2)))
    return z / (1 + np.exp(-z))


def expert(config, params, e, x):
    """act(x·W1 + b1)·W2 + b2 for expert e."""
    h = activate(config["activation"], x @ params["w1"][e] + params["b1"][e])
    return h @ params["w2"][e] + params["b2"][e]


def layer(config, params, x):
    """Output, indices and weights for tokens x [T, H] on one rank (capacity per call)."""
    E, k = config["E"], config["k"]
    T = x.shape[0]
    logits = x @ params["gate"]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    # descending probability, ties to the lower expert id
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    weights = np.take_along_axis(probs, order, axis=1)
    if config["normalize"]:
        weights = weights / weights.sum(axis=1, keepdims=True)
    capacity = math.ceil(np.float64(np.float32(config["cf"])) * T * k / E) if config["drop"] else T * k
    load = np.zeros(E, dtype=np.int64)
    out = np.zeros_like(x)
    for j in range(k):                 # slot-major admission
        for t in range(T):
            e = order[t, j]
            if load[e] < capacity:
                load[e] += 1
                out[t] += weights[t, j] * expert(config, params, e, x[t:t + 1])[0]
    return out, order, weights
