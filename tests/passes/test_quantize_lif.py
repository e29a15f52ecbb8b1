"""Quantize maps LIF decays to Loihi's du/dv, and refuses what Loihi cannot compute the same way."""

import numpy as np
import pytest

from snncompile.errors import UnsupportedModelError
from snncompile.ir import LIF, Dense, GraphBuilder, Input, Integrator, LoihiNeuron, Output, Reset
from snncompile.passes.quantize import Quantize
from snncompile.sim import fixed
from snncompile.sim import snn as float_snn


def lif_mlp(beta=0.75, alpha=0.0, bias=None):
    rng = np.random.default_rng(0)
    b = GraphBuilder()
    b.add("input", Input(shape=(6,)))
    b.add("fc1", Dense(weight=rng.uniform(0, 0.6, (5, 6))), ["input"])
    b.add("lif1", LIF(threshold=1.0, alpha=0.0, beta=0.9, reset=Reset.ZERO), ["fc1"])
    b.add("fc2", Dense(weight=rng.normal(0, 0.8, (4, 5)), bias=bias), ["lif1"])
    b.add("lif2", LIF(threshold=1.0, alpha=alpha, beta=beta, reset=Reset.SUBTRACT), ["fc2"])
    b.add("fc3", Dense(weight=rng.normal(0, 0.5, (3, 4))), ["lif2"])
    b.add("readout", Integrator(), ["fc3"])
    b.add("output", Output(), ["readout"])
    return b.build()


@pytest.mark.parametrize("beta,alpha,du,dv", [(0.75, 0.0, 4095, 1024), (0.9, 0.5, 2047, 410), (0.0, 0.0, 4095, 4095)])
def test_decays(beta, alpha, du, dv):
    data = np.random.default_rng(1).uniform(0, 1, (32, 6))
    q = Quantize(data=data, steps=16)(lif_mlp(beta, alpha))
    op = q.op("lif2")
    assert isinstance(op, LoihiNeuron) and (op.du, op.dv) == (du, dv) and op.reset is Reset.SUBTRACT
    assert (q.op("lif1").du, q.op("lif1").dv) == (4095, 410)
    assert (q.op("readout").du, q.op("readout").dv) == (4095, 0)
    # fixed point follows the float LIF: same spikes for almost every neuron and step
    x = data[:8]
    ref = fixed.simulate(q, x, 16, device="cpu").trace.spikes
    flt = float_snn.simulate(lif_mlp(beta, alpha), x, 16, delay=1, record=True).spikes
    assert np.array_equal(ref["lif1"], flt["lif1"])  # host-fed layer: exact up to the bias format
    assert np.mean(ref["lif2"] == flt["lif2"]) > 0.95 and flt["lif2"].sum() > 0


def test_current_decay_with_a_bias_is_refused():
    with pytest.raises(UnsupportedModelError, match="alpha > 0"):
        Quantize(data=np.zeros((2, 6)), steps=8)(lif_mlp(alpha=0.5, bias=np.full(4, 0.1)))


def test_non_uniform_beta_is_refused():
    g = lif_mlp()
    b = g.edit()
    b.replace("lif2", LIF(threshold=1.0, beta=np.array([0.5, 0.6, 0.7, 0.8]), reset=Reset.ZERO))
    with pytest.raises(UnsupportedModelError, match="uniform"):
        Quantize(data=np.zeros((2, 6)), steps=8)(b.build())
