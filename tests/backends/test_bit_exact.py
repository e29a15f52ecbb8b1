"""Reference simulator == Lava fixed_pt, bit for bit: spikes and membrane of every layer, every step."""

import numpy as np
import pytest

from snncompile.api import load_model
from snncompile.backends import reference
from snncompile.backends.lava import run_lava
from snncompile.ir import FixedConv2d, LoihiNeuron, Reset
from snncompile.passes import pipeline
from snncompile.passes.convert import ConvertReLU
from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.passes.linear_regions import LowerLinearRegions
from snncompile.passes.quantize import Quantize
from snncompile.sim.ann import encode_inputs
from snncompile.sim.trace import compare
from tests.builders import make_cnn, make_deep_cnn, make_resnet
from tests.sim.test_fixed import saturating_graph

pytestmark = pytest.mark.lava
STEPS = 32


def assert_bit_exact(graph, x, steps):
    encoded = encode_inputs(graph, x)
    ref = reference.run(graph, x, steps, device="cpu")
    lava = run_lava(graph, x, steps, encoded=encoded)
    result = compare(ref.trace, lava)
    assert result.mismatches == 0, result.as_dict()
    assert result.samples == len(x) and result.steps == steps
    assert result.layers == len(ref.trace.v)
    for out, value in ref.trace.outputs.items():
        assert np.array_equal(value, lava.outputs[out])
    return ref


def test_mlp_bundled(digits_flat):
    graph = load_model("examples/digits_mlp.pt2")
    fixed = pipeline.run(graph, pipeline.loihi2(digits_flat.train.x[:256], STEPS))
    ref = assert_bit_exact(fixed, digits_flat.test.x[:2], STEPS)
    assert all(s.sum() > 0 for name, s in ref.trace.spikes.items() if not fixed.op(name).readout)


def test_cnn_bundled_stride_1_and_2_with_padding(digits_image):
    graph = load_model("examples/digits_cnn.pt2")
    fixed = pipeline.run(graph, pipeline.loihi2(digits_image.train.x[:256], STEPS))
    convs = [fixed.op(n) for n in fixed.find(FixedConv2d)]
    assert [c.stride for c in convs] == [(2, 2)]  # the host conv has stride 1 and padding 1
    assert convs[0].padding == (1, 1)
    assert_bit_exact(fixed, digits_image.test.x[:2], STEPS)


def test_conv_stride_1_and_2_with_padding_on_the_chip(digits_image):
    fixed = pipeline.run(make_deep_cnn(seed=9), pipeline.loihi2(digits_image.train.x[:128], STEPS))
    convs = {n: fixed.op(n) for n in fixed.find(FixedConv2d)}
    assert {n: (c.stride, c.padding) for n, c in convs.items()} == {
        "conv2": ((1, 1), (1, 1)), "conv3": ((2, 2), (1, 1))}
    ref = assert_bit_exact(fixed, digits_image.test.x[:2], STEPS)
    assert all(ref.trace.spikes[n].sum() > 0 for n in ("relu1", "relu2", "relu3"))


def test_residual_membrane_add(digits_image):
    fixed = pipeline.run(make_resnet(seed=3), pipeline.loihi2(digits_image.train.x[:128], STEPS))
    assert fixed.inputs("relu3") == ["conv3", "add_shortcut_relu1"]
    ref = assert_bit_exact(fixed, digits_image.test.x[:1], STEPS)
    assert ref.trace.spikes["relu3"].sum() > 0


def test_cnn_with_zero_reset_uses_lavas_lif(digits_image):
    data = digits_image.train.x[:64]
    passes = (fold_batchnorm, ConvertReLU(data=data, reset=Reset.ZERO), LowerLinearRegions(relays=False),
              Quantize(data=data, steps=40))
    fixed = pipeline.run(make_cnn(seed=7), passes)
    assert_bit_exact(fixed, digits_image.test.x[:2], 40)


@pytest.mark.parametrize("weight", [254, -256])
def test_saturating_neurons(weight):
    graph = saturating_graph(weight)
    ref = assert_bit_exact(graph, np.array([[4095.0]]), 40)
    stats = ref.stats["n2"]
    assert stats.v_clipped + stats.v_clipped_low > 0


@pytest.mark.parametrize("builder, calibrate", [(make_cnn, "advanced"), (make_resnet, "advanced"),
                                                (make_resnet, "light")])
def test_calibrated_graphs_stay_bit_exact(digits_image, builder, calibrate):
    """Calibration changes weights, biases and initial membrane potentials; Lava must still agree."""
    from snncompile.passes.calibrate import AdvancedCalibration, BiasCorrection

    ann = builder(seed=3)
    calib = digits_image.train.x[:128]
    plain = pipeline.run(ann, pipeline.loihi2(calib, STEPS))
    cal = (AdvancedCalibration(ann=ann, data=calib, steps=STEPS, iterations=60) if calibrate == "advanced"
           else BiasCorrection(ann=ann, data=calib, steps=STEPS, versus_none=False))
    fixed = pipeline.run(plain, (cal,))
    neurons = [n for n in fixed.find(LoihiNeuron) if not fixed.op(n).readout]
    if calibrate == "advanced":
        assert any(np.any(fixed.op(n).v_init != 0) for n in neurons)
    assert any(fixed.op(n) != plain.op(n) for n in neurons)
    assert_bit_exact(fixed, digits_image.test.x[:2], STEPS)


@pytest.mark.parametrize("calibrate", ["light", "advanced"])
def test_calibration_under_the_latency_contract_stays_bit_exact(digits_image, calibrate):
    """Delays compensated (v_init − depth·bias), then calibrated over T steps of evidence per layer
    (bias corrections keep the compensation): Lava agrees over the T + L run."""
    from snncompile.ir.timing import latency_steps
    from snncompile.passes.calibrate import AdvancedCalibration, BiasCorrection
    from snncompile.passes.latency import CompensateDelay

    ann = make_resnet(seed=3)
    calib = digits_image.train.x[:128]
    plain = pipeline.run(ann, pipeline.loihi2(calib, STEPS) + (CompensateDelay(),))
    cal = (AdvancedCalibration(ann=ann, data=calib, steps=STEPS, iterations=60) if calibrate == "advanced"
           else BiasCorrection(ann=ann, data=calib, steps=STEPS, versus_none=False))
    fixed = pipeline.run(plain, (cal,))
    assert any(fixed.op(n) != plain.op(n) for n in fixed.find(LoihiNeuron) if not fixed.op(n).readout)
    assert_bit_exact(fixed, digits_image.test.x[:2], STEPS + latency_steps(fixed))
