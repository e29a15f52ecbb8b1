"""Directly trained SNN topologies on Lava fixed_pt == the reference simulator, bit for bit:
spikes and v of every layer (relays and readout included) at every one of >= 16 steps."""

import numpy as np
import pytest
import torch

import snncompile.nn as snn
from snncompile.frontends.torch import from_module
from snncompile.ir import LoihiNeuron, Reset
from snncompile.passes import pipeline
from snncompile.passes.quantize import Quantize
from tests.backends.test_bit_exact import assert_bit_exact

pytestmark = pytest.mark.lava
STEPS = 16


def compiled(connection, neuron, data, seed=0):
    torch.manual_seed(seed)
    model = snn.SpikingResNet(connection, neuron, steps=STEPS).eval()
    graph = from_module(model, torch.tensor(data[:2]))
    return pipeline.run(graph, pipeline.spiking() + (Quantize(data=data[:128], steps=STEPS),))


@pytest.mark.parametrize("connection", snn.CONNECTIONS)
def test_lif_reset_to_zero(digits_image, connection):
    fixed = compiled(connection, "lif", digits_image.train.x)
    neurons = {n: fixed.op(n) for n in fixed.find(LoihiNeuron) if not fixed.op(n).readout}
    for name, op in neurons.items():
        assert op.reset is Reset.ZERO and op.du == 4095
        assert op.dv == (4095 if name.endswith("_relay") else 410)  # beta 0 (relay) and 0.9
    ref = assert_bit_exact(fixed, digits_image.test.x[:1], STEPS)
    for name in neurons:  # every layer takes part, so the comparison means something
        assert ref.trace.spikes[name].sum() > 0, name


@pytest.mark.parametrize("connection", ["membrane_add", "sew_add"])
def test_if_reset_by_subtraction(digits_image, connection):
    fixed = compiled(connection, "if", digits_image.train.x, seed=1)
    neurons = [n for n in fixed.find(LoihiNeuron) if not fixed.op(n).readout]
    assert all(fixed.op(n).reset is Reset.SUBTRACT and fixed.op(n).dv == 0 for n in neurons)
    ref = assert_bit_exact(fixed, digits_image.test.x[1:2], STEPS)
    assert all(ref.trace.spikes[n].sum() > 0 for n in neurons)


def test_snntorch_leaky_network(digits_flat):
    snntorch = pytest.importorskip("snntorch")
    from snncompile.frontends.snntorch import from_snntorch

    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 32), snntorch.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero"),
        torch.nn.Linear(32, 10), snntorch.Leaky(beta=0.8, init_hidden=True, reset_mechanism="zero"))
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[2].weight.mul_(3)
    graph = pipeline.run(from_snntorch(net, torch.tensor(digits_flat.test.x[:2])), pipeline.spiking())
    fixed = pipeline.run(graph, (Quantize(data=digits_flat.train.x[:128], steps=20),))
    ref = assert_bit_exact(fixed, digits_flat.test.x[:2], 20)
    assert all(s.sum() > 0 for s in ref.trace.spikes.values())
    assert np.unique([fixed.op(n).dv for n in fixed.find(LoihiNeuron)]).tolist() == [410, 819]
