"""moe.torch.MoE against torch_reference (float64 autograd from the definitions): the
forward, the aux and z losses, dL/dx and every parameter's gradient, to 1e-5 relative
to each tensor's largest magnitude, in float32 on the CPU."""
import numpy as np
import pytest
import torch

import moe
import moe.torch
import torch_reference

TOLERANCE = 1e-5

ARCHITECTURES = {
    # name: (MOEConfig fields, tokens shape)
    "ffn relu drop": (dict(num_experts=8, top_k=2, hidden_dim=32, expert_dim=48, capacity_factor=1.0), (40,)),
    "ffn gelu no-drop 3d": (dict(num_experts=6, top_k=3, hidden_dim=24, expert_dim=40, drop_tokens=False,
                                 activation="gelu"), (3, 11)),
    "ffn top-1 raw weights": (dict(num_experts=4, top_k=1, hidden_dim=16, expert_dim=24, normalize_top_k=False,
                                   capacity_factor=1.25), (33,)),
    "swiglu no bias": (dict(num_experts=8, top_k=2, hidden_dim=32, expert_dim=40, expert_kind="glu",
                            expert_bias=False), (37,)),
    "qwen2-style shared gate": (dict(num_experts=8, top_k=2, hidden_dim=32, expert_dim=24, expert_kind="glu",
                                     expert_bias=False, shared_expert_dim=40, shared_gate=True), (29,)),
    "deepseek-style sigmoid": (dict(num_experts=16, top_k=4, hidden_dim=32, expert_dim=16, expert_kind="glu",
                                    expert_bias=False, router="sigmoid", routed_scaling_factor=2.5,
                                    shared_expert_dim=32), (45,)),
}


def assert_close(actual, expected, what):
    actual = actual.detach().to(torch.float64)
    expected = expected.detach()
    scale = max(expected.abs().max().item(), 1e-30)
    error = (actual - expected).abs().max().item() / scale
    assert error <= TOLERANCE, f"{what}: max error {error:.2e} of the largest magnitude, above {TOLERANCE}"


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_forward_and_backward_match_the_float64_reference(name):
    fields, token_shape = ARCHITECTURES[name]
    config = moe.MOEConfig(**fields)
    torch.manual_seed(len(name))
    module = moe.torch.MoE(config, seed=7)
    # random parameters (not only the initial ones), and an expert bias that changes selection
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    bias = None
    if config.router == "sigmoid":
        bias = torch.randn(config.num_experts, dtype=torch.float32) * 0.1
        module.layer.set_expert_bias(bias.numpy())
    x = torch.randn(*token_shape, config.hidden_dim, requires_grad=True)
    aux_coef, z_coef = 0.1, (0.01 if config.router == "softmax" else 0.0)

    out, aux, z = module(x, return_losses=True)
    probe = torch.randn_like(out)
    ((out * probe).sum() + aux_coef * aux + z_coef * z).backward()

    params64 = {n: p.detach().double().requires_grad_() for n, p in module.named_parameters()}
    x64 = x.detach().double().reshape(-1, config.hidden_dim).requires_grad_()
    ref_out, ref_aux, ref_z, ref_order = torch_reference.layer(
        config, params64, x64, None if bias is None else bias.double())
    assert np.array_equal(module.last_result.expert_indices, ref_order.numpy()), "selection differs"
    ((ref_out * probe.double().reshape(ref_out.shape)).sum() + aux_coef * ref_aux + z_coef * ref_z).backward()

    assert out.shape == x.shape
    assert_close(out.reshape(ref_out.shape), ref_out, "output")
    assert_close(aux, ref_aux, "aux loss")
    if config.router == "softmax":
        assert_close(z, ref_z, "z loss")
    assert_close(x.grad.reshape(x64.shape), x64.grad, "dL/dx")
    for n, p in module.named_parameters():
        assert p.grad is not None, f"{n} has no gradient"
        assert_close(p.grad, params64[n].grad, f"dL/d{n}")


def test_gradients_accumulate_and_zero_grad_set_to_none_restarts_them():
    config = moe.MOEConfig(num_experts=4, top_k=2, hidden_dim=16, expert_dim=24)
    module = moe.torch.MoE(config, seed=3)
    x = torch.randn(20, 16)
    module(x).sum().backward()
    once = {n: p.grad.clone() for n, p in module.named_parameters()}
    module(x).sum().backward()
    for n, p in module.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[n], rtol=1e-5, atol=1e-6)
    module.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in module.parameters())
    module(x).sum().backward()
    for n, p in module.named_parameters():
        torch.testing.assert_close(p.grad, once[n], rtol=1e-5, atol=1e-6)


def test_inference_forward_needs_no_grad_and_keeps_the_dtype():
    config = moe.MOEConfig(num_experts=4, top_k=2, hidden_dim=16, expert_dim=24)
    module = moe.torch.MoE(config).eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    with torch.no_grad():
        y = module(x)
    assert y.dtype == torch.float64 and y.shape == x.shape
    module.train()
    y32 = module(x.float())
    torch.testing.assert_close(y.float(), y32.detach(), rtol=1e-6, atol=1e-6)


def test_zero_copy_parameters_gradients_and_input():
    config = moe.MOEConfig(num_experts=4, top_k=2, hidden_dim=16, expert_dim=24)
    module = moe.torch.MoE(config)
    views = {p.name: p for p in module.layer.parameters()}
    named = dict(module.named_parameters())
    assert set(named) == set(views)
    for name, view in views.items():
        assert named[name].data_ptr() == view.data.data_ptr, f"{name} is a copy, not the layer's storage"
    # a write through the parameter is what the layer computes with
    with torch.no_grad():
        module.gate.weight.mul_(2.0)
    np.testing.assert_array_equal(module.layer.gate_weights(), module.gate.weight.detach().numpy())
    x = torch.randn(12, 16, requires_grad=True)
    module(x).sum().backward()
    for name, view in views.items():
        assert named[name].grad.data_ptr() == view.grad.data_ptr, f"{name}.grad is not the layer's buffer"
    # a contiguous float32 input is read where it lies
    x = torch.randn(12, 16)
    result = module.layer.forward(x, out=torch.empty_like(x))
    assert result.input_address == x.data_ptr()
    array = x.numpy()
    assert module.layer.forward(array).input_address == array.ctypes.data


def test_bad_inputs_name_the_argument():
    config = moe.MOEConfig(num_experts=4, top_k=2, hidden_dim=16, expert_dim=24)
    module = moe.torch.MoE(config)
    with pytest.raises(moe.Error, match=r"Dimension mismatch: input hidden_dim != config.hidden_dim \(input shape \[3, 15\]"):
        module(torch.randn(3, 15))
    with pytest.raises(moe.Error, match="x has dtype int64; expected float32"):
        module.layer.forward(_IntArray())
    with pytest.raises(moe.Error, match="out has shape"):
        module.layer.forward(torch.randn(3, 16), out=torch.empty(4, 16))
    with pytest.raises(moe.Error, match="comm is a str; expected an mpi4py communicator"):
        moe.torch.MoE(config, comm="world")
    with pytest.raises(moe.Error, match="replicas is a str; expected an mpi4py communicator"):
        moe.torch.MoE(config, replicas="world")
    with pytest.raises(moe.Error, match="top_k must be <= num_experts"):
        moe.torch.MoE(moe.MOEConfig(num_experts=4, top_k=5, hidden_dim=16, expert_dim=24))
    with pytest.raises(moe.Error, match="device = 'tpu'"):
        moe.torch.MoE(config, device="tpu")
    with pytest.raises(RuntimeError, match="gate.weight would move to cpu as torch.float64"):
        module.double()
    assert module.to("cpu") is module  # a move that changes nothing is fine
    layer = moe.MoELayer(config)
    with pytest.raises(moe.Error, match=r"no forward\(x, training=True\)"):
        layer.backward(np.zeros((3, 16), np.float32))


class _IntArray:
    """An int64 array seen only through DLPack (moe.MoELayer.forward would convert a
    numpy or torch one first): the layer's own dtype check must name it."""

    def __init__(self):
        self._tensor = torch.zeros(3, 16, dtype=torch.int64)

    def __dlpack__(self, stream=None):
        return self._tensor.__dlpack__()

    def __dlpack_device__(self):
        return self._tensor.__dlpack_device__()
