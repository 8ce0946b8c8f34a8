"""moe.torch.MoE: the moe layer as a torch.nn.Module.

Its parameters are nn.Parameters that view the layer's own weight storage, and their
.grad views the layer's gradient buffers, so torch.optim, clip_grad_norm_, state_dict()
and load_state_dict() work unchanged and nothing is copied between PyTorch and moe.
Over several ranks torch's clip_grad_norm_ sees only this rank's experts, so each rank
would clip by its own factor: moe.clip_grad_norm(module.layer, max_norm) takes the norm
over every expert once.
Its forward is a torch.autograd.Function over the layer: a training forward keeps the
activations, and the backward accumulates the parameters' gradients (the replicated
ones — gate, shared expert — already summed over ranks: do not wrap the module in
DistributedDataParallel as well) and returns dL/dx.

The load-balancing loss and the router z-loss come back as tensors (module.aux_loss,
module.z_loss, or the tuple from forward(x, return_losses=True)); add them to the task
loss with their coefficients and autograd gives the layer d(loss)/d(aux_loss) as the
weight of the aux loss's gradient in its backward.
"""

import torch
from torch import nn

from . import MoELayer, as_float32_rows, load_checkpoint, save_checkpoint


class _MoEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, module, x, *parameters):
        x = x.detach()  # DLPack exports no tensor that requires grad; autograd owns that part
        out = torch.empty_like(x)
        result = module.layer.forward(x, out=out, training=True)
        module.last_result = result
        ctx.module = module
        aux = torch.tensor(result.aux_loss, dtype=torch.float32, device=x.device)
        z = torch.tensor(result.z_loss, dtype=torch.float32, device=x.device)
        return out, aux, z

    @staticmethod
    def backward(ctx, grad_output, grad_aux, grad_z):
        module = ctx.module
        layer = module.layer
        module._attach_grads()
        softmax = layer.config.router == "softmax"
        layer.set_loss_weights(float(grad_aux), float(grad_z) if softmax else 0.0)
        grad_output = grad_output.detach().contiguous()
        grad_input = torch.empty_like(grad_output)
        if grad_output.is_cuda:
            torch.cuda.current_stream().synchronize()  # moe's stream reads what torch's wrote
        layer.backward(grad_output, grad_input)
        return (None, grad_input) + (None,) * len(module._parameters_in_order)


class MoE(nn.Module):
    """One MoE layer (moe.MOEConfig) with its experts sharded over the ranks of `comm`
    (an mpi4py communicator; None for one process). Parameters: gate.weight [H, E];
    experts.<tensor> stacked over this rank's experts (w1 [n, H, F], w2 [n, F, H],
    b1 [n, F], b2 [n, H]; glu: w_gate_up [n, H, 2F] with the gate projection in the
    first F columns, w_down, b_gate_up, b_down); shared_expert.<tensor> and
    shared_gate.weight when configured. The sigmoid router's expert bias is state
    (state_dict key "expert_bias"), updated by update_expert_bias() after each
    optimizer step. static_shapes=True runs every expert on capacity-padded rows (one
    rank, a capacity; docs/design.md §4b). For more ranks than experts, `comm` is an
    expert group and `replicas` joins the ranks at the same position of every group
    (docs/design.md §2): the gradients are then the whole job's, as data parallelism
    over the groups would sum them."""

    def __init__(self, config, comm=None, seed=0, device="cpu", precision="fp32", static_shapes=False,
                 replicas=None):
        super().__init__()
        self.layer = MoELayer(config, comm, seed, device, precision, aux_loss_coef=0.0, z_loss_coef=0.0,
                              static_shapes=static_shapes, replicas=replicas)
        self.config = self.layer.config
        self.aux_loss = None
        self.z_loss = None
        self.last_result = None
        self._parameters_in_order = []
        self._grad_views = []
        for p in self.layer.parameters():
            owner_name, _, leaf = p.name.rpartition(".")
            owner = self
            if owner_name:
                if not hasattr(self, owner_name):
                    self.add_module(owner_name, nn.Module())
                owner = getattr(self, owner_name)
            parameter = nn.Parameter(torch.from_dlpack(p.data))
            owner.register_parameter(leaf, parameter)
            self._parameters_in_order.append(parameter)
            self._grad_views.append(torch.from_dlpack(p.grad))
        self._seen_versions = self._versions()
        # The sigmoid router's bias is not trained by gradient: a buffer, synchronised
        # with the layer's copy when the state dict is saved or loaded.
        bias = None
        if self.config.router == "sigmoid":
            bias = torch.from_numpy(self.layer.expert_bias())
        self.register_buffer("expert_bias", bias)

    def _versions(self):
        return tuple(p._version for p in self._parameters_in_order)

    def _attach_grads(self):
        # .grad must be the layer's buffer before backward accumulates into it. A grad
        # set to None (optimizer.zero_grad()) means zero; one the user replaced is kept.
        for parameter, view in zip(self._parameters_in_order, self._grad_views):
            grad = parameter.grad
            if grad is None:
                view.zero_()
            elif grad.data_ptr() != view.data_ptr():
                view.copy_(grad)
            else:
                continue
            parameter.grad = view

    def _parameters_changed(self):
        # An optimizer wrote the weights in place: the layer drops what it derived from
        # them (the BF16 copies of the CUDA path).
        versions = self._versions()
        if versions != self._seen_versions:
            self.layer.parameters_written()
            self._seen_versions = versions

    def forward(self, x, return_losses=False):
        """x: [T, H] or [B, S, H] on the module's device. Returns the output (x's dtype), or
        (output, aux_loss, z_loss) with return_losses. Collective under MPI."""
        self._parameters_changed()
        x32 = as_float32_rows(x)
        if x32.is_cuda:
            torch.cuda.current_stream().synchronize()
        needs_grad = torch.is_grad_enabled() and (x32.requires_grad or any(p.requires_grad for p in self.parameters()))
        if self.training and needs_grad:
            out, aux, z = _MoEFunction.apply(self, x32, *self._parameters_in_order)
        else:
            out = torch.empty_like(x32)
            result = self.layer.forward(x32.detach(), out=out, training=False)
            self.last_result = result
            aux = torch.tensor(result.aux_loss, device=x32.device)
            z = torch.tensor(result.z_loss, device=x32.device)
        self.aux_loss, self.z_loss = aux, z
        out = out.to(x.dtype)
        return (out, aux, z) if return_losses else out

    def _apply(self, fn, *args, **kwargs):
        # .to(), .cuda(), .double(), … would replace the parameters with copies the layer
        # never sees: allowed only where they change nothing (e.g. a parent model's
        # .to() onto the device the layer already uses).
        for name, parameter in self.named_parameters():
            moved = fn(parameter)
            if moved.data_ptr() != parameter.data_ptr() or moved.dtype != parameter.dtype:
                raise RuntimeError(
                    f"moe.torch.MoE: {name} would move to {moved.device} as {moved.dtype}, away from the layer's "
                    f"own storage ({parameter.device}, {parameter.dtype}); build the module with "
                    f"device='cuda' (or 'cpu') instead of moving it, and feed it float32 tensors")
        return self

    def update_expert_bias(self):
        """Sigmoid router: the aux-loss-free bias update from the loads since the last one.
        Call it after each optimizer step, on every rank."""
        self.layer.update_expert_bias()

    def save_checkpoint(self, path, step=0):
        """Collective: the whole layer (every rank's experts) as one moe HDF5 checkpoint."""
        save_checkpoint(path, self.layer, step)

    def load_checkpoint(self, path):
        """Collective: loads a moe checkpoint of the same config; returns its step."""
        step = load_checkpoint(path, self.layer)
        self._seen_versions = None  # the weights changed under PyTorch
        self._parameters_changed()
        return step

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.expert_bias is not None:
            self.expert_bias.copy_(torch.from_numpy(self.layer.expert_bias()))
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        if self.expert_bias is not None:
            self.layer.set_expert_bias(self.expert_bias.detach().cpu().numpy())

    def extra_repr(self):
        return repr(self.config) + f", rank {self.layer.rank} of {self.layer.size}"
