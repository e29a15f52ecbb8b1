"""NIR in: our own files round-trip exactly, and snnTorch's export_to_nir graphs run the same here."""

import nir
import numpy as np
import pytest
import snntorch as snn
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompile.backends import nir as nir_backend
from snncompile.errors import UnsupportedModelError
from snncompile.frontends import nir as nir_frontend
from snncompile.ir import IF, LIF, AvgPool2d, Conv2d, Dense, Flatten, Integrator, Reset, SumPool2d, chain
from snncompile.sim import snn as float_snn


def assert_same_graph(a, b):
    """Same nodes, kinds and edges; same parameters up to float rounding (tau = dt/(1 − beta)
    and back is exact only to ~1e-15)."""
    import dataclasses

    assert a.structure() == b.structure()
    for name, op in a.nodes():
        other = b.op(name)
        for f in dataclasses.fields(op):
            x, y = getattr(op, f.name), getattr(other, f.name)
            if isinstance(x, np.ndarray):
                assert np.allclose(*np.broadcast_arrays(x, y), rtol=1e-12, atol=1e-12), (name, f.name)
            else:
                assert x == y, (name, f.name)


@st.composite
def spiking_graphs(draw):
    """Random conv/pool/dense chains with IF or LIF neurons and an Integrator readout."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    c, h = draw(st.integers(1, 3)), draw(st.sampled_from([4, 6, 8]))
    ops, shape = [], (c, h, h)

    def neuron(shape):
        theta = rng.uniform(0.5, 2.0)
        reset = draw(st.sampled_from([Reset.ZERO, Reset.SUBTRACT]))
        if draw(st.booleans()):
            return IF(threshold=np.full(shape, theta), reset=reset)
        alpha = draw(st.sampled_from([0.0, 0.5]))
        return LIF(threshold=np.full(shape, theta), alpha=np.full(shape, alpha),
                   beta=np.full(shape, rng.uniform(0.5, 1.0)), reset=reset)

    for i in range(draw(st.integers(1, 2))):
        out_c = draw(st.integers(1, 4))
        stride = draw(st.sampled_from([1, 2]))
        ops.append((f"conv{i}", Conv2d(weight=rng.normal(size=(out_c, shape[0], 3, 3)),
                                       bias=rng.normal(size=out_c), padding=1, stride=stride)))
        shape = (out_c, (shape[1] - 1) // stride + 1, (shape[2] - 1) // stride + 1)
        ops.append((f"lif{i}", neuron(shape)))
    if shape[1] % 2 == 0:
        pool = draw(st.sampled_from([AvgPool2d, SumPool2d]))
        ops.append(("pool", pool(kernel=2, stride=2)))
        shape = (shape[0], shape[1] // 2, shape[2] // 2)
    if draw(st.booleans()):
        ops.append(("flat", Flatten()))
    n = int(np.prod(shape))
    ops.append(("fc", Dense(weight=rng.normal(size=(5, n)), bias=rng.normal(size=5))))
    ops.append(("readout", Integrator()))
    return chain((c, h, h), ops)


@settings(max_examples=25, deadline=None)
@given(spiking_graphs())
def test_ir_to_nir_to_ir_is_structurally_equal(tmp_path_factory, graph):
    path = tmp_path_factory.mktemp("rt") / "g.nir"
    nir_backend.write(graph, path, flavor="snncompile")
    assert_same_graph(graph, nir_frontend.load_model(path))


def test_snntorch_export_runs_the_same_here():
    """snnTorch's own network and our import of its NIR give the same spikes and outputs."""
    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(12, 16), torch.nn.Linear(16, 4)
    # snnTorch's exporter needs per-neuron beta/threshold tensors and ignore_dims=[0] (batch)
    lif1 = snn.Leaky(beta=torch.full((16,), 0.8), threshold=torch.full((16,), 0.7), reset_mechanism="zero",
                     reset_delay=False, init_hidden=True)
    lif2 = snn.Leaky(beta=torch.full((4,), 0.9), threshold=torch.full((4,), 0.5), reset_mechanism="zero",
                     reset_delay=False, init_hidden=True, output=True)
    net = torch.nn.Sequential(fc1, lif1, fc2, lif2)
    x = torch.rand(8, 12) * 2
    from snntorch.export_nir import export_to_nir

    graph = nir_frontend.from_nir(export_to_nir(net, x[:1], ignore_dims=[0]))  # snnTorch: dt = 1e-4
    lifs = graph.find(LIF)
    assert len(lifs) == 2 and all(graph.op(n).reset is Reset.ZERO for n in lifs)
    assert np.allclose(graph.op(lifs[0]).beta, 0.8) and np.allclose(graph.op(lifs[1]).beta, 0.9)
    steps = 20
    spikes, mems = [], []
    with torch.no_grad():
        lif1.reset_hidden(), lif2.reset_hidden()
        for _ in range(steps):
            spk, mem = net(x)
            spikes.append(spk), mems.append(mem)
    ours = float_snn.simulate(graph, x.numpy().astype(np.float64), steps, delay=0, record=True)
    last = lifs[-1]
    assert np.array_equal(ours.spikes[last].astype(bool), torch.stack(spikes, 1).numpy().astype(bool))
    assert np.allclose(ours.v[last], torch.stack(mems, 1).numpy(), atol=1e-5)


def test_unsupported_nir_nodes_are_listed_together():
    g = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([3])}),
        nir.Affine(weight=np.ones((3, 3)), bias=np.zeros(3)),
        nir.Threshold(threshold=np.ones(3)),
        nir.LI(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3)),
        nir.Output(output_type={"output": np.array([3])}),
    )
    with pytest.raises(UnsupportedModelError) as err:
        nir_frontend.from_nir(g)
    assert [p.op for p in err.value.problems] == ["Threshold", "LI"]


def test_continuous_time_rules():
    """dt·R scales an IF's input; LIF decay is 1 − dt/tau; CubaLIF folds both gains."""
    dt = 0.5
    g = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([2])}),
        nir.Affine(weight=np.eye(2), bias=np.zeros(2)),
        nir.CubaLIF(tau_syn=np.full(2, 2.0), tau_mem=np.full(2, 4.0), r=np.full(2, 3.0),
                    v_leak=np.zeros(2), v_threshold=np.ones(2), w_in=np.full(2, 5.0)),
        nir.Affine(weight=np.eye(2), bias=np.zeros(2)),
        nir.IF(r=np.full(2, 4.0), v_threshold=np.ones(2)),
        nir.Output(output_type={"output": np.array([2])}),
    )
    graph = nir_frontend.from_nir(g, dt=dt)
    (cuba,) = graph.find(LIF)
    op = graph.op(cuba)
    assert np.allclose(op.alpha, 1 - dt / 2.0) and np.allclose(op.beta, 1 - dt / 4.0)
    (first, second) = graph.find(Dense)
    assert np.allclose(graph.op(first).weight, np.eye(2) * (dt * 5.0 / 2.0) * (dt * 3.0 / 4.0))
    assert np.allclose(graph.op(second).weight, np.eye(2) * dt * 4.0)
    assert graph.op(graph.find(IF)[0]).reset is Reset.ZERO
