"""The exact simulator against hand computation, and its invariance to batch size and device."""

import numpy as np
import pytest
import torch

from snncompile.ir import BiasEncoder, Dense, FixedDense, GraphBuilder, Input, LoihiNeuron, Output, Reset
from snncompile.passes import pipeline
from snncompile.sim import fixed
from snncompile.targets.loihi2 import LOIHI2
from tests.builders import make_cnn, make_mlp


def neuron(shape, vth, reset=Reset.SUBTRACT, readout=False, du=4095, dv=0, bias=0):
    return LoihiNeuron(
        vth=np.full(shape, vth), bias_mant=np.full(shape, bias), bias_exp=np.zeros(shape),
        du=du, dv=dv, reset=reset, readout=readout, vth_format=LOIHI2.vth,
        bias_format=LOIHI2.bias, decay_format=LOIHI2.decay,
    )


def two_layer(reset, w=100, vth1=10, vth2=3, fan_in=1):
    """input -> host Dense -> encoder -> n1 (fan_in neurons) -> FixedDense(w) -> n2 -> output."""
    b = GraphBuilder()
    b.add("input", Input(shape=(1,)))
    b.add("host", Dense(weight=np.ones((fan_in, 1))), ["input"])
    b.add("enc", BiasEncoder(scale=1.0, bias_format=LOIHI2.bias), ["host"])
    b.add("n1", neuron((fan_in,), vth1, reset), ["enc"])
    b.add("syn", FixedDense(weight=np.full((1, fan_in), w), weight_format=LOIHI2.weight), ["n1"])
    b.add("n2", neuron((1,), vth2, reset), ["syn"])
    b.add("output", Output(), ["n2"])
    return b.build()


def by_hand(x, steps, reset, w=100, vth1=10, vth2=3):
    """Plain Python integers, following shared DESIGN §2 line by line."""
    v1 = v2 = 0
    pending = 0  # the synapse's buffer: one step of delay
    s1s, v1s, s2s, v2s = [], [], [], []
    for _ in range(steps):
        v1 = v1 + 0 + x  # du = 4095: u = a_in << 6 = 0; bias = x
        s1 = v1 > vth1 << 6
        if s1:
            v1 = 0 if reset is Reset.ZERO else v1 - (vth1 << 6)
        u2 = pending << 6
        v2 = v2 + u2
        s2 = v2 > vth2 << 6
        if s2:
            v2 = 0 if reset is Reset.ZERO else v2 - (vth2 << 6)
        pending = w * int(s1)
        s1s.append(int(s1)), v1s.append(v1), s2s.append(int(s2)), v2s.append(v2)
    return s1s, v1s, s2s, v2s


@pytest.mark.parametrize("reset", [Reset.SUBTRACT, Reset.ZERO])
def test_two_layers_match_hand_computation(reset):
    g = two_layer(reset)
    x = np.array([[250.0], [700.0], [33.0]])
    r = fixed.simulate(g, x, steps=40, device="cpu")
    for i, xi in enumerate(x[:, 0]):
        s1, v1, s2, v2 = by_hand(int(xi), 40, reset)
        assert r.trace.spikes["n1"][i, :, 0].tolist() == s1
        assert r.trace.v["n1"][i, :, 0].tolist() == v1
        assert r.trace.spikes["n2"][i, :, 0].tolist() == s2
        assert r.trace.v["n2"][i, :, 0].tolist() == v2
    assert r.trace.spikes["n1"][1].sum() > 0 and r.trace.spikes["n2"][1].sum() > 0


def test_decay_rounds_toward_zero_like_lava():
    u = torch.tensor([-5000, -4097, -1, 0, 1, 4097, 5000, 2**23 - 1], dtype=torch.int64)
    for keep in (0, 1, 2048, 4095, 4096):
        expected = [int(np.sign(v * keep) * (abs(v * keep) >> 12)) for v in u.tolist()]
        assert fixed.decay(u, keep).tolist() == expected


def test_leaky_current_and_voltage_decay_by_hand():
    g = two_layer(Reset.ZERO, w=200, vth1=1, vth2=100_000)
    g = g.edit()
    g.replace("n2", neuron((1,), 100_000, Reset.ZERO, du=1000, dv=300))
    g = g.build()
    r = fixed.simulate(g, np.array([[100.0]]), steps=20, device="cpu")
    u = v = 0
    pending = 0
    for t in range(20):
        u = int(np.sign(u * 3095) * (abs(u * 3095) >> 12)) + (pending << 6)
        v = int(np.sign(v * 3796) * (abs(v * 3796) >> 12)) + u
        assert r.trace.v["n2"][0, t, 0] == v
        pending = 200 * int(r.trace.spikes["n1"][0, t, 0])


def saturating_graph(w, fan_in=32):
    """n1's neurons fire every step; n2 (a readout: vth at its maximum) integrates fan_in·w·64
    per step and saturates within about 2**23 / (fan_in·|w|·64) steps (16 for the defaults)."""
    g = two_layer(Reset.ZERO, w=w, vth1=1, fan_in=fan_in).edit()
    g.replace("n2", neuron((1,), LOIHI2.vth.max, Reset.ZERO, readout=True))
    return g.build()


def test_negative_saturation_clips_v_and_is_counted():
    r = fixed.simulate(saturating_graph(-256), np.array([[4095.0]]), steps=40, device="cpu")
    assert r.trace.v["n2"].min() == -(2**23 - 1)
    assert r.stats["n2"].v_clipped_low > 0 and r.stats["n2"].v_clipped == 0


def test_positive_saturation_makes_the_readout_fire_and_is_counted():
    r = fixed.simulate(saturating_graph(254), np.array([[4095.0]]), steps=40, device="cpu")
    assert r.trace.spikes["n2"].sum() > 0 and r.stats["n2"].readout_spikes > 0
    assert r.stats["n2"].v_clipped > 0 and r.stats["n2"].saturations > 0


@pytest.fixture(scope="module")
def quantized_cnn(digits_image):
    return pipeline.run(make_cnn(seed=5), pipeline.loihi2(digits_image.train.x[:128], steps=24))


def test_batch_size_does_not_change_a_bit(quantized_cnn, digits_image):
    x = digits_image.test.x[:64]
    whole = fixed.simulate(quantized_cnn, x, 24, device="cpu")
    for size in (1, 7):
        parts = [fixed.simulate(quantized_cnn, x[i:i + size], 24, device="cpu") for i in range(0, 14, size)]
        for layer in whole.trace.v:
            got_v = np.concatenate([p.trace.v[layer] for p in parts])
            got_s = np.concatenate([p.trace.spikes[layer] for p in parts])
            assert np.array_equal(got_v, whole.trace.v[layer][:14])
            assert np.array_equal(got_s, whole.trace.spikes[layer][:14])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_equals_cpu(quantized_cnn, digits_image):
    x = digits_image.test.x[:32]
    a = fixed.simulate(quantized_cnn, x, 24, device="cpu")
    b = fixed.simulate(quantized_cnn, x, 24, device="cuda")
    for layer in a.trace.v:
        assert np.array_equal(a.trace.v[layer], b.trace.v[layer])
        assert np.array_equal(a.trace.spikes[layer], b.trace.spikes[layer])


def test_mlp_snn_tracks_ann_at_long_horizon(digits_flat):
    from snncompile.sim.ann import forward

    g = make_mlp(seed=6)
    steps = 256
    q = pipeline.run(g, pipeline.loihi2(digits_flat.train.x[:256], steps=steps))
    x = digits_flat.test.x[:100]
    ann = forward(g, x).numpy()
    snn = fixed.output_values(q, fixed.simulate(q, x, steps, device="cpu", record=False)) / steps
    assert np.mean(ann.argmax(1) == snn.argmax(1)) > 0.9
