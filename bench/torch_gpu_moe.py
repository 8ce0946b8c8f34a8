"""PyTorch baselines for gpu_bench, on the same GPU in the same run (issue 11):

  grouped  what current PyTorch MoE training code does (torchtitan, Megatron's PyTorch path):
           routing in PyTorch, argsort of the flat expert ids, torch._grouped_mm for both
           expert products, index_add_ combine; dropless.
  loop     the loop over experts (Hugging Face's Mixtral block), dropless.

Same layer as moe: ffn (act(x·W1 + b1)·W2 + b2) or glu (act(x·Wg) ⊙ (x·Wu), one [H, 2F]
projection, then ·W2, no biases), softmax or sigmoid router (group-limited top-k, bias
and scaling as DeepSeek-V3), and an optional shared expert. Prints "grouped_ms loop_ms"
(median ms per forward, or forward + backward with autograd); "-" where one fails.
--mode gemms times torch._grouped_mm alone on the experts' two stages, as
bench/gemm_methods.cu times cuBLAS's ways (each token picks k distinct experts at
random), and prints "in_ms out_ms".
usage: torch_gpu_moe.py E k H F T [--kind ffn|glu] [--router softmax|sigmoid] [--groups N --topk-groups N]
                        [--shared F_s] [--dtype bfloat16|float32] [--mode forward|training|gemms] [--reps N]"""
import argparse
import sys
import time

import torch
import torch.nn.functional as fn


def median_ms(run, reps, warmup=3):
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1e3


def event_median_ms(run, reps, warmup=3):
    """Median ms of run() on the current stream, timed by CUDA events (as gemm_methods)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def grouped_mm_stages_ms(a, dtype, reps):
    """torch._grouped_mm alone on each stage: [rows_e, H]·[H, F (2F glu)], then [rows_e, F]·[F, H]."""
    g = torch.Generator(device="cuda").manual_seed(2026)
    choices = torch.rand(a.T, a.E, device="cuda", generator=g).topk(a.k, -1).indices.reshape(-1)
    offs = torch.bincount(choices, minlength=a.E).cumsum(0).to(torch.int32)
    gf = 2 * a.F if a.kind == "glu" else a.F
    times = []
    for k, n in ((a.H, gf), (a.F, a.H)):
        rows = torch.randn(a.T * a.k, k, device="cuda", dtype=dtype)
        w = torch.randn(a.E, n, k, device="cuda", dtype=dtype) * 0.02  # [E, out, in], passed transposed
        times.append(event_median_ms(lambda: torch._grouped_mm(rows, w.transpose(-2, -1), offs=offs), reps))
        del rows, w
        torch.cuda.empty_cache()
    return times


class Layer:
    def __init__(self, a, dtype, training):
        # Drawn on the GPU: on the host, the DeepSeek-like config's 2.8G weights took
        # seconds of every row's time in gpu-check's section 3.
        g = torch.Generator(device="cuda").manual_seed(0)
        self.a = a
        gf = 2 * a.F if a.kind == "glu" else a.F

        def param(*shape, scale=0.02):
            drawn = torch.randn(*shape, generator=g, device="cuda", dtype=torch.float32)
            return (drawn * scale).to(dtype).requires_grad_(training)

        self.wg = param(a.H, a.E)
        self.router_bias = torch.zeros(a.E, device="cuda", dtype=torch.float32)
        # Weights stored [E, out, in] and passed transposed: the layout _grouped_mm wants.
        self.w1 = param(a.E, gf, a.H)
        self.w2 = param(a.E, a.H, a.F)
        self.b1 = param(a.E, gf) if a.kind == "ffn" else None
        self.b2 = param(a.E, a.H) if a.kind == "ffn" else None
        if a.shared:
            self.s1, self.s2 = param(2 * a.shared, a.H), param(a.H, a.shared)

    def params(self):
        p = [self.wg, self.w1, self.w2] + ([self.b1, self.b2] if self.b1 is not None else [])
        return p + ([self.s1, self.s2] if self.a.shared else [])

    def route(self, x):
        a = self.a
        logits = (x @ self.wg).float()
        if a.router == "softmax":
            w, i = torch.softmax(logits, -1).topk(a.k, -1)
            return w / w.sum(-1, keepdim=True), i
        scores = torch.sigmoid(logits)
        biased = scores + self.router_bias
        if a.groups > 1:
            grouped = biased.view(-1, a.groups, a.E // a.groups)
            group_score = grouped.topk(2, -1).values.sum(-1)
            keep = torch.zeros_like(group_score).scatter_(1, group_score.topk(a.topk_groups, -1).indices, 1.0)
            biased = biased.masked_fill(~keep.bool().repeat_interleave(a.E // a.groups, 1), float("-inf"))
        i = biased.topk(a.k, -1).indices
        w = scores.gather(1, i)
        return 2.5 * w / w.sum(-1, keepdim=True), i

    def hidden(self, z):
        if self.a.kind == "glu":
            gate, up = z.chunk(2, -1)
            return fn.silu(gate) * up
        return torch.relu(z)

    def shared(self, x):
        gate, up = (x @ self.s1.t()).chunk(2, -1)
        return (fn.silu(gate) * up) @ self.s2.t()

    def forward_grouped(self, x):
        a = self.a
        w, i = self.route(x)
        flat = i.reshape(-1)
        order = flat.argsort(stable=True)
        token = order // a.k
        counts = torch.bincount(flat, minlength=a.E)
        offs = counts.cumsum(0).to(torch.int32)
        rows = x[token]
        z = torch._grouped_mm(rows, self.w1.transpose(-2, -1), offs=offs)
        if self.b1 is not None:
            z = z + self.b1.repeat_interleave(counts, 0, output_size=rows.shape[0])
        y = torch._grouped_mm(self.hidden(z), self.w2.transpose(-2, -1), offs=offs)
        if self.b2 is not None:
            y = y + self.b2.repeat_interleave(counts, 0, output_size=rows.shape[0])
        y = y * w.reshape(-1)[order].unsqueeze(1).to(y.dtype)
        out = torch.zeros_like(x).index_add_(0, token, y)
        return out + self.shared(x) if a.shared else out

    def forward_loop(self, x):
        a = self.a
        w, i = self.route(x)
        out = torch.zeros_like(x)
        for e in range(a.E):
            tok, slot = (i == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            z = x[tok] @ self.w1[e].t()
            if self.b1 is not None:
                z = z + self.b1[e]
            y = self.hidden(z) @ self.w2[e].t()
            if self.b2 is not None:
                y = y + self.b2[e]
            out.index_add_(0, tok, y * w[tok, slot].unsqueeze(1).to(y.dtype))
        return out + self.shared(x) if a.shared else out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("E", "k", "H", "F", "T"):
        p.add_argument(name, type=int)
    p.add_argument("--kind", default="ffn", choices=["ffn", "glu"])
    p.add_argument("--router", default="softmax", choices=["softmax", "sigmoid"])
    p.add_argument("--groups", type=int, default=1)
    p.add_argument("--topk-groups", type=int, default=1)
    p.add_argument("--shared", type=int, default=0)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--mode", default="forward", choices=["forward", "training", "gemms"])
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    if a.mode == "gemms":
        try:
            print(" ".join(f"{ms:.4f}" for ms in grouped_mm_stages_ms(a, getattr(torch, a.dtype), a.reps)))
        except Exception as e:
            print(f"torch_gpu_moe: gemms: {type(e).__name__}: {str(e).splitlines()[0]}", file=sys.stderr)
            print("- -")
        return
    training = a.mode == "training"
    dtype = getattr(torch, a.dtype)
    layer = Layer(a, dtype, training)
    x = torch.randn(a.T, a.H, device="cuda", dtype=dtype, requires_grad=training)
    grad = torch.randn(a.T, a.H, device="cuda", dtype=dtype) * 1e-3
    results = []
    for forward in (layer.forward_grouped, layer.forward_loop):
        def run():
            if training:
                forward(x).backward(grad)
                for t in (*layer.params(), x):
                    t.grad = None
            else:
                with torch.no_grad():
                    forward(x)
        try:
            results.append(f"{median_ms(run, a.reps):.3f}")
        except Exception as e:  # an unsupported dtype or shape: say so, time the other
            print(f"torch_gpu_moe: {forward.__name__}: {type(e).__name__}: {str(e).splitlines()[0]}", file=sys.stderr)
            results.append("-")
        torch.cuda.empty_cache()
    print(" ".join(results))


if __name__ == "__main__":
    main()
