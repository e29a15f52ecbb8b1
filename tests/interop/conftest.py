"""Shared pieces of the interop tests: small digits networks' weights, our side of the comparison.

Every test here runs another SNN library's own code (its exporter, importer and simulation);
none is mocked. The networks are small (64-32-10 MLPs, 1-4-8 channel CNNs on 8x8 digits) and run
16 steps on 32 test samples.
"""

from __future__ import annotations

import warnings

import nir
import numpy as np
import pytest
import torch

from snncompile.frontends import nir as nir_frontend
from snncompile.sim import snn as float_snn

STEPS = 16
SAMPLES = 32


@pytest.fixture(scope="session")
def x_flat(digits_flat):
    return digits_flat.test.x[:SAMPLES].astype(np.float32)


@pytest.fixture(scope="session")
def x_image(digits_image):
    return digits_image.test.x[:SAMPLES].astype(np.float32)


def mlp_layers(seed: int = 0, sizes=(64, 32, 10), gain: float = 1.0):
    """torch Linear layers with weights that make a per-step IF fire often but not always."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        lin = torch.nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g) * gain * 2.0 / np.sqrt(a))
            lin.bias.copy_(torch.rand(b, generator=g) * 0.2)
        layers.append(lin)
    return layers


def cnn_layers(seed: int = 0, gain: float = 1.0):
    """conv(1->4, 3x3, pad 1), [pool 2], conv(4->8, 3x3, pad 1), linear(8*4*4 -> 10)."""
    g = torch.Generator().manual_seed(seed)
    c1, c2, fc = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.Linear(128, 10)
    with torch.no_grad():
        for m, fan in ((c1, 9), (c2, 36), (fc, 128)):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * gain * 2.0 / np.sqrt(fan))
            m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2)
    return c1, c2, fc


def read_back(graph: nir.NIRGraph, tmp_path, **kwargs):
    """Write the tool's graph with nir.write, read it with our frontend (as the CLI does)."""
    path = tmp_path / "tool.nir"
    nir.write(path, graph)
    return nir_frontend.load_model(path, **kwargs)


def our_counts(graph, x, steps: int = STEPS) -> np.ndarray:
    """Spike counts of the last spiking layer, delay-free (the other tools have no synaptic
    delay), float64."""
    from snncompile.ir import IF, LIF

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = float_snn.simulate(graph, np.asarray(x, np.float64), steps, delay=0, record=True)
    last = [n for n in graph.order() if isinstance(graph.op(n), (IF, LIF))][-1]
    return run.spikes[last].sum(1).reshape(len(x), -1)


def snntorch_counts(net, x, steps: int = STEPS):
    """Output spike counts of an snnTorch Sequential of ``init_hidden`` Leaky layers over ``steps``
    steps of a constant input, hidden states reset first (snnTorch's own simulation)."""
    total = 0
    with torch.no_grad():
        for m in net:
            if hasattr(m, "reset_hidden"):
                m.reset_hidden()
        for _ in range(steps):
            spk, _ = net(torch.tensor(x))
            total = total + spk
    return total


def assert_counts_match(theirs: np.ndarray, ours: np.ndarray, min_rate: float = 0.02):
    theirs = np.asarray(theirs).reshape(ours.shape)
    assert theirs.sum() > min_rate * theirs.size * STEPS, "the tool's own network is nearly silent"
    assert np.array_equal(theirs, ours), (
        f"{int((theirs != ours).sum())} of {theirs.size} counts differ; "
        f"theirs {theirs.sum()}, ours {ours.sum()}")


def trained_cnn(pool: str = "avg"):
    """The bundled digits CNN (examples/digits_cnn.pt2: conv 1->16, conv 16->32 stride 2, 2x2
    pool, linear 128->10), BatchNorm folded, as torch modules scaled for IF neurons with
    threshold 1 (data-based normalisation: each layer divided by its 99.9th-percentile ReLU
    activation on 256 training samples). A trained network keeps clear argmax margins, which a
    fixed-point comparison needs. ``pool="sum"`` scales the linear layer for a SumPool2d."""
    from snncompile import data as datasets
    from snncompile.api import load_model
    from snncompile.ir import Conv2d, Dense
    from snncompile.passes import pipeline
    from snncompile.passes.fold_batchnorm import fold_batchnorm

    g = pipeline.run(load_model("examples/digits_cnn.pt2"), (fold_batchnorm,))
    (k1, k2), (d,) = [g.op(n) for n in g.find(Conv2d)], [g.op(n) for n in g.find(Dense)]
    c1, c2, fc = torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.Linear(128, 10)
    x = torch.tensor(datasets.load("digits", (1, 8, 8)).train.x[:256], dtype=torch.float32)
    with torch.no_grad():
        for m, op in ((c1, k1), (c2, k2), (fc, d)):
            m.weight.copy_(torch.tensor(op.weight))
            m.bias.copy_(torch.tensor(op.bias))
        a1 = torch.relu(c1(x))
        a2 = torch.relu(c2(a1))
        a3 = torch.relu(fc(torch.nn.functional.avg_pool2d(a2, 2).flatten(1)))
        lam = [float(torch.quantile(a.flatten(), 0.999)) for a in (a1, a2, a3)]
        for m, lin, lout in ((c1, 1.0, lam[0]), (c2, lam[0], lam[1]), (fc, lam[1], lam[2])):
            m.weight.mul_(lin / lout)
            m.bias.div_(lout)
        if pool == "sum":
            fc.weight.div_(4)
    return c1, c2, fc


def agreement(theirs: np.ndarray, ours: np.ndarray) -> float:
    """Share of samples whose class (argmax of ours) is one of the tool's top classes: a tie
    among the tool's integer counts has no single argmax."""
    theirs = np.asarray(theirs).reshape(len(theirs), -1)
    ours = np.asarray(ours).reshape(len(ours), -1)
    top = theirs == theirs.max(1, keepdims=True)
    return float(np.mean(top[np.arange(len(ours)), ours.argmax(1)]))
