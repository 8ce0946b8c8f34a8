"""The same MoE forward in PyTorch eager on the CPU, written the usual way (a loop
over experts with index_add_), with the capacity rule of DESIGN §1, for the
moe-versus-PyTorch ratio. Imported by compare_pytorch.py."""
import math
import time

import torch

CONFIGS = {
    "ref": dict(E=8, k=2, H=512, F=2048, T=128, reps=60),
    "mid": dict(E=8, k=2, H=1024, F=4096, T=4096, reps=7),
    "fine": dict(E=64, k=8, H=1024, F=512, T=4096, reps=7),
}


class TorchMoE:
    def __init__(self, E, k, H, F, capacity_factor=1.25, seed=0, requires_grad=False):
        g = torch.Generator().manual_seed(seed)
        self.E, self.k, self.cf = E, k, capacity_factor
        self.wg = torch.randn(H, E, generator=g) * 0.02
        self.w1 = torch.randn(E, H, F, generator=g) * 0.02
        self.b1 = torch.randn(E, F, generator=g) * 0.02
        self.w2 = torch.randn(E, F, H, generator=g) * 0.02
        self.b2 = torch.randn(E, H, generator=g) * 0.02
        for p in (self.wg, self.w1, self.b1, self.w2, self.b2):
            p.requires_grad_(requires_grad)

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
            h = torch.relu(torch.addmm(self.b1[e], x[tok], self.w1[e]))
            y = torch.addmm(self.b2[e], h, self.w2[e])
            out.index_add_(0, tok, y * top_w[tok, slot].unsqueeze(1))
        return out


def median_ms(run, reps, warmup=2):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.sort()
    n = len(times)
    mid = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    return mid * 1e3


def time_config(name, reps=None, training=False):
    """Median ms of a forward (no_grad), or of forward + backward with autograd."""
    c = CONFIGS[name]
    model = TorchMoE(c["E"], c["k"], c["H"], c["F"], requires_grad=training)
    x = torch.randn(c["T"], c["H"], generator=torch.Generator().manual_seed(1), requires_grad=training)
    grad = torch.randn(c["T"], c["H"], generator=torch.Generator().manual_seed(2)) * 1e-3
    if not training:
        def run():
            with torch.no_grad():
                model.forward(x)
    else:
        def run():
            model.forward(x).backward(grad)
            for p in (model.wg, model.w1, model.b1, model.w2, model.b2, x):
                p.grad = None
    return median_ms(run, reps or c["reps"])
