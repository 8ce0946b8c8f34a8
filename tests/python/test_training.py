"""Training through moe.torch.MoE with torch.optim, the native optimizers, and the state
dict's round trip through moe checkpoints and h5py."""
import h5py
import numpy as np
import pytest
import torch
from torch import nn

import moe
import moe.torch


class ToyModel(nn.Module):
    """embed -> MoE (residual) -> head: two layers around the MoE block."""

    def __init__(self, config, classes):
        super().__init__()
        self.embed = nn.Linear(config.hidden_dim, config.hidden_dim)
        self.moe = moe.torch.MoE(config, seed=5)
        self.head = nn.Linear(config.hidden_dim, classes)

    def forward(self, x):
        h = torch.tanh(self.embed(x))
        h = h + self.moe(h)
        return self.head(h)


@pytest.mark.parametrize("kind", ["ffn", "glu"])
def test_toy_model_trains_with_adamw_and_its_loss_falls(kind):
    torch.manual_seed(0)
    config = moe.MOEConfig(num_experts=4, top_k=2, hidden_dim=16, expert_dim=32, expert_kind=kind,
                           expert_bias=kind == "ffn")
    model = ToyModel(config, classes=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randn(256, 16)
    y = (x[:, :3].argmax(dim=1) + (x[:, 3] > 0).long()) % 3
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        task = nn.functional.cross_entropy(model(x), y)
        loss = task + 0.01 * model.moe.aux_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(task.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.6 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    # the MoE block learned too: its weights moved from their initial values
    initial = moe.initial_gate_weights(config, 5)
    assert np.abs(model.moe.gate.weight.detach().numpy() - initial).max() > 1e-3


def test_native_optimizers_and_clipping_on_the_layer():
    config = moe.MOEConfig(num_experts=4, top_k=2, hidden_dim=16, expert_dim=24)
    layer = moe.MoELayer(config, seed=2)
    optimizer = moe.AdamW(layer, lr=1e-2)
    x = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    before = layer.gate_weights()
    layer.forward(x, training=True)
    layer.backward(np.ones_like(x))
    norm = moe.clip_grad_norm(layer, 0.5)
    assert norm > 0.5
    assert moe.clip_grad_norm(layer, 0.0) == pytest.approx(0.5, rel=1e-4)
    optimizer.step()
    assert optimizer.step_count == 1 and optimizer.type == "adamw"
    assert not np.array_equal(before, layer.gate_weights())
    with pytest.raises(moe.Error, match="lr"):
        moe.SGD(layer, lr=-1.0)


def test_state_dict_round_trips_through_a_checkpoint_and_h5py(tmp_path):
    config = moe.MOEConfig(num_experts=4, top_k=2, hidden_dim=16, expert_dim=24, expert_kind="glu",
                           router="sigmoid", shared_expert_dim=8, shared_gate=True)
    module = moe.torch.MoE(config, seed=11)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    module.layer.set_expert_bias(np.linspace(-0.1, 0.1, 4).astype(np.float32))
    state = {k: v.clone() for k, v in module.state_dict().items()}
    path = str(tmp_path / "layer.h5")
    module.save_checkpoint(path, step=7)

    with h5py.File(path, "r") as f:
        F = config.expert_dim
        np.testing.assert_array_equal(f["gate/weight"][...], state["gate.weight"].numpy())
        np.testing.assert_array_equal(np.concatenate([f["experts/w_gate"][...], f["experts/w_up"][...]], axis=2),
                                      state["experts.w_gate_up"].numpy())
        np.testing.assert_array_equal(f["experts/w_down"][...], state["experts.w_down"].numpy())
        assert state["experts.w_gate_up"].shape[2] == 2 * F
        np.testing.assert_array_equal(f["shared/gate"][...], state["shared_gate.weight"].numpy())
        np.testing.assert_array_equal(f["gate/expert_bias"][...], state["expert_bias"].numpy())
        assert int(f.attrs["step"]) == 7

    other = moe.torch.MoE(config, seed=12)
    assert other.load_checkpoint(path) == 7
    for k, v in other.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=k)
    third = moe.torch.MoE(config, seed=13)
    third.load_state_dict(state)
    x = torch.randn(10, 16)
    with torch.no_grad():
        torch.testing.assert_close(third(x), module(x), rtol=0, atol=0)
    np.testing.assert_array_equal(third.layer.expert_bias(), state["expert_bias"].numpy())


def test_the_readme_example_trains_and_saves(tmp_path):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    checkpoint = tmp_path / "example.h5"
    run = subprocess.run([sys.executable, os.path.join(root, "examples", "python", "train_moe.py"), "--steps", "100",
                          "--checkpoint", str(checkpoint)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1]
    first_loss, last_loss = float(last.split()[1]), float(last.split()[6])
    assert last_loss < 0.6 * first_loss, last
    assert moe.read_checkpoint_config(str(checkpoint)).expert_kind == "glu"
