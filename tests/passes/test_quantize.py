import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompile.ir import BiasEncoder, FixedConv2d, FixedDense, LoihiNeuron, verify
from snncompile.ir.fixed_point import IntFormat
from snncompile.passes import pipeline
from snncompile.targets.loihi2 import LOIHI2
from tests.builders import make_cnn


def test_cnn_quantizes_into_loihi_formats(digits_image):
    data = digits_image.train.x[:128]
    g = pipeline.run(make_cnn(seed=4), pipeline.loihi2(data, steps=32))
    verify(g)
    assert [k for _, k, _ in g.structure()] == [
        "Input", "Conv2d", "BiasEncoder", "LoihiNeuron", "FixedConv2d", "LoihiNeuron",
        "FixedDense", "LoihiNeuron", "Output"]
    for name in g.find((FixedDense, FixedConv2d)):
        w = g.op(name).weight
        assert LOIHI2.weight.contains(w) and np.abs(w).max() >= 200  # uses the range
    for name in g.find(LoihiNeuron):
        op = g.op(name)
        assert LOIHI2.vth.contains(op.vth) and LOIHI2.bias.contains(op.bias_mant, op.bias_exp)
        assert op.du == 4095 and op.dv == 0
    readout = g.op(g.inputs("output")[0])
    assert readout.readout and int(readout.vth.max()) == LOIHI2.vth.max
    assert g.find(BiasEncoder) == ["relu1_input"]


@settings(max_examples=200, deadline=None)
@given(st.floats(-300, 300, allow_nan=False))
def test_weight_quantization_error_is_bounded(x):
    fmt = LOIHI2.weight
    q, sat = fmt.quantize(np.array([x]))
    if fmt.min - fmt.step / 2 < x < fmt.max + fmt.step / 2:
        assert sat == 0 and abs(q[0] - x) <= fmt.step / 2
    else:
        assert sat == 1 and q[0] == (fmt.min if x < 0 else fmt.max)
    assert fmt.contains(q)


@settings(max_examples=300, deadline=None)
@given(st.floats(-(4095 << 7), 4095 << 7, allow_nan=False))
def test_bias_mant_exp_error_is_half_a_step(x):
    mant, exp, sat = LOIHI2.bias.encode(np.array([x]))
    assert sat == 0 and LOIHI2.bias.contains(mant, exp)
    value = LOIHI2.bias.decode(mant, exp)[0]
    assert abs(value - x) <= 2.0 ** int(exp[0]) / 2
    # the smallest exponent that fits was chosen
    assert exp[0] == 0 or abs(x) / 2.0 ** (int(exp[0]) - 1) > 4095 - 0.5


def test_int_format_wrap_matches_twos_complement():
    fmt = IntFormat(bits=24)
    v = np.array([2**23 - 1, 2**23, -(2**23), -(2**23) - 1, 5])
    assert fmt.wrap(v).tolist() == [2**23 - 1, -(2**23), -(2**23), 2**23 - 1, 5]


def test_half_threshold_initial_potential_is_exact_in_fixed_point(digits_image):
    """v_init = θ/2 in the float SNN becomes exactly half of vth << 6 on the chip, whatever the
    rounding of vth; a readout keeps v_init = 0."""
    data = digits_image.train.x[:64]
    for seed in (4, 5, 6):
        g = pipeline.run(make_cnn(seed=seed), pipeline.loihi2(data, steps=8))
        for name in g.find(LoihiNeuron):
            op = g.op(name)
            if op.readout:
                assert not np.any(op.v_init)
            else:
                assert np.array_equal(op.v_init, op.vth * 32) and g.metadata["quantization"][name]["v_init_saturated"] == 0


def test_a_spiking_layers_threshold_is_exact_in_fixed_point(digits_image):
    """The scale is lowered to ⌊θ·s⌋/θ, so vth = θ·s with no rounding: a rounded vth would scale
    every input of the layer against its threshold by the same factor, a systematic error of up to
    1/(2·vth) (3 % on MobileNetV2's depthwise layers at T=16); weights still span 7 bits or more."""
    data = digits_image.train.x[:64]
    for seed in (4, 5):
        snn = pipeline.run(make_cnn(seed=seed), pipeline.convert(data))
        fixed = pipeline.run(snn, (pipeline.Quantize(data=data, steps=8),))
        spiking = [n for n in fixed.find(LoihiNeuron) if not fixed.op(n).readout]
        assert spiking
        for name in spiking:
            info = fixed.metadata["quantization"][name]
            theta = float(np.max(snn.op(name).threshold))
            assert info["vth"] == pytest.approx(theta * info["scale"], rel=1e-9), name
            ops = [s for s in fixed.inputs(name) if isinstance(fixed.op(s), (FixedConv2d, FixedDense))]
            if ops:
                assert max(int(np.abs(fixed.op(s).weight).max()) for s in ops) >= LOIHI2.weight.max // 2


def test_each_synapse_of_a_membrane_add_spans_the_weight_mantissas(digits_image):
    """A residual block's identity shortcut carries the previous layer's λ, far larger than the
    block's conv weights: with one scale per layer and no exponent the conv kept 4-7 bits (ResNet-20:
    |w| <= 14 of 254 in its last block). Each synapse op now has its own exponent: the op with the
    smallest weights sets the scale, the others shift left; the readout's Dense shifts right."""
    from snncompile.ir.ops import effective_weight
    from tests.builders import make_resnet

    import dataclasses

    calib = digits_image.train.x[:128]
    snn = pipeline.run(make_resnet(seed=1), pipeline.convert(calib))
    # here the shortcut's weights are 1.2x conv3's: under EXPONENT_GAIN (4x), no exponent
    plain = pipeline.run(snn, (pipeline.Quantize(data=calib, steps=32),))
    assert all(plain.op(s).weight_exp == 0 for s in plain.find((FixedConv2d, FixedDense)))
    # a block whose conv weights are 8x smaller than its shortcut's (ResNet-20's last block: 18x)
    b = snn.edit()
    op = snn.op("conv3")
    b.replace("conv3", dataclasses.replace(op, weight=op.weight / 8, bias=op.bias / 8))
    snn = b.build()
    fixed = pipeline.run(snn, (pipeline.Quantize(data=calib, steps=32),))
    verify(fixed)
    shifted = 0
    for neuron in fixed.find(LoihiNeuron):
        scale = fixed.metadata["quantization"][neuron]["scale"]
        ops = [s for s in fixed.inputs(neuron) if isinstance(fixed.op(s), (FixedConv2d, FixedDense))]
        for s in ops:
            op = fixed.op(s)
            # within half a mantissa step (2) of the float weight, whatever the exponent
            assert np.abs(effective_weight(op) - snn.op(s).weight * scale).max() <= 2.0 ** op.weight_exp
            if len(ops) > 1 or fixed.op(neuron).readout:
                assert np.abs(op.weight).max() >= LOIHI2.weight.max // 2, (neuron, s)  # 7 bits or more
            shifted += op.weight_exp != 0
    assert shifted >= 1  # the shortcut, shifted left
    # a readout whose scale v's range holds down (T steps of sums within 24 bits) shifts right
    long = pipeline.run(snn, (pipeline.Quantize(data=calib, steps=4096),))
    fc = long.op("fc")
    assert fc.weight_exp < 0 and np.abs(fc.weight).max() >= LOIHI2.weight.max // 2
    scale = long.metadata["quantization"]["fc_readout"]["scale"]
    assert np.abs(effective_weight(fc) - snn.op("fc").weight * scale).max() <= 2.0 ** fc.weight_exp
    assert fixed.op("add_shortcut_relu1").weight_exp >= 2 and fixed.op("conv3").weight_exp == 0
    # netx's writer stores no exponents: that target quantizes without them
    plain = pipeline.run(snn, (pipeline.Quantize(data=calib, steps=32, bias_exp=6, exponents=False),))
    assert all(plain.op(s).weight_exp == 0 for s in plain.find((FixedConv2d, FixedDense)))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3000), st.floats(1e-3, 1e4), st.integers(0, 2**16), st.sampled_from([1, 7, 4096]))
def test_blockwise_quantization_is_quantize_of_the_product(n, factor, seed, block):
    """IntFormat.quantize_scaled (what Quantize uses, a block at a time) gives exactly
    quantize(values * factor): the same integers and the same saturation count."""
    w = np.random.default_rng(seed).normal(0, 1, n) * 10.0 ** np.random.default_rng(seed + 1).integers(-3, 3, n)
    for fmt in (LOIHI2.weight, IntFormat(8), IntFormat(12, signed=False, step=4)):
        expected, saturated = fmt.quantize(w * factor)
        got, got_saturated = fmt.quantize_scaled(w.reshape(1, -1), factor, block=block)
        assert got.shape == (1, n) and np.array_equal(got[0], expected) and got_saturated == saturated
