"""The fast exact simulator against a plain integer oracle, on graphs that wrap, clip and overflow.

The simulator skips checks that a static bound proves cannot fire, takes decay shortcuts and,
on the CPU, tests a step's min/max before counting. The oracle does none of that: it is shared
DESIGN §2 written out in numpy int64 (and torch's int64 convolution), every check every step.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snncompile.ir import (
    BiasEncoder,
    Conv2d,
    FixedConv2d,
    FixedDense,
    GraphBuilder,
    Input,
    LoihiNeuron,
    Output,
    Reset,
)
from snncompile.ir.fixed_point import IntFormat
from snncompile.sim import fixed
from snncompile.sim.ann import encode_inputs
from snncompile.targets.loihi2 import LOIHI2

pytestmark = pytest.mark.usefixtures("one_torch_thread")

U_MAX = 2**23
V_MAX = 2**23 - 1


def neuron(rng, shape, du, dv, reset, vth_max, readout=False, bias=0, v_init=0):
    return LoihiNeuron(
        vth=np.full(shape, LOIHI2.vth.max) if readout else rng.integers(1, vth_max, shape),
        bias_mant=rng.integers(-bias, bias + 1, shape), bias_exp=rng.integers(0, 4, shape) * (bias > 0),
        v_init=rng.integers(-v_init, v_init + 1, shape), du=du, dv=dv, reset=reset, readout=readout,
        vth_format=LOIHI2.vth, bias_format=LOIHI2.bias, decay_format=LOIHI2.decay,
    )


def even_weights(rng, shape, top, positive=False):
    return 2 * rng.integers(0 if positive else -top // 2, top // 2, shape)


def graph_for(p):
    """input -> host conv -> encoder -> n1 -> (conv a, conv b) -> n2 -> dense -> n3 readout."""
    rng = np.random.default_rng(p["seed"])
    conv_out = IntFormat(bits=p["conv_bits"], signed=True)
    b = GraphBuilder()
    b.add("input", Input(shape=(2, 6, 6)))
    b.add("host", Conv2d(weight=rng.normal(0, 1, (4, 2, 3, 3)), padding=1), ["input"])
    b.add("enc", BiasEncoder(scale=p["input_scale"], bias_format=LOIHI2.bias), ["host"])
    b.add("n1", neuron(rng, (4, 6, 6), p["du"], p["dv"], p["reset"], p["vth"], v_init=p["v_init"]), ["enc"])
    for name, padding, dilation in (("conv_a", 1, 1), ("conv_b", 2, 2)):  # both 6x6 -> 3x3
        op = FixedConv2d(weight=even_weights(rng, (6, 4, 3, 3), p["w"], p["positive"]), weight_format=LOIHI2.weight,
                         output_format=conv_out, stride=2, padding=padding, dilation=dilation,
                         weight_exp=p.get("conv_exp", 0) if name == "conv_a" else 0)
        b.add(name, op, ["n1"])
    b.add("n2", neuron(rng, (6, 3, 3), p["du"], p["dv"], p["reset"], p["vth"], bias=p["bias"],
                       v_init=p["v_init"]), ["conv_a", "conv_b"])
    b.add("dense", FixedDense(weight=even_weights(rng, (5, 54), p["w"], p["positive"]), weight_format=LOIHI2.weight,
                              weight_exp=p["exp"]), ["n2"])
    b.add("n3", neuron(rng, (5,), p["du"], p["dv"], Reset.ZERO, p["vth"], readout=True), ["dense"])
    b.add("output", Output(), ["n3"])
    return b.build()


def oracle(graph, x, steps):
    """Per step, per neuron in graph order: every check of shared DESIGN §2, in int64."""
    encoded = encode_inputs(graph, x)
    n = len(x)
    names = [k for k, op in graph.nodes() if isinstance(op, LoihiNeuron)]
    state, bias, feeds = {}, {}, {}
    stats = {k: dict.fromkeys(fixed.LayerStats().as_dict(), 0) for k in names}
    for k in names:
        op = graph.op(k)
        shape = (n,) + op.vth.shape
        # u, v and (Reset.SIGNED) the sum of the spikes sent so far
        state[k] = [np.zeros(shape, np.int64), np.broadcast_to(op.v_init, shape).astype(np.int64),
                    np.zeros(shape, np.int64)]
        bias[k] = op.bias_mant.astype(np.int64) << op.bias_exp.astype(np.int64)
        feeds[k] = []
        for src in graph.inputs(k):
            if isinstance(graph.op(src), BiasEncoder):
                mant, exp, sat = encoded[src]
                bias[k] = mant.astype(np.int64) << exp.astype(np.int64)
                stats[k]["bias_saturated"] += sat
            else:
                feeds[k].append(src)
    synapses = [k for k, op in graph.nodes() if isinstance(op, (FixedDense, FixedConv2d))]
    pending = {s: np.zeros((n,) + graph.shape(s), np.int64) for s in synapses}
    spikes_rec = {k: [] for k in names}
    v_rec = {k: [] for k in names}

    def decay(x, keep):
        p = x * keep
        return np.sign(p) * (np.abs(p) >> 12)

    for _ in range(steps):
        spikes = {}
        for k in names:
            op = graph.op(k)
            st_ = stats[k]
            u, v, sent = state[k]
            a = sum((pending[s] for s in feeds[k]), np.zeros_like(u))
            st_["a_in_overflow"] += int(np.sum((a > LOIHI2.a_in.max) | (a < LOIHI2.a_in.min)))
            cur = decay(u, 4096 - (op.du + 1)) + (a << 6)
            wrapped = np.where(cur > U_MAX, cur - 2 * U_MAX, cur)
            wrapped = np.where(wrapped <= -U_MAX, cur + 2 * U_MAX, wrapped)
            st_["u_wrapped"] += int(np.sum(wrapped != cur))
            u = wrapped
            volt = decay(v, 4096 - op.dv) + u + bias[k]
            st_["v_clipped"] += int(np.sum(volt > V_MAX))
            st_["v_clipped_low"] += int(np.sum(volt < -V_MAX))
            v = np.clip(volt, -V_MAX, V_MAX)
            theta = op.vth.astype(np.int64) << 6
            s = (v > theta).astype(np.int64)
            if op.reset is Reset.SIGNED:  # −1 where v ≤ 0 while the spikes so far sum above 0
                s = s - ((v <= 0) & (sent > 0))
            st_["readout_spikes" if op.readout else "spikes"] += int(np.count_nonzero(s))
            v = np.where(s > 0, 0, v) if op.reset is Reset.ZERO else v - s * theta
            state[k] = [u, v, sent + s]
            spikes[k] = s
            spikes_rec[k].append(s.astype(np.int8))
            v_rec[k].append(v)
        for syn in synapses:
            op = graph.op(syn)
            (pre,) = graph.inputs(syn)
            (user,) = graph.users(syn)
            s = spikes[pre].astype(np.int64)
            if isinstance(op, FixedDense):
                acc = s.reshape(n, -1) @ op.weight.T
                pending[syn] = acc << op.weight_exp if op.weight_exp >= 0 else acc >> -op.weight_exp
            else:
                acc = F.conv2d(torch.from_numpy(s), torch.tensor(op.weight << op.weight_exp), None, op.stride,
                               op.padding, op.dilation, op.groups).numpy()
                half = 2 ** (op.output_format.bits - 1)
                wrapped = np.mod(acc + half, 2 * half) - half
                stats[user]["conv_wrapped"] += int(np.sum(wrapped != acc))
                pending[syn] = wrapped
    for k in stats:
        stats[k]["saturations"] = sum(v for key, v in stats[k].items() if key not in ("spikes", "saturations"))
    return ({k: np.stack(v, 1) for k, v in spikes_rec.items()}, {k: np.stack(v, 1) for k, v in v_rec.items()},
            stats)


def assert_matches_oracle(graph, x, steps):
    spikes, v, stats = oracle(graph, x, steps)
    for record in (True, False):
        got = fixed.simulate(graph, x, steps, device="cpu", record=record)
        assert {k: s.as_dict() for k, s in got.stats.items()} == stats
        assert np.array_equal(got.trace.outputs["output"], v["n3"][:, -1])
        if record:
            for k in v:
                assert np.array_equal(got.trace.spikes[k], spikes[k]), k
                assert np.array_equal(got.trace.v[k], v[k]), k
    return stats


params = st.fixed_dictionaries({
    "seed": st.integers(0, 2**16),
    "du": st.sampled_from([0, 1, 2047, 4094, 4095]),
    "dv": st.sampled_from([0, 1, 2048, 4095]),
    "reset": st.sampled_from([Reset.SUBTRACT, Reset.ZERO, Reset.SIGNED]),
    "w": st.sampled_from([8, 64, 256]),
    "positive": st.booleans(),
    "conv_bits": st.sampled_from([10, 24]),
    "exp": st.sampled_from([-3, 0, 3]),
    "conv_exp": st.sampled_from([0, 2]),  # a membrane-add's conv with a left-shifted kernel
    "vth": st.sampled_from([4, 2000, 2**17 - 1]),
    "bias": st.sampled_from([0, 4095]),
    "v_init": st.sampled_from([0, 2**22]),
    "input_scale": st.sampled_from([1.0, 4000.0, 1e6]),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=params)
def test_fast_simulator_equals_the_plain_oracle(p):
    graph = graph_for(p)
    x = np.random.default_rng(p["seed"]).uniform(-1, 1, (3, 2, 6, 6))
    assert_matches_oracle(graph, x, steps=12)


@pytest.mark.parametrize("path", ["cpu", "cuda path on the cpu"])
def test_the_oracle_cases_reach_every_overflow_kind(path, monkeypatch):
    """The strategy above is not vacuous: some of its corners wrap, clip and overflow. Also run
    through the code path CUDA takes (every check every step, sums rounded, time-major record)."""
    if path != "cpu":
        monkeypatch.setattr(fixed, "_on_host", lambda dev: False)
    seen = dict.fromkeys(["u_wrapped", "a_in_overflow", "conv_wrapped", "v_clipped", "v_clipped_low",
                          "readout_spikes", "bias_saturated"], 0)
    corners = [
        dict(du=0, dv=0, w=256, positive=True, conv_bits=24, exp=3, vth=4, bias=4095, v_init=0,
             input_scale=4000.0),
        dict(du=0, dv=0, w=256, positive=False, conv_bits=10, exp=3, vth=4, bias=4095, v_init=0,
             input_scale=4000.0),
        dict(du=4095, dv=0, w=256, positive=False, conv_bits=24, exp=3, vth=2000, bias=0, v_init=2**22,
             input_scale=1e6),
        dict(du=1, dv=1, w=256, positive=False, conv_bits=10, exp=0, vth=4, bias=4095, v_init=2**22,
             input_scale=1.0),
    ]
    for seed, corner in enumerate(corners):
        p = dict(corner, seed=seed, reset=Reset.SUBTRACT)
        x = np.random.default_rng(seed).uniform(-1, 1, (3, 2, 6, 6))
        stats = assert_matches_oracle(graph_for(p), x, steps=12)
        for layer in stats.values():
            for key in seen:
                seen[key] += layer[key]
    assert all(seen.values()), seen


@pytest.mark.parametrize("keep", [0, 1, 2048, 4095, 4096])
def test_decay_shortcuts_are_exact(keep):
    x = torch.tensor([-(2**23), -5000, -4097, -1, 0, 1, 4097, 5000, 2**23 - 1], dtype=torch.int64)
    expected = fixed.decay(x, keep)
    got = fixed._decayed(x, keep)
    assert torch.equal(torch.zeros_like(x) if got is None else got, expected)


@pytest.mark.parametrize("path", ["cpu", "cuda path on the cpu"])
def test_signed_spikes_equal_the_oracle_and_take_spikes_back(path, monkeypatch):
    """Reset.SIGNED on both code paths: every −1 / 0 / +1 spike and v as the oracle computes
    them, −1 spikes do occur (and are counted as such), and no neuron's spikes ever sum below 0."""
    if path != "cpu":
        monkeypatch.setattr(fixed, "_on_host", lambda dev: False)
    negative = 0
    for seed, (vth, w) in enumerate([(4, 8), (2000, 256), (40, 64)]):
        p = dict(seed=seed, du=4095, dv=0, reset=Reset.SIGNED, w=w, positive=False, conv_bits=24, exp=0,
                 conv_exp=0, vth=vth, bias=4095, v_init=0, input_scale=4000.0)
        graph, x = graph_for(p), np.random.default_rng(seed).uniform(-1, 1, (3, 2, 6, 6))
        spikes, _, _ = oracle(graph, x, 12)
        assert_matches_oracle(graph, x, steps=12)
        got = fixed.simulate(graph, x, 12, device="cpu", record=False)
        for k in ("n1", "n2"):
            assert got.stats[k].negative_spikes == int(np.sum(spikes[k] < 0))
            assert np.all(np.cumsum(spikes[k].astype(np.int64), axis=1) >= 0)
            negative += got.stats[k].negative_spikes
    assert negative > 0
