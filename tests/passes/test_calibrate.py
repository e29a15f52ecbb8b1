"""Light calibration (bias correction) in fixed point: structure kept, rate error reduced."""

import numpy as np

from snncompile.ir import LoihiNeuron, verify
from snncompile.passes import pipeline
from snncompile.passes.calibrate import BiasCorrection
from snncompile.sim import fixed
from snncompile.sim.ann import evaluate, forward
from tests.builders import make_cnn

STEPS = 12


def rate_error(graph, ann, data, layer):
    op = graph.op(layer)
    run = fixed.simulate(graph, data, STEPS, device="cpu")
    rate = run.trace.spikes[layer].mean(axis=1) * op.vth * 64 / op.v_scale
    return float(np.abs((rate - evaluate(ann, data, upto={layer})[layer].numpy()).mean(axis=(0, 2, 3))).mean())


def test_bias_correction_reduces_the_mean_rate_error(digits_image):
    ann = make_cnn(seed=11)
    calib, test = digits_image.train.x[:128], digits_image.test.x[:200]
    plain = pipeline.run(ann, pipeline.loihi2(calib, STEPS))
    light = pipeline.run(plain, (BiasCorrection(ann=ann, data=calib, steps=STEPS),))
    verify(light)
    # one correction per spiking layer that replaced a ReLU; the structure is unchanged
    assert sorted(light.metadata["bias_correction"]) == ["relu1", "relu2"]
    assert light.structure() == plain.structure()
    # the host layer's float bias moved (relu1 is fed by a BiasEncoder); relu2's integer bias moved
    assert not np.array_equal(light.op("conv1").bias, plain.op("conv1").bias)
    relu2 = light.op("relu2")
    assert not np.array_equal(relu2.bias_format.decode(relu2.bias_mant, relu2.bias_exp),
                              plain.op("relu2").bias_format.decode(plain.op("relu2").bias_mant,
                                                                   plain.op("relu2").bias_exp))
    # numbers: the per-channel mean error on held-out samples shrinks, and accuracy vs the ANN holds
    for layer in ("relu1", "relu2"):
        assert rate_error(light, ann, test, layer) < rate_error(plain, ann, test, layer)
    ann_pred = forward(ann, test).numpy().argmax(1)
    agree = lambda g: np.mean(  # noqa: E731
        fixed.output_values(g, fixed.simulate(g, test, STEPS, device="cpu", record=False)).argmax(1) == ann_pred)
    assert agree(light) >= agree(plain)


def test_nothing_to_correct_without_matching_ann_layers(digits_image):
    ann = make_cnn(seed=12)
    calib = digits_image.train.x[:32]
    plain = pipeline.run(ann, pipeline.loihi2(calib, STEPS))
    renamed = pipeline.run(plain, (BiasCorrection(ann=_renamed(ann), data=calib, steps=STEPS),))
    assert renamed.metadata["bias_correction"] == {}
    for name, op in plain.nodes():
        if isinstance(op, LoihiNeuron):
            assert op == renamed.op(name)


def _renamed(graph):
    """The same ANN with every node renamed, so no spiking layer finds its ReLU."""
    from snncompile.ir import GraphBuilder

    b = GraphBuilder()
    for name in graph.order():
        b.add(f"x_{name}", graph.op(name), [f"x_{i}" for i in graph.inputs(name)])
    return b.build()
