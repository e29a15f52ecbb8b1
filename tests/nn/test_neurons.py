"""snncompile.nn: the neurons' discrete-time equations, the synaptic delay, the relay, gradients."""

import numpy as np
import pytest
import torch

import snncompile.nn as snn
from snncompile.errors import SnnCompileError


def run(neuron, currents):
    x = torch.tensor(currents, dtype=torch.float64).reshape(-1, 1, 1)
    return neuron(x).reshape(-1).tolist()


def reference_lif(currents, threshold, beta, reset):
    """The docstring's equations written out by hand."""
    v, out = 0.0, []
    for x in currents:
        v = beta * v + x
        s = v > threshold
        if s:
            v = 0.0 if reset == "zero" else v - threshold
        out.append(float(s))
    return out


@pytest.mark.parametrize("beta,reset", [(0.9, "zero"), (0.5, "subtract"), (1.0, "subtract"), (1.0, "zero")])
def test_lif_follows_its_equations(beta, reset):
    currents = np.random.default_rng(0).uniform(-0.2, 1.2, 40).tolist()
    got = run(snn.LIF(threshold=1.0, beta=beta, reset=reset), currents)
    assert got == reference_lif(currents, 1.0, beta, reset)
    assert 0 < sum(got) < len(got)


def test_threshold_is_strict_and_if_subtracts():
    # v = 1 is not > 1; v = 2 fires and keeps 1; 1.5 fires and keeps 0.5; 0.9 does not
    assert run(snn.IF(threshold=1.0), [1.0, 1.0, 0.5, 0.4]) == [0.0, 1.0, 1.0, 0.0]
    assert run(snn.IF(threshold=1.0), [0.6, 0.6, 0.6, 0.6]) == [0.0, 1.0, 0.0, 1.0]


def test_synapses_delay_one_step_and_the_stem_does_not():
    s = torch.zeros(4, 1, 3)
    s[0, 0, 1] = 1
    lin = snn.Linear(3, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 4.0]]))
    assert lin(s).reshape(-1).tolist() == [0.0, 2.0, 0.0, 0.0]
    assert snn.repeat(torch.ones(2, 3), 5).shape == (5, 2, 3)
    assert snn.delay(torch.arange(3.0)).tolist() == [0.0, 0.0, 1.0]


def test_sew_iand_relay_is_not_a_and_b_one_step_late():
    a = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]).reshape(-1, 1, 1)
    b = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0]).reshape(-1, 1, 1)
    out = snn.SewIAnd()(a, b).reshape(-1).tolist()
    expected = [0.0] + ((1 - a) * b).reshape(-1).tolist()[:-1]
    assert out == expected == [0.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("connection", snn.CONNECTIONS)
def test_gradients_reach_every_layer(connection):
    torch.manual_seed(0)
    model = snn.SpikingResNet(connection, "lif", steps=16)
    x = torch.rand(8, 1, 8, 8) * 2
    loss = torch.nn.functional.cross_entropy(model(x) / 16, torch.arange(8) % 10)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_parameters_are_refused():
    with pytest.raises(SnnCompileError, match="reset"):
        snn.LIF(reset="hard")
    with pytest.raises(SnnCompileError, match="connection"):
        snn.SpikingBlock(4, "concat")
    with pytest.raises(SnnCompileError):
        snn.LIF(beta=1.5)
