"""moe: Mixture-of-Experts layers with expert parallelism.

The C++ library as a Python package. ``moe.MoELayer`` is one layer with its experts
sharded over the ranks of an mpi4py communicator (or one process with ``comm=None``);
``moe.torch.MoE`` wraps it as a ``torch.nn.Module``. The reference API's functions
(``moe_gating_forward``, ``moe_expert_computation``, ...) take numpy arrays.

Arrays cross without copies where they can: the layer reads and writes float32,
C-contiguous numpy arrays and torch tensors in place through DLPack. Anything else
(another dtype, a strided view) is converted once by ``as_float32_rows`` before the
call, and the conversion is a copy.
"""

from . import _moe
from ._moe import (
    AdamW,
    ArrayView,
    BenchmarkResult,
    CollectiveError,
    Error,
    ForwardResult,
    MOEConfig,
    Optimizer,
    Parameter,
    SGD,
    apply_expert_ffn,
    benchmark_moe_performance,
    clip_grad_norm,
    compute_load_balancing_loss,
    initial_expert_params,
    initial_gate_weights,
    load_checkpoint,
    moe_expert_computation,
    moe_gate_probabilities,
    moe_gating_forward,
    read_checkpoint_config,
    save_checkpoint,
    validate_config,
)

__all__ = [
    "AdamW", "ArrayView", "BenchmarkResult", "CollectiveError", "Error", "ForwardResult", "MOEConfig",
    "MoELayer", "Optimizer", "Parameter", "SGD", "apply_expert_ffn", "as_float32_rows",
    "benchmark_moe_performance", "clip_grad_norm", "compute_load_balancing_loss", "initial_expert_params",
    "initial_gate_weights", "load_checkpoint", "moe_expert_computation", "moe_gate_probabilities",
    "moe_gating_forward", "read_checkpoint_config", "save_checkpoint", "validate_config",
]


def as_float32_rows(x):
    """x itself when it is a float32, C-contiguous numpy array or torch tensor; otherwise
    one converted copy (numpy: ``np.ascontiguousarray(x, np.float32)``; torch:
    ``x.float().contiguous()``, which autograd differentiates). Other objects pass
    unchanged: the layer reads them through DLPack and checks them itself."""
    kind = type(x).__module__
    if kind.startswith("torch"):
        import torch

        return x if x.dtype == torch.float32 and x.is_contiguous() else x.float().contiguous()
    if kind.startswith("numpy") or isinstance(x, (list, tuple)):
        import numpy as np

        return np.ascontiguousarray(x, dtype=np.float32)
    return x


class MoELayer(_moe.MoELayer):
    __doc__ = _moe.MoELayer.__doc__

    def forward(self, x, out=None, training=False):
        """Collective. x: [T, H] or [B, S, H], numpy or torch, in the layer's memory; read in
        place when float32 and C-contiguous (else converted once, see as_float32_rows).
        Returns a ForwardResult whose output is `out` (a new numpy array when None)."""
        return super().forward(as_float32_rows(x), out, training)

    def backward(self, grad_output, grad_input=None):
        """Collective, after forward(x, training=True): accumulates every parameter's gradient
        (the replicated ones summed over ranks) and returns dL/dx (into grad_input when given)."""
        return super().backward(as_float32_rows(grad_output), grad_input)
