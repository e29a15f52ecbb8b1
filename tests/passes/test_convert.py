import numpy as np

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
    snn = ConvertReLU(data=data)(g)
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
    snn = pipeline.run(g, pipeline.convert(digits_image.train.x[:64]))
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
    snn = ConvertReLU(data=data)(g)
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
    # the float map into relu3 is unchanged when every spike carries its λ
    h1 = acts["relu1"].numpy()
    s1, s2 = h1 / lam1, acts["relu2"].numpy() / float(acts["relu2"].max())
    from snncompile.sim.ann import UNARY
    import torch
    into = UNARY[Conv2d](snn.op("conv3"), torch.tensor(s2)) + UNARY[Conv2d](ident, torch.tensor(s1))
    assert torch.allclose(into, acts["add"], atol=1e-9)
