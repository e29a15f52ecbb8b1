"""NIR out, judged by each importer: our model.nir (its flavour for that tool) loads in the
tool's own NIR import, runs batched, and its output (the last layer's current summed over the
steps) picks the same class as our float SNN without synaptic delays."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from snncompile.api import load_model
from snncompile.backends import nir as nir_backend
from snncompile.ir import Reset
from snncompile.passes import pipeline
from snncompile.passes.convert import ConvertReLU
from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.passes.linear_regions import LowerLinearRegions
from snncompile.sim import snn as float_snn

warnings.filterwarnings("ignore")
STEPS = 32
N = 100


def converted(digits, reset):
    graph = load_model("examples/digits_mlp.pt2")
    passes = (fold_batchnorm, ConvertReLU(data=digits.train.x[:256], reset=reset, v_init=0.0), LowerLinearRegions(relays=False))
    return pipeline.run(graph, passes)


def ours(snn, x):
    (readout,) = float_snn.simulate(snn, x, STEPS, delay=0).outputs.values()
    return readout


def agree(theirs, mine):
    return float(np.mean(np.asarray(theirs).argmax(1) == mine.argmax(1)))


def per_step(module, x, state_arg=True):
    total, state = 0, None
    with torch.no_grad():
        for _ in range(STEPS):
            out = module(torch.tensor(x, dtype=torch.float32), state) if state_arg else module(torch.tensor(x, dtype=torch.float32))
            if isinstance(out, tuple):
                out, state = out
            total = total + out
    return total.numpy()


def test_sinabs_runs_default_file(digits_flat, tmp_path):
    sinabs = pytest.importorskip("sinabs")
    snn = converted(digits_flat, Reset.SUBTRACT)
    path = nir_backend.write(snn, tmp_path / "model.nir")
    x = digits_flat.test.x[:N]
    net = sinabs.from_nir(__import__("nir").read(path), num_timesteps=STEPS)
    with torch.no_grad():
        out = net(torch.tensor(x, dtype=torch.float32).repeat_interleave(STEPS, 0))
    out = out[0] if isinstance(out, tuple) else out  # nirtorch's executor returns (output, state)
    theirs = out.reshape(N, STEPS, -1).sum(1).numpy()
    assert agree(theirs, ours(snn, x)) >= 0.98


def test_norse_runs_default_file(digits_flat, tmp_path):
    norse = pytest.importorskip("norse.torch")
    snn = converted(digits_flat, Reset.ZERO)  # norse resets to v_reset
    path = nir_backend.write(snn, tmp_path / "model.nir")
    net = norse.from_nir(__import__("nir").read(path), ignore_warnings=True)
    x = digits_flat.test.x[:N]
    assert agree(per_step(net, x), ours(snn, x)) >= 0.98


def test_spikingjelly_runs_default_file(digits_flat, tmp_path):
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    snn = converted(digits_flat, Reset.ZERO)  # SpikingJelly's importer resets hard to v_reset
    path = nir_backend.write(snn, tmp_path / "model.nir")
    net = import_from_nir(path, dtype=torch.float64)
    x = digits_flat.test.x[:N]
    total, state = 0, None
    with torch.no_grad():
        for _ in range(STEPS):
            out, state = net(torch.tensor(x, dtype=torch.float64), state)
            total = total + out
    assert agree(total.numpy(), ours(snn, x)) >= 0.98


def test_rockpool_runs_rockpool_flavour(digits_flat, tmp_path):
    pytest.importorskip("rockpool")
    from rockpool.nn.modules.torch.nir import from_nir

    snn = converted(digits_flat, Reset.SUBTRACT)
    path = nir_backend.write(snn, tmp_path / "model.nir", flavor="rockpool")
    net = from_nir(__import__("nir").read(path))
    x = digits_flat.test.x[:N]
    with torch.no_grad():
        out = net(torch.tensor(x, dtype=torch.float32)[:, None, :].repeat(1, STEPS, 1))
    out = out[0] if isinstance(out, tuple) else out
    assert agree(out.sum(1).numpy(), ours(snn, x)) >= 0.98
