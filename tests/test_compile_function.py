"""snncompile.compile(module, target=..., data=...): the one-call Python API, on a module trained here."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import snncompile
from snncompile.api import Compiled, load_model
from snncompile.errors import DataError, SnnCompileError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_mlp(digits_flat):
    """A 64-32-10 ReLU MLP on the flat digits, trained for a second: well above chance."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.tensor(digits_flat.train.x)
    y = torch.tensor(digits_flat.train.y)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.train()  # left in training mode: compile must not change it


def test_compile_an_nn_module(trained_mlp, tmp_path):
    result = snncompile.compile(trained_mlp, target="loihi2", data="digits", outdir=tmp_path, steps=16,
                                samples=1, calib_samples=128, device="cpu", progress=False)
    assert isinstance(result, Compiled)
    assert trained_mlp.training  # the module's mode is restored
    d = result.report.data
    assert d["ann_accuracy"] > 0.85
    assert d["snn_accuracy"] > 0.8 * d["ann_accuracy"]
    assert d["bit_exact"]["mismatches"] == 0 and d["bit_exact"]["samples"] == 1
    # the example input came from the data: flat digits (64,), not the (1, 8, 8) image it tried first
    (inp,) = result.float_graph.input_names()
    assert result.float_graph.shape(inp) == (64,)
    assert json.loads((tmp_path / "report.json").read_text())["steps"] == 16
    assert {"report_json", "report_md", "report_html"} <= set(result.files)


def test_compile_a_path_and_a_graph_into_a_temporary_folder():
    path = ROOT / "examples" / "digits_mlp.pt2"
    by_path = snncompile.compile(path, target="nir", steps=8, calib_samples=64, progress=False)
    by_graph = snncompile.compile(load_model(path), target="nir", steps=8, calib_samples=64, progress=False)
    assert by_path.files["nir"].is_file() and by_graph.files["nir"].is_file()
    assert by_path.files["nir"].parent != by_graph.files["nir"].parent
    assert by_path.report.data["float_snn_accuracy"] == by_graph.report.data["float_snn_accuracy"] > 0.8


def test_a_module_that_takes_no_data_shape_is_one_clear_error():
    net = nn.Linear(10, 2)  # digits are (1, 8, 8) or (64,): neither fits
    with pytest.raises(DataError, match="input_shape"):
        snncompile.compile(net, target="nir", steps=4, progress=False)


def test_unknown_option_is_a_type_error_and_bad_target_a_compile_error(trained_mlp):
    with pytest.raises(TypeError):
        snncompile.compile(trained_mlp, stepz=8)
    with pytest.raises(SnnCompileError, match="unknown target"):
        snncompile.compile(trained_mlp, target="tpu", steps=4, progress=False)


@pytest.mark.parametrize("option", ["samples", "steps", "calib_samples"])
def test_zero_samples_or_steps_is_a_compile_error_naming_the_option(trained_mlp, tmp_path, option):
    """The CLI refuses 0 in its parser; the API said nothing and failed inside numpy (samples=0:
    'need at least one array to stack', after the whole compile)."""
    with pytest.raises(SnnCompileError, match=rf"Options\.{option} must be at least 1, got 0"):
        snncompile.compile(trained_mlp, outdir=tmp_path / "out", **{option: 0}, progress=False)
    assert not (tmp_path / "out").exists()
