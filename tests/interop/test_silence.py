"""Silence is a bug: a NIR file read with a step that silences it exits 2 naming the layer and
the dt assumption; --allow-silent turns that into a loud warning. The snnTorch beta=1 file,
exported as snnTorch writes it (no dt), reads with gain 1 and is not silent."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from snncompile.cli import main
from snncompile.frontends import nir as nir_frontend
from snncompile.sim import activity
from tests.interop.conftest import mlp_layers


@pytest.fixture(scope="module")
def sinabs_file(tmp_path_factory):
    sinabs = pytest.importorskip("sinabs")
    import sinabs.layers as sl

    fc1, fc2 = mlp_layers(1)
    net = torch.nn.Sequential(fc1, sl.IAFSqueeze(num_timesteps=16), fc2, sl.IAFSqueeze(num_timesteps=16))
    path = tmp_path_factory.mktemp("silence") / "sinabs.nir"
    nir.write(path, sinabs.to_nir(net, torch.rand(16, 64)))
    return path


def test_wrong_dt_is_exit_2_naming_layer_and_dt(sinabs_file, tmp_path, capsys):
    code = main([str(sinabs_file), "-o", str(tmp_path / "out"), "--target", "nir", "--steps", "16",
                 "--nir-dt", "1e-4", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "out").exists()
    assert "layer '1' is silent" in err and "dt = 0.0001 (--nir-dt" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_allow_silent_warns_and_goes_on(sinabs_file, tmp_path, capsys):
    code = main([str(sinabs_file), "-o", str(tmp_path / "out"), "--target", "nir", "--steps", "16",
                 "--nir-dt", "1e-4", "--allow-silent", "-q"])
    assert code == 0 and "WARNING (--allow-silent)" in capsys.readouterr().err


def test_snntorch_beta_one_file_as_exported_is_active(digits_flat, tmp_path):
    snn = pytest.importorskip("snntorch")
    from snntorch.export_nir import export_to_nir

    fc1, fc2 = mlp_layers(4, gain=1.5)
    net = torch.nn.Sequential(fc1, snn.Leaky(beta=torch.ones(32), threshold=torch.ones(32), init_hidden=True),
                              fc2, snn.Leaky(beta=torch.ones(10), threshold=torch.ones(10), init_hidden=True,
                                             output=True))
    path = tmp_path / "beta1.nir"
    nir.write(path, export_to_nir(net, torch.rand(1, 64), ignore_dims=[0]))  # no dt edits
    graph = nir_frontend.load_model(path)
    assert graph.metadata["nir_producer"] == "snntorch"
    assert activity.find(graph, digits_flat.train.x[:64], 16) is None
    # snnTorch writes r = tau/dt: with tau = r = ∞ the gain is 1 whatever dt is read (was dt = 1e-4)
    scaled = nir_frontend.load_model(path, dt=1e-4)
    assert np.allclose([scaled.op(n).weight.max() for n, op in scaled.nodes() if hasattr(op, "weight")],
                       [graph.op(n).weight.max() for n, op in graph.nodes() if hasattr(op, "weight")])
