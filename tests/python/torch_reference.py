"""docs/design.md §1 and §1b in PyTorch float64, written from the definitions (not from the
library's code): routing with slot-major capacity, the expert kinds, the shared expert,
the aux loss and the z-loss. Autograd gives the reference gradients."""
import math

import torch
import torch.nn.functional as F


def activate(name, z):
    if name == "relu":
        return torch.relu(z)
    if name == "gelu":
        return 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * z * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))
    if name == "silu":
        return z * torch.sigmoid(z)
    raise ValueError(name)


def expert(config, tensors, x, e=None):
    """One expert on rows x; tensors as the module names them (stacked when e is given)."""
    pick = (lambda t: t[e]) if e is not None else (lambda t: t)
    if config.expert_kind == "ffn":
        h = x @ pick(tensors["w1"])
        if config.expert_bias:
            h = h + pick(tensors["b1"])
        y = activate(config.activation, h) @ pick(tensors["w2"])
        return y + pick(tensors["b2"]) if config.expert_bias else y
    w_in = pick(tensors["w_gate_up"])
    width = w_in.shape[1] // 2
    gate, up = x @ w_in[:, :width], x @ w_in[:, width:]
    if config.expert_bias:
        b_in = pick(tensors["b_gate_up"])
        gate, up = gate + b_in[:width], up + b_in[width:]
    y = (activate(config.activation, gate) * up) @ pick(tensors["w_down"])
    return y + pick(tensors["b_down"]) if config.expert_bias else y


def layer(config, params, x, expert_bias=None):
    """(output, aux_loss, z_loss, indices) for tokens x [T, H]; params maps the module's
    parameter names ("gate.weight", "experts.w1", ...) to float64 tensors."""
    E, k, T = config.num_experts, config.top_k, x.shape[0]
    logits = x @ params["gate.weight"]
    if config.router == "softmax":
        scores = torch.softmax(logits, dim=1)
        normalised = scores
        selection = scores
    else:
        scores = torch.sigmoid(logits)
        normalised = scores / scores.sum(dim=1, keepdim=True)
        selection = scores + (expert_bias if expert_bias is not None else 0.0)
    # descending, ties to the lower id: a stable sort of the negated scores
    order = torch.sort(-selection.detach(), dim=1, stable=True).indices[:, :k]
    weights = scores.gather(1, order)
    if config.normalize_top_k:
        weights = weights / (weights.sum(dim=1, keepdim=True) + (1e-20 if config.router == "sigmoid" else 0.0))
    weights = weights * config.routed_scaling_factor

    capacity = math.ceil(float(torch.tensor(config.capacity_factor, dtype=torch.float32)) * T * k / E)
    if not config.drop_tokens:
        capacity = T * k
    load = [0] * E
    kept = torch.zeros(T, k, dtype=torch.bool)
    for j in range(k):
        for t in range(T):
            e = int(order[t, j])
            if load[e] < capacity:
                load[e] += 1
                kept[t, j] = True

    routed = {name[len("experts."):]: p for name, p in params.items() if name.startswith("experts.")}
    out = torch.zeros_like(x)
    for e in range(E):
        t_idx, j_idx = torch.nonzero((order == e) & kept, as_tuple=True)
        if len(t_idx):
            y = expert(config, routed, x[t_idx], e)
            out = out.index_add(0, t_idx, weights[t_idx, j_idx].unsqueeze(1) * y)
    if config.shared_expert_dim > 0:
        shared = {name[len("shared_expert."):]: p for name, p in params.items() if name.startswith("shared_expert.")}
        y = expert(config, shared, x)
        if config.shared_gate:
            y = torch.sigmoid(x @ params["shared_gate.weight"]).unsqueeze(1) * y
        out = out + y

    counts = torch.bincount(order.reshape(-1), minlength=E).to(x.dtype)
    f = counts / (T * k)
    aux = E * (f * normalised.mean(dim=0)).sum()
    z = (torch.logsumexp(logits, dim=1) ** 2).mean() if config.router == "softmax" else torch.zeros((), dtype=x.dtype)
    return out, aux, z, order
