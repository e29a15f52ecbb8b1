import numpy as np
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
