"""NIR out, judged by snnTorch: its import_from_nir reads our file and computes what we compute."""

import nir
import numpy as np
import pytest
import torch

from snncompile.api import load_model
from snncompile.backends import nir as nir_backend
from snncompile.errors import UnsupportedModelError
from snncompile.ir import Reset
from snncompile.passes import pipeline
from snncompile.passes.convert import ConvertReLU
from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.passes.linear_regions import LowerLinearRegions
from snncompile.sim import snn as float_snn

snntorch_import = pytest.importorskip("snntorch.import_nir")


def test_snntorch_runs_our_converted_mlp(digits_flat, tmp_path):
    graph = load_model("examples/digits_mlp.pt2")
    data = digits_flat.train.x[:256]
    snn_graph = pipeline.run(graph, (fold_batchnorm, ConvertReLU(data=data, reset=Reset.ZERO, v_init=0.0),
                                      LowerLinearRegions(relays=False)))  # snnTorch starts v at 0
    path = nir_backend.write(snn_graph, tmp_path / "model.nir", flavor="snntorch")
    net = snntorch_import.import_from_nir(nir.read(path))
    x = digits_flat.test.x[:100]
    steps = 32
    total, state = 0, None
    with torch.no_grad():
        for _ in range(steps):
            out, state = net(torch.tensor(x), state)
            total = total + out
    ours = float_snn.simulate(snn_graph, x, steps, delay=0)  # snnTorch has no synaptic delay
    (readout,) = ours.outputs.values()
    theirs = total.numpy()
    assert np.allclose(theirs, readout, rtol=1e-4, atol=1e-4 * np.abs(readout).max())
    assert np.array_equal(theirs.argmax(1), readout.argmax(1))


def test_subtractive_if_is_refused_for_snntorch(digits_flat, tmp_path):
    graph = load_model("examples/digits_mlp.pt2")
    snn_graph = pipeline.run(graph, pipeline.convert(digits_flat.train.x[:64]))
    with pytest.raises(UnsupportedModelError, match="Leaky\\(beta=0.9\\)"):
        nir_backend.write(snn_graph, tmp_path / "model.nir", flavor="snntorch")
    assert not (tmp_path / "model.nir").exists()
