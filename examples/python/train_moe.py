"""Train a small model with a moe MoE block in PyTorch, on one process or under mpirun.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/train_moe.py
    mpirun -np 2 env PYTHONPATH=build/python /usr/bin/python3 examples/python/train_moe.py

The task: classify random tokens by a fixed random teacher (a nonlinear function of the
token). The model is embed -> MoE block (residual) -> head; torch.optim.AdamW updates
every parameter, the MoE block's included (its parameters are the layer's own storage).
With several ranks each rank trains on its own tokens (data parallel), the experts are
sharded over the ranks, and the non-MoE parameters' gradients are averaged by hand
with mpi4py (moe already sums the gate's and the shared expert's over ranks).
At the end rank 0 prints the loss curve's ends and the checkpoint is written.
"""
import argparse

import torch
from torch import nn

import moe
import moe.torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=256, help="tokens per rank per step")
    parser.add_argument("--checkpoint", default="out/python-moe.h5")
    args = parser.parse_args()

    comm = None
    try:
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_size() > 1:
            comm = MPI.COMM_WORLD
    except ImportError:
        pass
    rank = comm.Get_rank() if comm else 0

    hidden, classes = 64, 4
    config = moe.MOEConfig(num_experts=8, top_k=2, hidden_dim=hidden, expert_dim=128, expert_kind="glu",
                           expert_bias=False, shared_expert_dim=64)
    torch.manual_seed(0)  # the same dense layers on every rank
    embed, head = nn.Linear(hidden, hidden), nn.Linear(hidden, classes)
    block = moe.torch.MoE(config, comm=comm, seed=1)
    dense = list(embed.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(dense + list(block.parameters()), lr=3e-3)
    teacher = torch.randn(hidden, classes)

    data = torch.Generator().manual_seed(1000 + rank)  # each rank its own tokens
    losses = []
    for step in range(args.steps):
        x = torch.randn(args.tokens, hidden, generator=data)
        y = torch.tanh(x @ teacher * 2).argmax(dim=1)
        h = torch.relu(embed(x))
        logits = head(h + block(h))
        task = nn.functional.cross_entropy(logits, y)
        loss = task + 0.01 * block.aux_loss

        optimizer.zero_grad()
        loss.backward()
        if comm:  # data parallel: average the dense layers' gradients over ranks
            for p in dense:
                p.grad.copy_(torch.from_numpy(comm.allreduce(p.grad.numpy())) / comm.Get_size())
        optimizer.step()
        losses.append(task.item())
        if rank == 0 and (step + 1) % 50 == 0:
            print(f"step {step + 1:4d}  loss {sum(losses[-50:]) / 50:.4f}  aux {block.aux_loss.item():.4f}",
                  flush=True)

    import os

    if rank == 0:
        os.makedirs(os.path.dirname(args.checkpoint) or ".", exist_ok=True)
    if comm:
        comm.Barrier()
    block.save_checkpoint(args.checkpoint, step=args.steps)
    if rank == 0:
        print(f"loss {sum(losses[:20]) / 20:.4f} (first 20 steps) -> {sum(losses[-20:]) / 20:.4f} (last 20); "
              f"saved {args.checkpoint}")


if __name__ == "__main__":
    main()
