"""NIR out for CNNs, judged by each importer: the bundled digits CNN (examples/digits_cnn.pt2)
converted to a float SNN and written as model.nir loads in the tool's own NIR import, runs
batched, and picks the same class as our float SNN (delay-free) on >= 98 % of 100 test digits.
Two files per tool: the pooling folded into the next layer (what the CLI writes), and the
pooling kept, which the default flavour writes as a Conv2d (no pool node reads in every tool:
snncompile/backends/nir.py). sinabs, norse and SpikingJelly read the default flavour; snnTorch
its own (``--nir-flavor snntorch``: it reads nir.IF as Leaky(beta=0.9)); Rockpool's importer has
no Conv2d, and its flavour refuses a CNN in one line."""

from __future__ import annotations

import warnings

import nir
import numpy as np
import pytest
import torch

from snncompile.api import load_model
from snncompile.backends import nir as nir_backend
from snncompile.errors import UnsupportedModelError
from snncompile.ir import AvgPool2d, Reset
from snncompile.passes import pipeline
from snncompile.passes.convert import ConvertReLU
from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.passes.linear_regions import LowerLinearRegions
from snncompile.sim import snn as float_snn

warnings.filterwarnings("ignore")
STEPS = 32
N = 100


def converted(digits, reset, fold_pool=True):
    graph = load_model("examples/digits_cnn.pt2")
    passes = (fold_batchnorm, ConvertReLU(data=digits.train.x[:256], reset=reset, v_init=0.0))
    if fold_pool:
        passes = (fold_batchnorm, LowerLinearRegions(relays=False), passes[1])
    snn = pipeline.run(graph, passes)
    assert bool(snn.find(AvgPool2d)) != fold_pool
    return snn


def ours(snn, x):
    (readout,) = float_snn.simulate(snn, x, STEPS, delay=0).outputs.values()
    return readout


def agree(theirs, mine):
    return float(np.mean(np.asarray(theirs).reshape(len(mine), -1).argmax(1) == mine.reshape(len(mine), -1).argmax(1)))


def model_file(digits, reset, tmp_path, fold_pool, flavor="nir"):
    snn = converted(digits, reset, fold_pool)
    path = nir_backend.write(snn, tmp_path / "model.nir", flavor=flavor)
    kinds = {type(n).__name__ for n in nir.read(path).nodes.values()}
    assert not kinds & {"AvgPool2d", "SumPool2d", "I"}, kinds
    return snn, path


def stepped(net, x, dtype=torch.float32):
    total, state = 0, None
    with torch.no_grad():
        for _ in range(STEPS):
            out, state = net(torch.tensor(x, dtype=dtype), state)
            total = total + out
    return total.numpy()


@pytest.mark.parametrize("fold_pool", [True, False], ids=["pool-folded", "pool-as-conv"])
def test_sinabs_runs_default_cnn(digits_image, tmp_path, fold_pool):
    sinabs = pytest.importorskip("sinabs")
    snn, path = model_file(digits_image, Reset.SUBTRACT, tmp_path, fold_pool)
    x = digits_image.test.x[:N]
    net = sinabs.from_nir(nir.read(path), num_timesteps=STEPS)
    with torch.no_grad():
        out = net(torch.tensor(x, dtype=torch.float32).repeat_interleave(STEPS, 0))
    out = out[0] if isinstance(out, tuple) else out
    assert agree(out.reshape(N, STEPS, -1).sum(1).numpy(), ours(snn, x)) >= 0.98


@pytest.mark.parametrize("fold_pool", [True, False], ids=["pool-folded", "pool-as-conv"])
def test_norse_runs_default_cnn(digits_image, tmp_path, fold_pool):
    norse = pytest.importorskip("norse.torch")
    snn, path = model_file(digits_image, Reset.ZERO, tmp_path, fold_pool)  # norse resets to v_reset
    net = norse.from_nir(nir.read(path), ignore_warnings=True)
    x = digits_image.test.x[:N]
    assert agree(stepped(net, x), ours(snn, x)) >= 0.98


@pytest.mark.parametrize("fold_pool", [True, False], ids=["pool-folded", "pool-as-conv"])
def test_spikingjelly_runs_default_cnn(digits_image, tmp_path, fold_pool):
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    snn, path = model_file(digits_image, Reset.ZERO, tmp_path, fold_pool)  # hard reset to v_reset
    net = import_from_nir(path, dtype=torch.float64)
    x = digits_image.test.x[:N]
    assert agree(stepped(net, x, torch.float64), ours(snn, x)) >= 0.98


@pytest.mark.parametrize("fold_pool", [True, False], ids=["pool-folded", "pool-as-conv"])
def test_snntorch_runs_its_flavour_cnn(digits_image, tmp_path, fold_pool):
    pytest.importorskip("snntorch")
    from snntorch.import_nir import import_from_nir

    snn, path = model_file(digits_image, Reset.ZERO, tmp_path, fold_pool, flavor="snntorch")
    net = import_from_nir(nir.read(path))
    x = digits_image.test.x[:N]
    total = 0
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "reset_hidden"):
                m.reset_hidden()
        state = None
        for _ in range(STEPS):
            out = net(torch.tensor(x, dtype=torch.float32), state)
            out, state = out if isinstance(out, tuple) else (out, None)
            total = total + out
    assert agree(total.numpy(), ours(snn, x)) >= 0.98


def test_no_one_file_serves_snntorch_and_norse(digits_image, tmp_path):
    """Why snnTorch needs its flavour (README, "Interop"): no NIR neuron node reads as an IF in
    both. snnTorch maps nir.IF to Leaky(beta=0.9) and asserts r == 1 (snntorch/import_nir.py,
    _nir_to_snntorch_module), while SpikingJelly wants IF r = 1/dt: the default file is refused.
    norse maps nir.LIF to LIFBoxCell(tau_mem_inv=1/tau, dt) and ignores r (norse/torch/utils/
    import_nir.py): its input gain is dt/tau, so the nearly leak-free LIF of the snnTorch flavour
    gets almost no input there. (A CubaLIF with tau_syn = dt reads as an IF in snnTorch,
    SpikingJelly and norse given dt=1e-4, but sinabs' from_nir has no CubaLIF.)"""
    pytest.importorskip("snntorch")
    norse = pytest.importorskip("norse.torch")
    from snntorch.import_nir import import_from_nir

    _, path = model_file(digits_image, Reset.ZERO, tmp_path, True)
    with pytest.raises(AssertionError, match="r != 1 not supported"):
        import_from_nir(nir.read(path))
    snn, path = model_file(digits_image, Reset.ZERO, tmp_path, True, flavor="snntorch")
    x = digits_image.test.x[:N]
    assert agree(stepped(norse.from_nir(nir.read(path), ignore_warnings=True), x), ours(snn, x)) < 0.5


def test_rockpool_flavour_refuses_a_cnn_in_one_line(digits_image, tmp_path):
    snn = converted(digits_image, Reset.SUBTRACT)
    with pytest.raises(UnsupportedModelError) as info:
        nir_backend.write(snn, tmp_path / "model.nir", flavor="rockpool")
    message = str(info.value)
    assert "\n" not in message and "Conv2d" in message and "MLP only" in message
    assert not (tmp_path / "model.nir").exists()
