"""snncompile.nn and snnTorch models through the torch frontend: IR neurons, residual lowering,
and the float semantics kept (torch model == IR float simulation, snnTorch == IR float simulation)."""

import numpy as np
import pytest
import torch
from torch import nn

import snncompile.nn as snn
from snncompile.api import load_model
from snncompile.errors import SnnCompileError, UnsupportedModelError
from snncompile.frontends.torch import from_module
from snncompile.ir import IF, LIF, Add, Conv2d, Dense, Integrator, Reset
from snncompile.passes import pipeline
from snncompile.passes.quantize import Quantize
from snncompile.backends import reference
from snncompile.sim import snn as float_snn

STEPS = 12


def model(connection, neuron="lif", seed=0):
    torch.manual_seed(seed)
    return snn.SpikingResNet(connection, neuron, steps=STEPS).eval()


@pytest.mark.parametrize("neuron", ["lif", "if"])
def test_neurons_become_ir_neurons_with_their_parameters(digits_image, neuron):
    x = torch.tensor(digits_image.test.x[:2])
    graph = from_module(model("membrane_add", neuron), x)
    neurons = {n: graph.op(n) for n, op in graph.nodes() if op.neuron}
    assert list(neurons) == ["sn0", "stage_blocks_0_sn1", "stage_blocks_0_sn2", "stage_blocks_1_sn1",
                             "stage_blocks_1_sn2", "readout"]
    assert isinstance(neurons.pop("readout"), Integrator)
    for op in neurons.values():
        if neuron == "lif":
            assert isinstance(op, LIF) and op.reset is Reset.ZERO
            assert float(op.beta) == pytest.approx(0.9) and float(op.alpha) == 0.0
        else:
            assert isinstance(op, IF) and op.reset is Reset.SUBTRACT
        assert float(op.threshold) == 1.0
    # membrane-add: the branch's conv and the block input meet in an Add before the neuron
    assert [type(graph.op(i)) for i in graph.inputs("stage_blocks_0_sn2")] == [Add]


def test_saved_program_loads_through_the_api(digits_image, tmp_path):
    m = model("sew_iand")
    x = torch.tensor(digits_image.test.x[:2])
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(m, (x,)), path)
    graph = load_model(path)
    assert graph.structure() == from_module(m, x).structure()
    relays = graph.metadata["sew_iand_relays"]
    assert relays == ["stage_blocks_0_iand_relay", "stage_blocks_1_iand_relay"]
    relay = graph.op(relays[0])
    assert isinstance(relay, LIF) and float(relay.beta) == 0.0 and float(relay.threshold) == 0.5
    excite, inhibit = (graph.op(i) for i in graph.inputs(relays[0]))
    assert excite.weight.sum() == 8 and inhibit.weight.sum() == -8  # identity 1x1 convs, 8 channels


EXPECTED_LOWERING = {
    # connection -> (kind of each residual entry, extra synapses per entry)
    "membrane_add": [("membrane_add", 512), ("membrane_add", 512)],
    "sew_add": [("spike_sum", 30976), ("spike_sum", 2 * 5120)],  # block-2 conv1 once more; fc twice more
    "sew_iand": [("sew_iand", 1024), ("sew_iand", 1024)],
    "dense_add": [("membrane_add", 512)] * 3,
}


@pytest.mark.parametrize("connection", snn.CONNECTIONS)
def test_residual_lowering_keeps_the_float_semantics(digits_image, connection):
    m = model(connection)
    x = digits_image.test.x[:40]
    graph = from_module(m, torch.tensor(x[:2]))
    lowered = pipeline.run(graph, pipeline.spiking())
    assert not lowered.find(Add)
    entries = lowered.metadata["residual"]
    assert [(e["connection"], e["extra_synapses"]) for e in entries] == EXPECTED_LOWERING[connection]
    # every neuron is fed by synapses only (or the host), so Loihi can hold it
    for name, op in lowered.nodes():
        if op.neuron and name != "sn0":
            assert all(isinstance(lowered.op(i), (Dense, Conv2d)) for i in lowered.inputs(name)), name
    with torch.no_grad():
        expected = m(torch.tensor(x)).numpy()
    # Before lowering, an Add of spikes straight into a neuron (membrane-add) is not delayed in
    # the IR; the shortcut synapse the lowering makes is, like snncompile.nn's delay(x).
    checked = (graph, lowered) if connection in ("sew_add", "sew_iand") else (lowered,)
    for g in checked:
        (got,) = float_snn.simulate(g, x, STEPS, delay=1).outputs.values()
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.abs(expected).max() > 1  # the readout saw spikes


def test_sew_add_copies_the_synapse_per_addend(digits_image):
    graph = pipeline.run(from_module(model("sew_add"), torch.tensor(digits_image.test.x[:2])),
                         pipeline.spiking())
    sources = {i: graph.inputs(i) for i in graph.inputs("stage_blocks_1_sn1")}
    assert sources == {"stage_blocks_1_conv1_from_stage_blocks_0_sn2": ["stage_blocks_0_sn2"],
                       "stage_blocks_1_conv1_from_sn0": ["sn0"]}
    w = [graph.op(i).weight for i in sources]
    assert np.array_equal(w[0], w[1])
    assert len(graph.inputs("readout")) == 3  # sn0 + block 1 + block 2 spikes, one Dense each


# ---------------------------------------------------------------------------------------------
# snnTorch's Leaky

snntorch = pytest.importorskip("snntorch")
from snncompile.frontends.snntorch import from_snntorch  # noqa: E402


def leaky_net(reset="zero", seed=1):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 32), snntorch.Leaky(beta=0.9, init_hidden=True, reset_mechanism=reset),
                        nn.Linear(32, 10),
                        snntorch.Leaky(beta=0.8, init_hidden=True, output=True, reset_mechanism=reset))
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[2].weight.mul_(3)
    return net


def snntorch_spikes(net, x, steps):
    import snntorch.utils

    snntorch.utils.reset(net)
    first, last = [], []
    hook = net[1].register_forward_hook(lambda m, i, o: first.append(o.detach()))
    with torch.no_grad():
        for _ in range(steps):
            spk, _mem = net(torch.tensor(x))
            last.append(spk)
    hook.remove()
    return torch.stack(first, 1).numpy(), torch.stack(last, 1).numpy()


def test_snntorch_leaky_is_the_ir_lif(digits_flat):
    x = digits_flat.test.x[:50]
    net = leaky_net()
    graph = pipeline.run(from_snntorch(net, torch.tensor(x[:2])), pipeline.spiking())
    ops = [graph.op(n) for n in ("lif_1", "lif_3")]
    assert [float(op.beta) for op in ops] == pytest.approx([0.9, 0.8])
    assert all(op.reset is Reset.ZERO for op in ops)
    theirs = snntorch_spikes(net, x, 16)
    ours = float_snn.simulate(graph, x, 16, delay=0, record=True)  # snnTorch has no synaptic delay
    for name, spikes in zip(("lif_1", "lif_3"), theirs):
        assert np.array_equal(ours.spikes[name], spikes)
        assert spikes.sum() > 0


def test_snntorch_leaky_in_fixed_point_matches_its_float_spike_counts(digits_flat):
    """Tolerance: layer 1 (fed by the host) must match exactly; layer 2, compared one step
    later (the chip's synaptic delay), may differ by one spike per neuron over the window: its
    weights are rounded to 8 bits, its decay 0.8 becomes (4096 − 819)/4096 = 0.80005 and each
    decayed v is truncated, so a membrane that ends a step within that error of the threshold can
    fire one step earlier or later, moving one spike across the window's edge."""
    x = digits_flat.test.x[:50]
    net = leaky_net()
    steps = 16
    graph = pipeline.run(from_snntorch(net, torch.tensor(x[:2])), pipeline.spiking())
    fixed = pipeline.run(graph, (Quantize(data=digits_flat.train.x[:256], steps=steps),))
    assert [fixed.op(n).dv for n in ("lif_1", "lif_3")] == [410, 819]
    assert all(fixed.op(n).du == 4095 for n in ("lif_1", "lif_3"))
    first, last = snntorch_spikes(net, x, steps)
    trace = reference.run(fixed, x, steps, device="cpu").trace
    assert np.array_equal(trace.spikes["lif_1"], first)
    ours, theirs = trace.spikes["lif_3"][:, 1:].sum(1), last[:, :-1].sum(1)
    assert np.abs(ours - theirs).max() <= 1
    assert abs(int(ours.sum()) - int(theirs.sum())) <= 0.05 * theirs.sum()


def test_snntorch_subtract_with_leak_is_refused():
    with pytest.raises(UnsupportedModelError, match="reset by subtraction with beta=0.9") as info:
        from_snntorch(leaky_net(reset="subtract"), torch.zeros(2, 64))
    assert len(info.value.problems) == 2 and "\n" not in str(info.value)
    assert isinstance(info.value, SnnCompileError)
