"""Exact float32 where a bound proves it: the per-synapse choice at the 2**24 boundary, against
the int64 oracle.

Two synapses read the same two always-spiking neurons and feed one neuron: A sums to B's
magnitude plus one, B is negative, so the neuron's a_in is 1 whenever both inputs spike. With
A's bound 2**24 + 1 a float32 sum would round A to 2**24 (a_in 0); float64 keeps the 1.
"""

import numpy as np
import pytest
import torch

from snncompile.ir import FixedConv2d, FixedDense, GraphBuilder, Input, LoihiNeuron, Output, Reset
from snncompile.ir.fixed_point import IntFormat
from snncompile.ir.ops import BiasEncoder, Dense
from snncompile.sim import fixed
from snncompile.targets.loihi2 import LOIHI2
from tests.sim.test_fixed_oracle import graph_for, oracle

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDE = IntFormat(bits=26, signed=True)  # test-only weights, large enough to reach 2**24 in two terms


def neuron(shape, vth, readout=False):
    return LoihiNeuron(
        vth=np.full(shape, vth), bias_mant=np.zeros(shape, np.int64), bias_exp=np.zeros(shape, np.int64),
        v_init=np.zeros(shape, np.int64), du=4095, dv=0, reset=Reset.SUBTRACT, readout=readout,
        vth_format=LOIHI2.vth, bias_format=LOIHI2.bias, decay_format=LOIHI2.decay,
    )


def synapse(kind, row):
    """One output neuron whose weights over the two inputs are ``row``."""
    w = np.asarray([row], dtype=np.int64)
    if kind == "dense":
        return FixedDense(weight=w, weight_format=WIDE)
    # a 1x1 conv over 2 channels of one pixel: the same sum
    return FixedConv2d(weight=w.reshape(1, 2, 1, 1), weight_format=WIDE,
                       output_format=IntFormat(bits=26, signed=True))


def boundary_graph(kind, bound_a):
    """input -> host dense -> encoder -> src (2 neurons, firing most steps) -> A, B -> n (readout)."""
    half = 2**23
    a = [half, bound_a - half]  # sum bound_a
    b = [-half, -(bound_a - 1 - half)]  # sum -(bound_a - 1)
    shape = (2,) if kind == "dense" else (2, 1, 1)
    out = (1,) if kind == "dense" else (1, 1, 1)
    g = GraphBuilder()
    g.add("input", Input(shape=shape))
    g.add("host", Dense(weight=np.eye(2)), ["input"]) if kind == "dense" else None
    g.add("enc", BiasEncoder(scale=1000.0, bias_format=LOIHI2.bias), ["host" if kind == "dense" else "input"])
    g.add("src", neuron(shape, 10), ["enc"])
    g.add("a", synapse(kind, a), ["src"])
    g.add("b", synapse(kind, b), ["src"])
    g.add("n", neuron(out, LOIHI2.vth.max, readout=True), ["a", "b"])
    g.add("output", Output(), ["n"])
    return g.build()


def assert_equals_oracle(graph, x, steps):
    spikes, v, stats = oracle(graph, x, steps)
    got = fixed.simulate(graph, x, steps, device="cpu", record=True)
    assert {k: s.as_dict() for k, s in got.stats.items()} == stats
    for k in v:
        assert np.array_equal(got.trace.spikes[k], spikes[k]), k
        assert np.array_equal(got.trace.v[k], v[k]), k
    return v


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("bound, dtype", [(2**24 - 1, "float32"), (2**24 + 1, "float64")])
def test_sum_type_at_the_2_24_boundary_equals_the_int64_oracle(kind, bound, dtype, monkeypatch):
    graph = boundary_graph(kind, bound)
    assert fixed.sum_bound(graph.op("a")) == bound
    assert fixed.sum_dtypes(graph) == {"a": dtype, "b": "float32" if bound - 1 < 2**24 else "float64"}
    x = np.array([[1.0, 1.0], [1.0, 0.3], [0.0, 0.0]]).reshape((3,) + graph.shape("input"))
    v = assert_equals_oracle(graph, x, steps=6)
    # both inputs spiking gives a_in = 1 exactly: v grows by 64 a step once input arrives
    assert np.diff(v["n"][0].reshape(6))[-1] == 64
    # the same bits through the code path CUDA takes
    monkeypatch.setattr(fixed, "_on_host", lambda dev: False)
    assert_equals_oracle(graph, x, steps=6)


def test_float32_would_lose_the_bit_the_bound_protects():
    """The boundary case is not vacuous: the float32 sum of A's weights is off by one."""
    a = torch.tensor([[2.0**23, 2.0**23 + 1]])
    ones = torch.ones(1, 2)
    assert (ones.double() @ a.double().T).item() == 2**24 + 1
    assert (ones.float() @ a.float().T).item() != 2**24 + 1


def test_float32_neuron_state_is_taken_and_exact():
    """IF neurons with small bounds hold float32 state; the result is the oracle's, bit for bit."""
    p = dict(seed=3, du=4095, dv=0, reset=Reset.SUBTRACT, w=64, positive=False, conv_bits=24, exp=0,
             vth=2000, bias=4095, v_init=0, input_scale=4000.0)
    graph = graph_for(p)
    assert set(fixed.sum_dtypes(graph).values()) == {"float32"}
    x = np.random.default_rng(3).uniform(-1, 1, (4, 2, 6, 6))
    v = assert_equals_oracle(graph, x, steps=12)
    assert any(np.any(s) for s in v.values())
    for name in ("n1", "n2", "n3"):
        op = graph.op(name)
        fan_in = sum(fixed._Synapse(graph, s, torch.device("cpu")).bound for s in graph.inputs(name)
                     if not isinstance(graph.op(s), BiasEncoder)) or None
        nr = fixed._Neuron(op, 1, torch.device("cpu"), None, fan_in, 12, LOIHI2, float_inputs=True)
        assert nr.exact_float32, name


def test_leaky_neurons_keep_int64_state():
    p = dict(seed=4, du=2047, dv=1, reset=Reset.ZERO, w=64, positive=False, conv_bits=24, exp=0,
             vth=2000, bias=4095, v_init=0, input_scale=4000.0)
    graph = graph_for(p)
    nr = fixed._Neuron(graph.op("n2"), 1, torch.device("cpu"), None, 100, 12, LOIHI2, float_inputs=True)
    assert not nr.exact_float32
    assert_equals_oracle(graph, np.random.default_rng(4).uniform(-1, 1, (4, 2, 6, 6)), steps=12)


def test_the_callers_precision_settings_are_restored():
    getter = torch._C._get_fp32_precision_getter
    ops = [("mkldnn", "matmul"), ("mkldnn", "conv"), ("cuda", "matmul"), ("cuda", "conv")]

    def settings():
        return (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32,
                torch.backends.cuda.matmul.allow_tf32, [getter(*op) for op in ops])

    before = settings()
    try:
        torch.set_float32_matmul_precision("medium")  # oneDNN bf16 and cuBLAS TF32 for float32
        chosen = settings()
        with fixed._ieee_float32():
            assert torch.get_float32_matmul_precision() == "highest"
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            assert getter("mkldnn", "matmul") == "ieee" and getter("mkldnn", "conv") == "ieee"
        assert settings() == chosen
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]
        for op, value in zip(ops, before[3]):
            torch._C._set_fp32_precision_setter(*op, value)
    assert settings() == before
