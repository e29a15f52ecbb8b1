"""The Lava backend against hand computation, torch and a small numpy oracle of shared DESIGN §2.

Each test pins one fact the design relies on, measured on real Lava 0.10 (fixed_pt models):
(a) one step of delay per Dense/Conv layer, (b) the IF neuron's integer dynamics for both reset
modes, (c) the conv kernel flip/permutation, (d) what a_in does beyond 16 bits, (e) the order in
which a Dense reads a (C, H, W) population, (f) Reset.SIGNED: SignedLIF's −1 spikes reach Dense
and Conv as −weight (num_message_bits = 2), bit for bit with the reference simulator. Lava runs
cost about 0.3-0.6 s each.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snncompile.backends.lava import run_lava
from snncompile.backends.lava.build import check_graph
from snncompile.errors import BackendError
from snncompile.ir import (
    IF,
    BiasEncoder,
    Conv2d,
    Dense,
    FixedConv2d,
    FixedDense,
    Flatten,
    GraphBuilder,
    Input,
    LoihiNeuron,
    Output,
    Reset,
)
from snncompile.sim.ann import encode_inputs
from snncompile.targets.loihi2 import LOIHI2

pytestmark = pytest.mark.lava

VTH_MAX = LOIHI2.vth_max


def neuron(shape, vth, reset=Reset.SUBTRACT, *, v_init=None, du=4095, dv=0, readout=False):
    zeros = np.zeros(shape, dtype=np.int64)
    return LoihiNeuron(
        vth=np.broadcast_to(vth, shape), bias_mant=zeros, bias_exp=zeros, du=du, dv=dv,
        reset=reset, v_init=v_init, readout=readout,
        vth_format=LOIHI2.vth, bias_format=LOIHI2.bias, decay_format=LOIHI2.decay,
    )


def readout(shape):
    return neuron(shape, VTH_MAX, Reset.ZERO, readout=True)


def dense(weight, exp=0):
    return FixedDense(weight=weight, weight_format=LOIHI2.weight, weight_exp=exp)


def conv(weight, stride=1, padding=0, dilation=1, groups=1, exp=0):
    return FixedConv2d(weight=weight, weight_format=LOIHI2.weight, output_format=LOIHI2.conv_out,
                       stride=stride, padding=padding, dilation=dilation, groups=groups, weight_exp=exp)


def encoder():
    return BiasEncoder(scale=1.0, bias_format=LOIHI2.bias)


def even_weights(rng, shape, low=-128, high=128):
    return rng.integers(low, high, size=shape) * 2


# ---------------------------------------------------------------------------------------------
# numpy oracle of DESIGN §2 (int64; Lava's int32 a_in << 6 differs only for |a_in| >= 2**25)


def _decay(x, d):
    prod = x * (4096 - d)
    return np.sign(prod) * (np.abs(prod) >> 12)


def oracle(graph, x, steps):
    """spikes, v per LoihiNeuron, (N, steps, *shape), from the IR's own layout and semantics."""
    encoded = encode_inputs(graph, x)
    neurons = graph.find(LoihiNeuron)
    synapses = graph.find((FixedDense, FixedConv2d))
    out_s = {k: np.zeros((len(x), steps, *graph.shape(k)), np.int8) for k in neurons}
    out_v = {k: np.zeros((len(x), steps, *graph.shape(k)), np.int64) for k in neurons}
    for i in range(len(x)):
        u = {k: np.zeros(graph.shape(k), np.int64) for k in neurons}
        v = {k: graph.op(k).v_init.copy() for k in neurons}
        buf = {k: np.zeros(graph.shape(k), np.int64) for k in synapses}
        for t in range(steps):
            spikes = {}
            for k in neurons:
                op = graph.op(k)
                mant, exp = op.bias_mant, op.bias_exp
                a_in = np.zeros(graph.shape(k), np.int64)
                for src in graph.inputs(k):
                    if isinstance(graph.op(src), BiasEncoder):
                        mant, exp = encoded[src][0][i], encoded[src][1][i]
                    else:
                        a_in += buf[src]
                uu = _decay(u[k], op.du + 1) + (a_in << 6)
                uu = np.where(uu > 2**23, uu - 2**24, uu)
                uu = np.where(uu <= -(2**23), uu + 2**24, uu)
                u[k] = uu
                vv = _decay(v[k], op.dv) + uu + (mant << exp)
                vv = np.clip(vv, -(2**23 - 1), 2**23 - 1)
                s = vv > (op.vth << 6)
                vv = np.where(s, 0 if op.reset == Reset.ZERO else vv - (op.vth << 6), vv)
                v[k], spikes[k] = vv, s
                out_s[k][i, t], out_v[k][i, t] = s, vv
            for k in synapses:  # what each synapse will deliver at step t + 1
                op = graph.op(k)
                src = graph.inputs(k)[0]
                while isinstance(graph.op(src), Flatten):
                    src = graph.inputs(src)[0]
                s = spikes[src].astype(np.int64)
                if isinstance(op, FixedDense):
                    acc = op.weight @ s.reshape(-1)
                    buf[k] = acc << op.weight_exp if op.weight_exp > 0 else acc >> -op.weight_exp
                else:
                    res = F.conv2d(torch.from_numpy(s[None]).double(),
                                   torch.tensor(np.array(op.weight) << op.weight_exp).double(),
                                   None, op.stride, op.padding, op.dilation, op.groups)[0]
                    buf[k] = LOIHI2.conv_out.wrap(res.numpy().astype(np.int64))
    return out_s, out_v


def assert_trace_equals_oracle(trace, graph, x, steps):
    spikes, volts = oracle(graph, x, steps)
    for k in graph.find(LoihiNeuron):
        assert trace.spikes[k].dtype == np.int8 and trace.v[k].dtype == np.int64
        assert trace.spikes[k].shape == (len(x), steps, *graph.shape(k))
        np.testing.assert_array_equal(trace.spikes[k], spikes[k], err_msg=f"spikes of {k}")
        np.testing.assert_array_equal(trace.v[k], volts[k], err_msg=f"v of {k}")


# ---------------------------------------------------------------------------------------------
# (b) one IF neuron, both reset modes, by hand


def test_if_neuron_by_hand_both_resets():
    """du=4095, dv=0, vth=3 (compared as 192), biases 100, 96, 2500<<2, -50 (v_init 300)."""
    b = GraphBuilder()
    b.add("input", Input(shape=(4,)))
    b.add("enc", encoder(), ["input"])
    v_init = np.array([0, 0, 0, 300])
    b.add("zero", neuron((4,), 3, Reset.ZERO, v_init=v_init), ["enc"])
    b.add("sub", neuron((4,), 3, Reset.SUBTRACT, v_init=v_init), ["enc"])
    b.add("out_zero", Output(), ["zero"])
    b.add("out_sub", Output(), ["sub"])
    g = b.build()
    x = np.array([[100.0, 96.0, 10000.0, -50.0]])
    mant, exp, _ = encode_inputs(g, x)["enc"]
    assert mant.tolist() == [[100, 96, 2500, -50]] and exp.tolist() == [[0, 0, 2, 0]]

    trace = run_lava(g, x, 6)
    v_zero, s_zero = trace.v["zero"][0].T, trace.spikes["zero"][0].T
    v_sub, s_sub = trace.v["sub"][0].T, trace.spikes["sub"][0].T
    # reset to zero (Lava's LIF)
    assert v_zero.tolist() == [
        [100, 0, 100, 0, 100, 0],
        [96, 192, 0, 96, 192, 0],  # v == vth << 6 does not spike: the test is strict
        [0, 0, 0, 0, 0, 0],
        [0, -50, -100, -150, -200, -250],  # 300 - 50 = 250 > 192 spikes at step 0
    ]
    assert s_zero.tolist() == [
        [0, 1, 0, 1, 0, 1],
        [0, 0, 1, 0, 0, 1],
        [1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0, 0],
    ]
    # reset by subtraction (SubtractiveLIF): at most one spike per step, the excess is kept
    assert v_sub.tolist() == [
        [100, 8, 108, 16, 116, 24],
        [96, 192, 96, 192, 96, 192],
        [9808, 19616, 29424, 39232, 49040, 58848],
        [58, 8, -42, -92, -142, -192],
    ]
    assert s_sub.tolist() == [
        [0, 1, 0, 1, 0, 1],
        [0, 0, 1, 0, 1, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0, 0],
    ]
    assert trace.outputs["out_sub"].tolist() == [[24, 192, 58848, -192]]
    assert trace.outputs["out_zero"].tolist() == [[0, 0, 0, -250]]


# ---------------------------------------------------------------------------------------------
# (a) one step of delay per synaptic layer; Dense weights reach a_in unscaled


def test_one_step_delay_per_dense_and_conv_layer():
    """Two chains (two separate Lava networks in one run): a source spiking only at step 0
    (v_init above threshold, no bias) through 1x1 convs, and through Denses."""
    b = GraphBuilder()
    b.add("input", Input(shape=(1, 1, 1)))
    b.add("enc3", encoder(), ["input"])  # zero bias; an IR neuron needs an input
    b.add("flat", Flatten(), ["input"])
    b.add("enc", encoder(), ["flat"])
    b.add("c0", neuron((1, 1, 1), 10, Reset.ZERO, v_init=np.full((1, 1, 1), 1000)), ["enc3"])
    b.add("conv1", conv(np.full((1, 1, 1, 1), 254)), ["c0"])
    b.add("c1", neuron((1, 1, 1), 1, Reset.ZERO), ["conv1"])
    b.add("conv2", conv(np.full((1, 1, 1, 1), 254)), ["c1"])
    b.add("c2", neuron((1, 1, 1), 1, Reset.ZERO), ["conv2"])
    b.add("d0", neuron((1,), 10, Reset.ZERO, v_init=np.array([1000])), ["enc"])
    b.add("fc1", dense([[254]]), ["d0"])
    b.add("d1", neuron((1,), 1, Reset.ZERO), ["fc1"])
    b.add("fc2", dense([[254]]), ["d1"])
    b.add("d2", neuron((1,), 1, Reset.ZERO), ["fc2"])
    b.add("fc_neg", dense([[-256]]), ["d0"])  # all-negative matrix: must stay -256 (MIXED)
    b.add("d_neg", readout((1,)), ["fc_neg"])
    for name in ("c2", "d2", "d_neg"):
        b.add(f"out_{name}", Output(), [name])
    g = b.build()
    x = np.zeros((1, 1, 1, 1))
    trace = run_lava(g, x, 5)
    chain = ("c0", "c1", "c2", "d0", "d1", "d2")
    first = {k: int(np.argmax(trace.spikes[k][0].reshape(5, -1)[:, 0])) for k in chain}
    assert first == {"c0": 0, "c1": 1, "c2": 2, "d0": 0, "d1": 1, "d2": 2}
    for k in chain:
        assert trace.spikes[k][0].sum() == 1  # exactly one spike each
    # the negative weight arrives at step 1 as -256 << 6 and v integrates nothing after
    assert trace.v["d_neg"][0, :, 0].tolist() == [0, -16384, -16384, -16384, -16384]
    assert_trace_equals_oracle(trace, g, x, 5)


# ---------------------------------------------------------------------------------------------
# (c) the conv mapping equals torch's F.conv2d; (e) a Dense reads a (C, H, W) population in the
# IR's C-order flattening


def _pattern_source(b, shape, pattern):
    """A population spiking every step where ``pattern`` is 1 (bias 1000 > 10 << 6, reset 0)."""
    b.add("input", Input(shape=shape))
    b.add("enc", encoder(), ["input"])
    b.add("src", neuron(shape, 10, Reset.ZERO), ["enc"])
    return np.asarray(pattern, dtype=np.float64)[None] * 1000.0


CONVS = {  # name: (weight shape, stride, padding, dilation, groups); input (2, 5, 7): H != W
    "s1p1": ((3, 2, 3, 3), 1, 1, 1, 1),
    "s2p1": ((3, 2, 3, 3), 2, 1, 1, 1),
    "rect": ((4, 2, 3, 2), (2, 1), (1, 0), 1, 1),  # non-square kernel, (H, W)-ordered stride/pad
    "dil": ((2, 2, 3, 3), 1, 1, (2, 1), 1),
    "grp": ((4, 1, 3, 3), 1, 1, 1, 2),
}


def test_conv_matches_torch_conv2d_on_binary_input():
    rng = np.random.default_rng(1)
    shape = (2, 5, 7)
    pattern = rng.integers(0, 2, size=shape)
    b = GraphBuilder()
    x = _pattern_source(b, shape, pattern)
    weights = {}
    for name, (wshape, stride, padding, dilation, groups) in CONVS.items():
        weights[name] = even_weights(rng, wshape)
        b.add(f"conv_{name}", conv(weights[name], stride, padding, dilation, groups), ["src"])
    g0 = b.build(verify=False)  # shapes of the convs' outputs, to size their readouts
    for name in CONVS:
        b.add(name, readout(g0.shape(f"conv_{name}")), [f"conv_{name}"])
        b.add(f"out_{name}", Output(), [name])
    g = b.build()
    trace = run_lava(g, x, 3)
    s = torch.tensor(pattern[None], dtype=torch.float64)
    for name, (_, stride, padding, dilation, groups) in CONVS.items():
        w = torch.tensor(weights[name], dtype=torch.float64)
        expected = F.conv2d(s, w, None, stride, padding, dilation, groups)[0].numpy().astype(np.int64)
        v = trace.v[name][0]
        assert v.shape[1:] == expected.shape
        assert not v[0].any()  # one step of delay
        np.testing.assert_array_equal(v[1], expected << 6, err_msg=name)  # u = a_in << 6, dv = 0
        np.testing.assert_array_equal(v[2], 2 * (expected << 6), err_msg=name)


def test_dense_after_chw_population_reads_ir_flatten_order():
    """A FixedDense reading a (C, H, W) population directly (the IR reads it in C-order), and one
    reading it through a Flatten of its spikes (which the IR verifier refuses: verify=False)."""
    rng = np.random.default_rng(2)
    shape = (2, 3, 4)
    pattern = rng.integers(0, 2, size=shape)
    b = GraphBuilder()
    x = _pattern_source(b, shape, pattern)
    weight = even_weights(rng, (5, 24))
    b.add("fc", dense(weight), ["src"])
    b.add("ro", readout((5,)), ["fc"])
    b.add("out", Output(), ["ro"])
    b.build()  # the direct form is a valid IR graph
    b.add("flat", Flatten(), ["src"])
    b.add("fc_flat", dense(weight[::-1]), ["flat"])
    b.add("ro_flat", readout((5,)), ["fc_flat"])
    b.add("out_flat", Output(), ["ro_flat"])
    g = b.build(verify=False)
    check_graph(g)
    trace = run_lava(g, x, 2)
    expected = weight @ pattern.reshape(-1)  # the IR's (torch's) C-order flatten of (C, H, W)
    assert trace.v["ro"][0].tolist() == [[0] * 5, (expected << 6).tolist()]
    assert trace.v["ro_flat"][0].tolist() == [[0] * 5, (expected[::-1] << 6).tolist()]
    np.testing.assert_array_equal(trace.spikes["src"][0, 0], pattern)  # trace back in IR layout


# ---------------------------------------------------------------------------------------------
# (d) a_in beyond 16 bits: not wrapped; u's 24-bit wrap is a single +-2**24 correction


def test_a_in_beyond_16_bits_is_not_wrapped():
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.dense.process import Dense as LavaDense
    from lava.proc.lif.process import LIF
    from lava.proc.monitor.process import Monitor
    from lava.utils.weightutils import SignMode

    from snncompile.backends.lava.build import run_config

    n_in = 2000
    rows = [(129, 254), (130, 254), (130, -256), (600, 254), (1600, 254), (2000, 254)]
    weight = np.zeros((len(rows), n_in), dtype=np.int64)
    for r, (count, w) in enumerate(rows):
        weight[r, :count] = w
    a_in = weight.sum(axis=1)
    assert a_in.tolist() == [32766, 33020, -33280, 152400, 406400, 508000]
    src = LIF(shape=(n_in,), du=4095, dv=0, vth=0, bias_mant=1, bias_exp=0)  # spikes every step
    syn = LavaDense(weights=weight, weight_exp=0, sign_mode=SignMode.MIXED, num_message_bits=0)
    dst = LIF(shape=(len(rows),), du=4095, dv=4095, vth=VTH_MAX, bias_mant=0, bias_exp=0)
    src.s_out.connect(syn.s_in)
    syn.a_out.connect(dst.a_in)
    monitors = {}
    for target in (dst.u, dst.v, dst.s_out):
        monitors[target.name] = Monitor()
        monitors[target.name].probe(target, 2)
    try:
        src.run(condition=RunSteps(num_steps=2), run_cfg=run_config())
        got = {k: m.get_data()[dst.name][k][1].astype(np.int64) for k, m in monitors.items()}
    finally:
        src.stop()
    assert got["u"].tolist() == [
        32766 << 6,
        33020 << 6,  # > 32767: not wrapped to 16 bits
        -33280 << 6,
        (152400 << 6) - 2**24,  # 9753600 > 2**23: wrapped once, to -7023616
        (406400 << 6) - 2**24,  # 26009600: one correction only, u = 9232384 stays above 2**23
        (508000 << 6) - 2**24,  # 15734784
    ]
    # v clips at 2**23 - 1 = 8388607 > VTH_MAX << 6 = 8388544: even a max-vth readout spikes
    assert got["v"].tolist() == [2097024, 2113280, -2129920, -7023616, 0, 0]
    assert got["s_out"].tolist() == [0, 0, 0, 0, 1, 1]


def test_conv_output_wraps_to_24_bits_and_ignores_weight_exp():
    """3 x 127 x 127 spikes times 254 = 12290298 > 2**23: Lava's conv wraps it (a true modulo),
    and its weight_exp (3 here) changes nothing. The LIF's u then gets one +2**24 correction
    only, far from enough to bring it back into 24 bits."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.conv.process import Conv
    from lava.proc.lif.process import LIF
    from lava.proc.monitor.process import Monitor

    from snncompile.backends.lava.build import run_config

    k = 127  # the largest kernel Lava's int8 kernel_size can hold
    weight = np.full((2, k, k, 3), 254)
    weight[1] = -254
    src = LIF(shape=(k, k, 3), du=4095, dv=0, vth=0, bias_mant=1, bias_exp=0)
    syn = Conv(weight=weight, input_shape=(k, k, 3), weight_exp=3)
    dst = LIF(shape=(1, 1, 2), du=4095, dv=0, vth=VTH_MAX, bias_mant=0, bias_exp=0)
    src.s_out.connect(syn.s_in)
    syn.a_out.connect(dst.a_in)
    m_a, m_u = Monitor(), Monitor()
    m_a.probe(syn.a_out, 2)
    m_u.probe(dst.u, 2)
    try:
        src.run(condition=RunSteps(num_steps=2), run_cfg=run_config())
        a_out = m_a.get_data()[syn.name]["a_out"][1].ravel().astype(np.int64)
        u = m_u.get_data()[dst.name]["u"][1].ravel().astype(np.int64)
    finally:
        src.stop()
    total = 3 * k * k * 254
    assert total == 12290298
    assert a_out.tolist() == [total - 2**24, 2**24 - total] == [-4486918, 4486918]
    assert u.tolist() == [(-4486918 << 6) + 2**24, (4486918 << 6) - 2**24] == [-270385536, 270385536]


# ---------------------------------------------------------------------------------------------
# end to end: a small conv net with a membrane-add residual, and a leaky MLP, against the oracle


def _mixed_net(rng):
    b = GraphBuilder()
    b.add("input", Input(shape=(2, 6, 5)))
    b.add("conv0", Conv2d(weight=rng.normal(size=(4, 2, 3, 3)), bias=rng.normal(size=4), padding=1), ["input"])
    b.add("enc0", BiasEncoder(scale=300.0, bias_format=LOIHI2.bias), ["conv0"])
    b.add("n1", neuron((4, 6, 5), 20, v_init=rng.integers(0, 600, size=(4, 6, 5))), ["enc0"])
    b.add("conv1", conv(even_weights(rng, (4, 4, 3, 3), -40, 60), padding=1), ["n1"])
    # its kernel shifted left by 2 (Lava's Conv gets W << 2: it has no exponent of its own)
    b.add("short", conv(even_weights(rng, (4, 4, 1, 1), -20, 60), exp=2), ["n1"])
    b.add("n2", neuron((4, 6, 5), 60), ["conv1", "short"])  # membrane-add: two synaptic inputs
    b.add("conv2", conv(even_weights(rng, (3, 4, 3, 3)), stride=2, padding=1), ["n2"])
    b.add("n3", neuron((3, 3, 3), 30, Reset.ZERO, du=3000, dv=100), ["conv2"])
    b.add("conv3", conv(even_weights(rng, (2, 3, 3, 3)), stride=2, padding=1), ["n3"])
    b.add("ro_conv", readout((2, 2, 2)), ["conv3"])
    b.add("out_conv", Output(), ["ro_conv"])
    # a second, separate Lava network: host flatten + dense, then a leaky MLP
    b.add("flat", Flatten(), ["input"])
    b.add("fc0", Dense(weight=rng.normal(size=(16, 60)), bias=rng.normal(size=16)), ["flat"])
    b.add("enc1", BiasEncoder(scale=500.0, bias_format=LOIHI2.bias), ["fc0"])
    b.add("h1", neuron((16,), 25), ["enc1"])
    b.add("fc1", dense(even_weights(rng, (10, 16), -60, 100), exp=1), ["h1"])
    b.add("h2", neuron((10,), 40, du=1000, dv=200), ["fc1"])
    b.add("fc2", dense(even_weights(rng, (3, 10)), exp=-2), ["h2"])  # floor shift of odd sums/2
    b.add("ro_mlp", readout((3,)), ["fc2"])
    b.add("out_mlp", Output(), ["ro_mlp"])
    return b.build()


def test_mixed_network_matches_oracle_bit_for_bit():
    rng = np.random.default_rng(3)
    g = _mixed_net(rng)
    x = rng.normal(size=(2, 2, 6, 5))
    steps = 12
    timings = []
    trace = run_lava(g, x, steps, timings=timings)
    assert_trace_equals_oracle(trace, g, x, steps)
    for k in ("n1", "n2", "n3", "h1", "h2"):
        assert trace.spikes[k].any() and not trace.spikes[k].all(), k  # a test that exercises spikes
    np.testing.assert_array_equal(trace.outputs["out_conv"], trace.v["ro_conv"][:, -1])
    assert trace.outputs["out_mlp"].shape == (2, 3)


# ---------------------------------------------------------------------------------------------
# graphs the backend cannot express: one BackendError naming every node (no Lava run)


def test_unsupported_nodes_are_all_named_in_one_error():
    b = GraphBuilder()
    b.add("input", Input(shape=(4,)))
    b.add("enc", encoder(), ["input"])
    b.add("zero", LoihiNeuron(
        vth=np.array([1, 2, 3, 4]), bias_mant=np.zeros(4), bias_exp=np.zeros(4), reset=Reset.ZERO,
        vth_format=LOIHI2.vth, bias_format=LOIHI2.bias, decay_format=LOIHI2.decay), ["enc"])
    b.add("fc", dense(np.full((4, 4), 2)), ["zero"])
    b.add("float_if", IF(threshold=np.ones(4)), ["fc"])
    b.add("out", Output(), ["float_if"])
    g = b.build(verify=False)
    with pytest.raises(BackendError) as err:
        run_lava(g, np.zeros((1, 4)), 2)
    message = str(err.value)
    assert "\n" not in message
    assert "'zero'" in message and "one vth per population" in message
    assert "'float_if'" in message and "'out'" in message


def test_conv_with_other_output_width_is_refused():
    from snncompile.ir import IntFormat

    b = GraphBuilder()
    b.add("input", Input(shape=(1, 3, 3)))
    b.add("enc", encoder(), ["input"])
    b.add("src", neuron((1, 3, 3), 10), ["enc"])
    b.add("conv", FixedConv2d(weight=np.full((1, 1, 1, 1), 2), weight_format=LOIHI2.weight,
                              output_format=IntFormat(bits=16)), ["src"])
    b.add("dst", readout((1, 3, 3)), ["conv"])
    b.add("out", Output(), ["dst"])
    with pytest.raises(BackendError, match="node 'conv'.*signed 24 bits"):
        check_graph(b.build())


def wide_kernel_graph():
    """A conv whose kernel is 128 wide: Lava's int8 kernel size wraps to -128."""
    b = GraphBuilder()
    b.add("input", Input(shape=(1, 1, 128)))
    b.add("enc", encoder(), ["input"])
    b.add("src", neuron((1, 1, 128), 10), ["enc"])
    b.add("wide", conv(np.full((1, 1, 1, 128), 2)), ["src"])
    b.add("dst", readout((1, 1, 1)), ["wide"])
    b.add("out", Output(), ["dst"])
    return b.build()


def test_conv_parameters_beyond_int8_are_refused():
    with pytest.raises(BackendError, match="node 'wide'.*int8"):
        check_graph(wide_kernel_graph())


def test_more_than_127_groups_merge_into_the_same_convolution():
    """Lava holds groups in int8: a depthwise conv of 240 channels becomes 120 groups of 2, the
    kernels block-diagonal inside each, and computes the same sums (checked against torch)."""
    import torch

    from snncompile.backends.run_on_loihi import lava_groups

    rng = np.random.default_rng(0)
    for channels, groups, per in ((240, 240, 1), (256, 128, 2), (254, 254, 1)):
        weight = rng.integers(-8, 8, size=(channels, per, 3, 3))
        merged, fewer = lava_groups(weight, groups)
        assert fewer <= 127 and groups % fewer == 0
        x = torch.tensor(rng.integers(0, 2, size=(1, channels, 6, 6)), dtype=torch.float64)
        want = torch.nn.functional.conv2d(x, torch.tensor(weight, dtype=torch.float64), groups=groups, padding=1)
        got = torch.nn.functional.conv2d(x, torch.tensor(merged, dtype=torch.float64), groups=fewer, padding=1)
        assert torch.equal(want, got)
    b = GraphBuilder()
    b.add("input", Input(shape=(128, 1, 1)))
    b.add("enc", encoder(), ["input"])
    b.add("src", neuron((128, 1, 1), 10), ["enc"])
    b.add("dw", conv(np.full((128, 1, 1, 1), 2), groups=128), ["src"])  # depthwise, 128 groups
    b.add("dst", readout((128, 1, 1)), ["dw"])
    b.add("out", Output(), ["dst"])
    check_graph(b.build())  # accepted: the backend merges the groups


def test_failing_process_model_raises_backend_error_without_hanging(tmp_path):
    """Lava's runtime stays 'started' after a process model raises and its stop() then waits
    forever; the backend must release it and report the model's own error."""
    from snncompile.backends.lava.build import build_network

    g = wide_kernel_graph()
    zeros = np.zeros((1, 1, 128), dtype=np.int64)
    net = build_network(g, {"enc": (zeros, zeros)}, 2, tmp_path)
    with pytest.raises(BackendError, match="negative dimensions"):
        net.run(2)


def test_subtractive_lif_floating_pt_model():
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.monitor.process import Monitor

    from snncompile.backends.lava.processes import SubtractiveLIF

    proc = SubtractiveLIF(shape=(2,), du=1, dv=0, vth=np.array([1.0, 0.25]), bias_mant=np.array([0.4, 0.1]))
    monitor = Monitor()
    monitor.probe(proc.v, 4)
    try:
        proc.run(condition=RunSteps(num_steps=4), run_cfg=Loihi2SimCfg(select_tag="floating_pt"))
        v = monitor.get_data()[proc.name]["v"]
    finally:
        proc.stop()
    np.testing.assert_allclose(v[:, 0], [0.4, 0.8, 0.2, 0.6], atol=1e-12)
    np.testing.assert_allclose(v[:, 1], [0.1, 0.2, 0.05, 0.15], atol=1e-12)


def test_graphs_beyond_lavas_exact_integer_range_are_refused():
    """A neuron whose a_in can reach 2**25 (Lava: int32 a_in << 6) is not exact: refused."""
    from snncompile.backends.lava.build import LAVA_A_IN_LIMIT, max_input, problems

    n = LAVA_A_IN_LIMIT // 254 + 1
    wide = dense(np.full((1, n), 254))
    assert max_input(wide) >= LAVA_A_IN_LIMIT
    b = GraphBuilder()
    b.add("input", Input(shape=(1,)))
    b.add("host", Dense(weight=np.ones((n, 1))), ["input"])
    b.add("enc", encoder(), ["host"])
    b.add("n1", neuron((n,), 1), ["enc"])
    b.add("syn", wide, ["n1"])
    b.add("n2", readout((1,)), ["syn"])
    b.add("output", Output(), ["n2"])
    found = problems(b.build())
    assert [(p.node, "2**25" in p.hint) for p in found] == [("n2", True)]


def test_what_the_populations_record_is_what_lavas_monitor_records(tmp_path):
    """Each population writes its spikes and v as it computes them (processes.Recording) instead
    of a separate recording process; Lava's own Monitor, probing the same populations' s_out and
    v in the same run, reads the same numbers (both resets: SubtractiveLIF n2, RecordedLIF n3 and
    the readout)."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.monitor.process import Monitor

    from snncompile.backends.lava.build import build_network, from_lava, run_config

    rng = np.random.default_rng(3)
    g = _mixed_net(rng)
    x = rng.normal(size=(1, 2, 6, 5))
    steps = 6
    encoded = encode_inputs(g, x)
    bias = {enc: (np.asarray(m[0]), np.asarray(e[0])) for enc, (m, e, *_) in encoded.items()}
    net = build_network(g, bias, steps, tmp_path)
    names = ["n1", "n2", "n3", "ro_conv"]
    monitors = {}
    for name in names:
        proc = net.populations[name]
        monitors[name] = (Monitor(), Monitor())
        monitors[name][0].probe(proc.s_out, steps)
        monitors[name][1].probe(proc.v, steps)
    anchor = net.populations["n1"]  # the conv part of the graph (the MLP is another Lava network)
    try:
        anchor.run(condition=RunSteps(num_steps=steps), run_cfg=run_config())
        seen = {n: (from_lava(m[0].get_data()[net.populations[n].name]["s_out"], lead=1),
                    from_lava(m[1].get_data()[net.populations[n].name]["v"], lead=1)) for n, m in monitors.items()}
        recorded = {n: net._read(n) for n in names}
    finally:
        anchor.stop()
    for n in names:
        np.testing.assert_array_equal(recorded[n][0], seen[n][0], err_msg=n)
        np.testing.assert_array_equal(recorded[n][1], seen[n][1], err_msg=n)
    assert recorded["n2"][0].any() and recorded["n3"][0].any()
    assert type(net.populations["n3"]).__name__ == "RecordedLIF"
    assert type(net.populations["n2"]).__name__ == "SubtractiveLIF"


def test_a_sample_run_after_another_equals_it_run_alone():
    """Samples run back to back in one network (processes.Samples): the second sample's spikes
    and v, every population, every step, equal those of a network that runs it alone, on a net
    with a leaky neuron (du < 4095: u carries over unless reset), input-fed populations whose bias
    changes per sample, per-neuron initial potentials and two synaptic inputs into one neuron."""
    rng = np.random.default_rng(5)
    g = _mixed_net(rng)
    x = rng.normal(size=(2, 2, 6, 5))
    steps = 7
    both = run_lava(g, x, steps)
    alone = run_lava(g, x[1:], steps)
    for k in both.spikes:
        np.testing.assert_array_equal(both.spikes[k][1], alone.spikes[k][0], err_msg=k)
        np.testing.assert_array_equal(both.v[k][1], alone.v[k][0], err_msg=k)
    assert not np.array_equal(both.v["n1"][0], both.v["n1"][1])  # the samples differ
    assert both.spikes["n3"][0, -1].any() or both.v["n3"][0, -1].any()  # state left to carry over


def test_each_process_gets_the_model_lavas_own_search_picks(tmp_path):
    """run_config() answers Lava's compiler from one search per process class
    (run_on_loihi.ModelPerClass); for every process of a network with conv, dense, both resets
    and a readout (Conv, Dense, SubtractiveLIF, RecordedLIF, several of each), the model is the
    one Lava's per-instance search and select pick, and a class is searched once."""
    from lava.magma.compiler.compiler_graphs import ProcGroupDiGraphs, find_processes
    from lava.magma.core.run_configs import Loihi2SimCfg

    from snncompile.backends import run_on_loihi
    from snncompile.backends.lava.build import build_network, run_config

    rng = np.random.default_rng(3)
    g = _mixed_net(rng)
    encoded = encode_inputs(g, rng.normal(size=(1, 2, 6, 5)))
    bias = {enc: (np.asarray(m[0]), np.asarray(e[0])) for enc, (m, e, *_) in encoded.items()}
    net = build_network(g, bias, 4, tmp_path)
    procs = [p for n in ("n1", "h1") for p in find_processes(net.populations[n])]
    assert len({type(p) for p in procs}) == 4 and len(procs) > len({type(p) for p in procs})
    plain = Loihi2SimCfg(select_tag="fixed_pt")
    run_on_loihi._MODELS.clear()
    cfg = run_config()
    for proc in procs:
        assert proc in cfg.exception_proc_model_map
        lava_pick = ProcGroupDiGraphs._select_proc_models(proc, ProcGroupDiGraphs._find_proc_models(proc), plain)
        assert cfg.exception_proc_model_map[proc] is lava_pick, type(proc).__name__
    assert len(run_on_loihi._MODELS) == len({type(p) for p in procs})
    assert type(procs[0]) not in cfg.exception_proc_model_map  # select()'s by-class lookup: Lava's own


# ---------------------------------------------------------------------------------------------
# Reset.SIGNED: SignedLIF (spikes −1 / 0 / +1) and graded synapses (num_message_bits = 2)


def test_signed_neuron_by_hand_sends_minus_one_through_dense_and_conv(tmp_path):
    """vth = 3 (Θ = 192), v_init 300, biases −50 and 100. Neuron 0 spikes +1 at step 0 (250 → 58),
    falls to −42 at step 2 with one spike sent: −1, v += 192 → 150; later v = 0 sends nothing
    (its spikes sum to 0). The readouts behind a Dense and a Conv get +w at step 1 and −w at step 3."""
    from snncompile.backends.lava.build import SIGNED_MESSAGE_BITS, build_network, message_bits

    b = GraphBuilder()
    b.add("input", Input(shape=(1, 1, 2)))
    b.add("enc", encoder(), ["input"])
    b.add("sig", neuron((1, 1, 2), 3, Reset.SIGNED, v_init=np.full((1, 1, 2), 300)), ["enc"])
    b.add("fc", dense([[254, 0], [0, -256]]), ["sig"])
    b.add("ro_fc", readout((2,)), ["fc"])
    b.add("cv", conv(np.full((1, 1, 1, 1), 254)), ["sig"])
    b.add("ro_cv", readout((1, 1, 2)), ["cv"])
    b.add("out_fc", Output(), ["ro_fc"])
    b.add("out_cv", Output(), ["ro_cv"])
    g = b.build()
    assert SIGNED_MESSAGE_BITS == 2 and message_bits(g, "fc") == message_bits(g, "cv") == 2
    x = np.array([[[[-50.0, 100.0]]]])
    trace = run_lava(g, x, 7)
    s, v = trace.spikes["sig"][0, :, 0, 0].T, trace.v["sig"][0, :, 0, 0].T
    assert s.tolist() == [[1, 0, -1, 0, 0, 0, 0], [1, 1, 1, 0, 1, 0, 1]]
    assert v.tolist() == [[58, 8, 150, 100, 50, 0, -50], [208, 116, 24, 124, 32, 132, 40]]
    w = 254 << 6
    assert trace.v["ro_fc"][0, :, 0].tolist() == [0, w, w, 0, 0, 0, 0]  # −1 delivered as −254
    assert trace.v["ro_fc"][0, :, 1].tolist() == [0] + [-(256 << 6) * k for k in (1, 2, 3, 3, 4, 4)]
    assert trace.v["ro_cv"][0, :, 0, 0, 0].tolist() == [0, w, w, 0, 0, 0, 0]
    # the recorded spikes are what s_out sends: Lava's Monitor reads the same signed values
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.monitor.process import Monitor

    from snncompile.backends.lava.build import from_lava, run_config

    encoded = encode_inputs(g, x)
    net = build_network(g, {"enc": (encoded["enc"][0][0], encoded["enc"][1][0])}, 7, tmp_path)
    proc = net.populations["sig"]
    assert type(proc).__name__ == "SignedLIF"
    assert all(net.synapses[k].num_message_bits.init == 2 for k in ("fc", "cv"))
    monitor = Monitor()
    monitor.probe(proc.s_out, 7)
    try:
        proc.run(condition=RunSteps(num_steps=7), run_cfg=run_config())
        sent = from_lava(monitor.get_data()[proc.name]["s_out"], lead=1)
    finally:
        proc.stop()
    np.testing.assert_array_equal(sent, trace.spikes["sig"][0])


def signed_resnet(data):
    """The bundled digits ResNet converted with Reset.SIGNED (T = 4, delays equalized by signed
    relays, bias clocks and the readout reset to zero), quantized, its delays compensated;
    (graph, steps = T + latency)."""
    from snncompile.api import load_model
    from snncompile.passes import pipeline
    from snncompile.passes.latency import CompensateDelay, latency_steps
    from snncompile.passes.quantize import Quantize

    g = load_model("examples/digits_resnet.pt2")
    s = pipeline.run(g, pipeline.convert(data[:256], reset=Reset.SIGNED, mode="mse", steps=4, equalize=True))
    q = pipeline.run(s, (Quantize(data=data[:256], steps=4), CompensateDelay(float_graph=s)))
    return q, 4 + latency_steps(q)


@pytest.fixture(scope="module")
def signed_run(digits_image):
    """The signed ResNet on two test samples: the reference simulator's run and Lava's (the two
    samples back to back in one network), compared bit for bit, every layer, every step."""
    from tests.backends.test_bit_exact import assert_bit_exact

    graph, steps = signed_resnet(digits_image.train.x)
    x = digits_image.test.x[:2]
    ref = assert_bit_exact(graph, x, steps)
    return graph, steps, x, ref


def test_signed_graph_matches_the_reference_bit_for_bit(signed_run):
    from snncompile.backends.fixed_graph import spike_source
    from snncompile.backends.lava.build import message_bits

    graph, steps, x, ref = signed_run  # the fixture compared every layer's spikes and v
    neurons = {n: graph.op(n) for n in graph.find(LoihiNeuron)}
    signed = [n for n, op in neurons.items() if op.reset is Reset.SIGNED]
    relays = [n for n in signed if "_relay" in n]
    assert relays and all(n.startswith("bias_clock") or op.readout
                          for n, op in neurons.items() if n not in signed)  # only those reset to 0
    negative = {n: int((ref.trace.spikes[n] < 0).sum()) for n in signed}
    # negative spikes occur, in both samples, and reach both kinds of synapse
    assert all((ref.trace.spikes[n][i] < 0).any() for n in ("conv1_2", "relu", "down_2") for i in range(2)), negative
    synapses = graph.find((FixedDense, FixedConv2d))
    graded = {k for k in synapses if message_bits(graph, k) == 2}
    assert graded == {k for k in synapses if neurons[spike_source(graph, k)].reset is Reset.SIGNED}
    readers = {type(graph.op(k)) for k in graded if (ref.trace.spikes[spike_source(graph, k)] < 0).any()}
    assert readers == {FixedDense, FixedConv2d}
    assert all(message_bits(graph, k) == 0 for k in synapses if k not in graded)
    assert ref.trace.spikes[relays[0]].any()


def test_signed_sample_run_after_another_equals_it_run_alone(signed_run):
    """processes.Samples zeroes SignedLIF's count of spikes sent at each later sample's start:
    the second sample, run after the first in one network, equals a network running it alone."""
    graph, steps, x, ref = signed_run
    sent = {n: ref.trace.spikes[n][0].sum(axis=0) for n in graph.find(LoihiNeuron)
            if graph.op(n).reset is Reset.SIGNED}
    assert any((c > 0).any() for c in sent.values())  # the first sample leaves counts to carry over
    alone = run_lava(graph, x[1:], steps)
    for k in ref.trace.spikes:
        np.testing.assert_array_equal(alone.spikes[k][0], ref.trace.spikes[k][1], err_msg=k)
        np.testing.assert_array_equal(alone.v[k][0], ref.trace.v[k][1], err_msg=k)


def test_netx_refuses_signed_neurons(signed_run, tmp_path):
    from snncompile.backends import netx as netx_backend

    graph = signed_run[0]
    with pytest.raises(BackendError) as info:
        netx_backend.write(graph, tmp_path / "signed.net")
    message = str(info.value)
    assert message.startswith("netx: node 'stem_2' (LoihiNeuron): signed spikes"), message
    assert "binary spikes" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_signed_lif_floating_pt_model():
    """vth 1, bias −0.25, v_init 1.5: +1 at step 0 (v 0.25), then v = 0 with one spike sent: −1,
    v = 1; the second neuron (bias 0.5) never falls to 0."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.monitor.process import Monitor

    from snncompile.backends.lava.processes import SignedLIF

    proc = SignedLIF(shape=(2,), du=1, dv=0, v=np.array([1.5, 0.0]), vth=np.array([1.0, 0.75]),
                     bias_mant=np.array([-0.25, 0.5]))
    m_v, m_s = Monitor(), Monitor()
    m_v.probe(proc.v, 4)
    m_s.probe(proc.s_out, 4)
    try:
        proc.run(condition=RunSteps(num_steps=4), run_cfg=Loihi2SimCfg(select_tag="floating_pt"))
        v = m_v.get_data()[proc.name]["v"]
        s = m_s.get_data()[proc.name]["s_out"]
    finally:
        proc.stop()
    np.testing.assert_allclose(v[:, 0], [0.25, 1.0, 0.75, 0.5], atol=1e-12)
    np.testing.assert_allclose(v[:, 1], [0.5, 0.25, 0.75, 0.5], atol=1e-12)
    assert s.T.tolist() == [[1, -1, 0, 0], [0, 1, 0, 1]]
