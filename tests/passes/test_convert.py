import numpy as np
import pytest

from snncompile.ir import IF, Dense, Integrator, ReLU, Reset
from snncompile.passes import pipeline
from snncompile.passes.convert import ConvertReLU
from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.sim.ann import evaluate
from tests.builders import make_cnn, make_mlp


def test_relu_becomes_if_with_max_threshold_and_weights_rescaled(digits_flat):
    g = make_mlp(seed=1)
    data = digits_flat.train.x[:128]
    acts = evaluate(g, data)
    snn = ConvertReLU(data=data, channel_wise=False)(g)
    assert snn.find(ReLU) == [] and snn.find(IF) == ["relu1", "relu2"]
    for relu, nxt in (("relu1", "fc2"), ("relu2", "fc3")):
        lam = float(acts[relu].max())
        op = snn.op(relu)
        assert op.reset is Reset.SUBTRACT
        assert np.allclose(op.threshold, lam)
        assert np.allclose(snn.op(nxt).weight, g.op(nxt).weight * lam)
        assert np.allclose(snn.op(nxt).bias, g.op(nxt).bias)
    # first layer keeps its weights (it takes the analog input); readout added before the output
    assert np.array_equal(snn.op("fc1").weight, g.op("fc1").weight)
    (out,) = snn.output_names()
    (readout,) = snn.inputs(out)
    assert isinstance(snn.op(readout), Integrator) and snn.inputs(readout) == ["fc3"]


def test_pooling_fused_into_next_dense_equals_original_map(digits_image):
    g = fold_batchnorm(make_cnn(seed=2))
    snn = pipeline.run(g, pipeline.convert(digits_image.train.x[:64], channel_wise=False))
    kinds = [k for _, k, _ in snn.structure()]
    assert "AvgPool2d" not in kinds and "Flatten" not in kinds
    fc = snn.op("fc")
    assert isinstance(fc, Dense) and fc.weight.shape == (10, 16 * 4 * 4)
    # the fused map applied to a random spike pattern equals pool -> flatten -> dense
    rng = np.random.default_rng(0)
    s = rng.integers(0, 2, (5, 16, 4, 4)).astype(float)
    pooled = s.reshape(5, 16, 2, 2, 2, 2).mean(axis=(3, 5)).reshape(5, -1)
    lam = float(snn.op("relu2").threshold.max())
    expected = pooled @ (g.op("fc").weight * lam).T + g.op("fc").bias
    assert np.allclose(s.reshape(5, -1) @ fc.weight.T + fc.bias, expected)


def test_residual_add_becomes_membrane_add_with_an_identity_synapse(digits_image):
    from snncompile.ir import Add, Conv2d
    from tests.builders import make_resnet

    g = make_resnet(seed=1)
    data = digits_image.train.x[:64]
    acts = evaluate(g, data)
    snn = ConvertReLU(data=data, channel_wise=False)(g)
    assert snn.find(Add) == []
    shortcut = "add_shortcut_relu1"
    assert snn.inputs("relu3") == ["conv3", shortcut]
    assert snn.inputs(shortcut) == ["relu1"]
    lam1 = float(acts["relu1"].max())
    ident = snn.op(shortcut)
    assert isinstance(ident, Conv2d) and ident.weight.shape == (4, 4, 1, 1)
    assert np.allclose(ident.weight[:, :, 0, 0], np.eye(4) * lam1)
    # the residual neuron's threshold is the ANN's max of relu(conv3 + relu1)
    assert np.allclose(snn.op("relu3").threshold, float(acts["relu3"].max()))
    # the float map into relu3 is unchanged when every spike carries its λ (the conversion's own λ:
    # float32 statistics, within 1e-6 of the float64 maxima above)
    lam = snn.metadata["thresholds"]
    s1, s2 = acts["relu1"].numpy() / lam["relu1"], acts["relu2"].numpy() / lam["relu2"]
    from snncompile.sim.ann import UNARY
    import torch
    into = UNARY[Conv2d](snn.op("conv3"), torch.tensor(s2)) + UNARY[Conv2d](ident, torch.tensor(s1))
    assert torch.allclose(into, acts["add"], atol=1e-9)


def test_threshold_modes(digits_flat):
    from snncompile.passes.convert import (MSE_CANDIDATES, activation_scale, mse_threshold, mse_thresholds,
                                          quantized_clipped)

    rng = np.random.default_rng(0)
    a = np.concatenate([rng.exponential(1.0, 5000), [40.0]])  # one outlier far above the rest
    assert activation_scale(a, 100.0, "max") == 40.0
    assert activation_scale(a, 99.0, "percentile") == pytest.approx(np.percentile(a, 99.0))
    theta = mse_threshold(a, steps=8)
    grid = 40.0 * (1 - 0.01 * np.arange(MSE_CANDIDATES))
    errors = [np.sum((a - quantized_clipped(a, c, 8)) ** 2) for c in grid]
    assert theta == pytest.approx(grid[int(np.argmin(errors))])
    assert theta < 40.0 * 0.5  # the outlier is clipped rather than costing every other value
    # the sorted, prefix-summed search (every channel at once) picks what the brute force picks, at
    # every T, with v starting at θ/2 or 0, for sparse channels and for a silent one
    for steps, v in ((1, 0.5), (4, 0.0), (8, 0.5), (32, 0.5), (64, 0.0)):
        rows = rng.exponential(1.0, (4, 700)) * (rng.random((4, 700)) < 0.4)
        rows[3] = 0.0
        expected = []
        for row in rows[:3]:
            grid = row.max() * (1 - 0.01 * np.arange(MSE_CANDIDATES))
            errors = [np.sum((row - quantized_clipped(row, c, steps, v)) ** 2) for c in grid]
            expected.append(grid[int(np.argmin(errors))])
        expected.append(1.0)  # the silent channel
        assert mse_thresholds(rows, steps, v).tolist() == pytest.approx(expected, rel=1e-12)
        assert [mse_threshold(row, steps, v) for row in rows] == pytest.approx(expected, rel=1e-12)
    # quantized_clipped is what an IF neuron counts in T steps, clipped to [0, θ]: it rounds when
    # v starts at θ/2 (the default) and floors when v starts at 0
    a = np.array([-1.0, 0.26, 0.4, 0.5, 2.0])
    assert quantized_clipped(a, 1.0, 4).tolist() == [0.0, 0.25, 0.5, 0.5, 1.0]
    assert quantized_clipped(a, 1.0, 4, v_init=0.0).tolist() == [0.0, 0.25, 0.25, 0.5, 1.0]

    g = make_mlp(seed=3)
    snn = ConvertReLU(data=digits_flat.train.x[:64], mode="mse", steps=16)(g)
    acts = evaluate(g, digits_flat.train.x[:64])
    assert np.allclose(snn.op("relu1").threshold, mse_threshold(acts["relu1"].numpy(), 16))
    with pytest.raises(ValueError, match="threshold mode"):
        ConvertReLU(data=digits_flat.train.x[:4], mode="median")


def test_if_neurons_start_at_half_threshold(digits_flat):
    g = make_mlp(seed=1)
    snn = ConvertReLU(data=digits_flat.train.x[:64])(g)
    for name in snn.find(IF):
        op = snn.op(name)
        assert np.allclose(op.v_init, op.threshold / 2)
    floor = ConvertReLU(data=digits_flat.train.x[:64], v_init=0.0)(g)
    assert all(not np.any(floor.op(n).v_init) for n in floor.find(IF))


def test_channel_balancing_leaves_the_ann_function_unchanged(digits_image):
    """balance_channels on the ANN itself: outputs equal, each channel's activation divided by g."""
    from snncompile.passes.convert import balance_channels

    g = fold_batchnorm(make_cnn(seed=2))
    x = digits_image.test.x[:32]
    rng = np.random.default_rng(0)
    gains = {r: rng.uniform(0.2, 3.0, g.shape(r)[0]) for r in g.find(ReLU)}
    balanced = balance_channels(g, gains)
    before, after = evaluate(g, x), evaluate(balanced, x)
    (out,) = g.output_names()
    assert np.allclose(after[out].numpy(), before[out].numpy(), atol=1e-9)
    for relu, gain in gains.items():
        assert np.allclose(after[relu].numpy() * gain[:, None, None], before[relu].numpy(), atol=1e-9)
    assert balanced.metadata["channel_gains"].keys() == gains.keys()


def test_channel_wise_conversion_gives_every_channel_the_layers_threshold(digits_image):
    """Per-channel max balancing: g_c = λ_c / θ with θ the layer's max, so the first layer's input
    current (host side, from the graph input) peaks at exactly θ in every live channel."""
    g = fold_batchnorm(make_cnn(seed=2))
    data = digits_image.train.x[:64]
    snn = pipeline.run(g, pipeline.convert(data))
    layered = pipeline.run(g, pipeline.convert(data, channel_wise=False))
    acts = evaluate(g, data)
    for name in snn.find(IF):
        theta = float(snn.op(name).threshold.max())
        assert theta == pytest.approx(float(layered.op(name).threshold.max()))  # θ stays the layer's max
        peaks = acts[name].numpy().max(axis=(0, 2, 3))
        expected = np.where(peaks > 0, peaks / theta, 1.0)
        assert snn.metadata["channel_gains"][name] == pytest.approx(list(expected))
    first = snn.find(IF)[0]
    (syn,) = snn.inputs(first)
    current = evaluate(snn, data, upto={syn})[syn].numpy().max(axis=(0, 2, 3))
    live = acts[first].numpy().max(axis=(0, 2, 3)) > 0
    assert np.allclose(current[live], float(snn.op(first).threshold.max()))
