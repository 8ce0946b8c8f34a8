"""The reference API's functions from Python on numpy arrays: against numpy float64
written from docs/design.md §1, and against the C++ layer (MoELayer at one rank) on the
same parameters. Tolerance: 1e-5 of each result's largest magnitude."""
import math

import numpy as np
import pytest

import moe

TOLERANCE = 1e-5
SHAPES = [(8, 2, 32, 48, 40, 1.0), (4, 1, 16, 24, 7, 1.25), (6, 3, 24, 40, 33, 2.0)]


def close(actual, expected):
    scale = max(np.abs(expected).max(), 1e-30)
    return np.abs(np.asarray(actual, np.float64) - expected).max() / scale <= TOLERANCE


def reference_routing(x, gate, E, k):
    logits = x.astype(np.float64) @ gate.astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(p, order, axis=1)
    w /= w.sum(axis=1, keepdims=True)
    f = np.bincount(order.ravel(), minlength=E) / (x.shape[0] * k)
    return p, order, w, E * float((f * p.mean(axis=0)).sum())


def reference_expert(flat, x, H, F):
    w1 = flat[:H * F].reshape(H, F).astype(np.float64)
    w2 = flat[H * F:2 * H * F].reshape(F, H).astype(np.float64)
    b1, b2 = flat[2 * H * F:2 * H * F + F], flat[2 * H * F + F:]
    return np.maximum(x.astype(np.float64) @ w1 + b1, 0) @ w2 + b2


@pytest.mark.parametrize("E,k,H,F,T,cf", SHAPES)
def test_gating_and_experts_match_the_definition_and_the_layer(E, k, H, F, T, cf, rng):
    config = moe.MOEConfig(E, k, H, F, cf)
    x = rng.standard_normal((T, H)).astype(np.float32)
    gate = (rng.standard_normal((H, E)) * 0.5).astype(np.float32)
    experts = [(rng.standard_normal(config.expert_param_count()) * 0.2).astype(np.float32) for _ in range(E)]

    weights, indices, loss = moe.moe_gating_forward(x, gate, config)
    probs, order, ref_w, ref_loss = reference_routing(x, gate, E, k)
    assert indices.dtype == np.int32 and indices.shape == (T, k)
    np.testing.assert_array_equal(indices, order)
    assert close(weights, ref_w)
    assert loss.shape == (1,) and math.isclose(loss[0], ref_loss, rel_tol=TOLERANCE)
    assert close(moe.moe_gate_probabilities(x, gate, config), probs)
    assert math.isclose(moe.compute_load_balancing_loss(probs.astype(np.float32), indices, config)[0], ref_loss,
                        rel_tol=TOLERANCE)

    out = moe.moe_expert_computation(x, weights, indices, experts, config)
    capacity = math.ceil(float(np.float32(cf)) * T * k / E)
    load = np.zeros(E, int)
    ref_out = np.zeros((T, H))
    for j in range(k):
        for t in range(T):
            e = order[t, j]
            if load[e] < capacity:
                load[e] += 1
                ref_out[t] += ref_w[t, j] * reference_expert(experts[e], x[t:t + 1], H, F)[0]
    assert close(out, ref_out)
    assert close(moe.apply_expert_ffn(x, experts[0], config), reference_expert(experts[0], x, H, F))

    # The layer, packed and with capacity-padded experts (static_shapes), computes the same.
    for static_shapes in (False, True):
        layer = moe.MoELayer(config, static_shapes=static_shapes)
        layer.set_gate_weights(gate)
        for e in range(E):
            layer.set_expert_params(e, experts[e])
        result = layer.forward(x)
        np.testing.assert_array_equal(result.expert_indices, indices)
        assert close(result.output, out.astype(np.float64))
        assert math.isclose(result.aux_loss, loss[0], rel_tol=TOLERANCE)


def test_reference_errors_keep_the_reference_messages(rng):
    config = moe.MOEConfig(8, 2, 32, 48)
    with pytest.raises(moe.Error, match="Dimension mismatch: input hidden_dim != gate_weights input_dim"):
        moe.moe_gating_forward(np.zeros((4, 32), np.float32), np.zeros((16, 8), np.float32), config)
    with pytest.raises(moe.Error, match="Invalid config: top_k must be <= num_experts"):
        moe.moe_gating_forward(np.zeros((4, 32), np.float32), np.zeros((32, 8), np.float32),
                               moe.MOEConfig(8, 9, 32, 48))
    assert moe.validate_config(moe.MOEConfig(8, 9, 32, 48)) is False


def test_config_has_every_field_with_checked_types():
    config = moe.MOEConfig(16, 4, 64, 32, 1.5, expert_kind="glu", router="sigmoid", n_group=4, topk_group=2)
    assert config.activation == "silu"  # glu's default, as on the command line
    assert set(config.to_dict()) == set(moe.MOEConfig.field_names())
    config.validate()
    with pytest.raises(moe.Error, match="top_k = '4'; expected an integer"):
        moe.MOEConfig(top_k="4")
    with pytest.raises(moe.Error, match="unknown field 'experts'"):
        moe.MOEConfig(experts=4)
    with pytest.raises(moe.Error, match="activation"):
        moe.MOEConfig(activation="tanh")


def test_benchmark_prints_the_reference_lines(capfd):
    result = moe.benchmark_moe_performance(moe.MOEConfig(8, 2, 64, 128), num_runs=5)
    printed = capfd.readouterr().out
    assert "Average time per forward pass: " in printed and " ms" in printed
    assert "Throughput: " in printed and "tokens/sec" in printed
    assert result.num_tokens == 64 and result.num_runs == 5
    assert result.average_ms > 0 and math.isclose(result.tokens_per_second, 64 / result.average_ms * 1000, rel_tol=1e-9)
