"""Run under mpirun by test_mpi.py: moe.torch.MoE over an mpi4py communicator must give
each rank the single-process result on that rank's tokens (docs/design.md §2) — the
output, the losses, dL/dx, its experts' gradients, and the gate's gradient summed over
ranks. Prints "rank R of P: ok" on success; any failure aborts the whole job."""
import sys
import traceback

from mpi4py import MPI

import numpy as np
import torch

import moe
import moe.torch

TOLERANCE = 1e-5


def check(actual, expected, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(np.abs(expected).max(), 1e-30)
    error = np.abs(actual - expected).max() / scale
    assert error <= TOLERANCE, f"{what}: error {error:.2e} above {TOLERANCE}"


def main():
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    experts_shared_evenly = -(-8 // size) * size  # 8 at 2 and 4 ranks, 9 at 3
    config = moe.MOEConfig(num_experts=experts_shared_evenly, top_k=2, hidden_dim=24, expert_dim=32, expert_kind="glu",
                           shared_expert_dim=16, shared_gate=True)
    tokens = 50
    x_all = torch.from_numpy(np.random.default_rng(3).standard_normal((tokens, 24)).astype(np.float32))
    probe_all = torch.from_numpy(np.random.default_rng(4).standard_normal((tokens, 24)).astype(np.float32))
    rows = slice(rank * tokens // size, (rank + 1) * tokens // size)

    def run(module):
        x = x_all[rows].clone().requires_grad_()
        out, aux, z = module(x, return_losses=True)
        ((out * probe_all[rows]).sum() + 0.05 * aux + 0.01 * z).backward()
        return out.detach(), aux.item(), x.grad

    single = moe.torch.MoE(config, comm=None, seed=9)
    ref_out, ref_aux, ref_dx = run(single)
    ref_grads = {name: comm.allreduce(p.grad.numpy(), op=MPI.SUM) for name, p in single.named_parameters()}

    def expect_single_process_results(module, how):
        out, aux, dx = run(module)
        check(out, ref_out, "output" + how)
        check(aux, ref_aux, "aux loss" + how)
        check(dx, ref_dx, "dL/dx" + how)
        first, n = module.layer.first_local_expert, module.layer.num_local_experts
        for name, p in module.named_parameters():
            ref = ref_grads[name]
            check(p.grad, ref[first:first + n] if name.startswith("experts.") else ref, f"dL/d{name}{how}")

    sharded = moe.torch.MoE(config, comm=comm, seed=9)
    assert sharded.layer.size == size and single.layer.size == 1
    expect_single_process_results(sharded, "")

    # Expert groups with replicas, groups of size over its smallest factor (half the ranks
    # at 2 and 4): each rank's forward is still the single-process one on its tokens, and
    # every gradient the whole job's.
    group = size // next(f for f in range(2, size + 1) if size % f == 0) if size > 1 else 1
    experts = comm.Split(rank // group, rank % group)
    replicas = comm.Split(rank % group, rank // group)
    grouped = moe.torch.MoE(config, comm=experts, seed=9, replicas=replicas)
    assert grouped.layer.size == group
    expect_single_process_results(grouped, " in groups")

    try:
        moe.torch.MoE(config, comm=None, replicas=replicas)
        raise AssertionError("replicas without comm were accepted")
    except moe.Error as e:
        assert "replicas is given but comm is None" in str(e), str(e)

    # A bad argument on one rank ends the call on every rank with the message.
    bad = torch.zeros(3, 23 if rank == size - 1 else 24)
    try:
        sharded(bad)
        raise AssertionError("a wrong shape on one rank was accepted")
    except moe.CollectiveError as e:
        assert "input shape [3, 23]" in str(e), str(e)
    print(f"rank {rank} of {size}: ok", flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
