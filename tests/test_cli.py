"""The command line, end to end: the README's main job, and one-line errors on bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "examples" / "digits_cnn.pt2"


def snncompile(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "snncompile.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd or ROOT, timeout=600,
    )


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snncompile: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.lava
def test_main_job_on_bundled_cnn(tmp_path):
    out = tmp_path / "out"
    proc = snncompile(CNN, "--target", "loihi2", "-o", out, "--steps", 32, "--samples", 2)
    assert proc.returncode == 0, proc.stderr
    assert "ANN accuracy:" in proc.stdout and "SNN accuracy:" in proc.stdout
    assert "mismatches: 0" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["lava_fastconv.py", "model.nir", "network.json", "network.npz",
                                                     "plots", "report.html", "report.json", "report.md",
                                                     "run_on_loihi.py"]
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "loihi2" and report["steps"] == 32
    # T = 32 steps of evidence after L = 2 steps of synaptic delay: Lava and the reference run 34
    assert report["latency_steps"] == 2 and report["total_steps"] == 34
    # the CNN's three neuron layers and the bias clock that the calibrated negative biases of one of
    # them need (passes/latency.py; the default's advanced calibration with mixups gives it one)
    assert report["bit_exact"] == {"samples": 2, "layers": 4, "steps": 34, "mismatches": 0, "first_mismatch": None}
    assert report["calib_samples_choice"]["mixups"] == report["calib_samples"] == 256
    assert report["snn_accuracy"] >= 0.9 * report["ann_accuracy"]
    for layer in report["layers"]:
        assert {"name", "op", "neurons", "threshold", "saturations"} <= set(layer)
    assert [layer["op"] for layer in report["layers"]][-1] == "readout"


def test_missing_model_file(tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(snncompile(tmp_path / "nope.pt", "-o", out), "nope.pt", "not found")
    assert not out.exists()


def test_not_an_exported_program(tmp_path):
    bad = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, bad)
    out = tmp_path / "out"
    assert_one_line_error(snncompile(bad, "-o", out), "model.pt", "torch.export.save")
    assert not out.exists()


def test_unsupported_ops_listed_in_one_line(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.Sigmoid(), nn.Flatten(), nn.Linear(36, 10))
    path = tmp_path / "model.pt"
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(1, 1, 8, 8),)), path)
    out = tmp_path / "out"
    assert_one_line_error(snncompile(path, "-o", out), "sigmoid", "1 unsupported")
    assert not out.exists()


def test_maxpool_is_refused_naming_the_flag(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 10))
    path = tmp_path / "model.pt"
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(1, 1, 8, 8),)), path)
    out = tmp_path / "out"
    assert_one_line_error(snncompile(path, "-o", out), "MaxPool2d", "--maxpool avg")
    assert not out.exists()


def test_bad_data_file(tmp_path):
    out = tmp_path / "out"
    bad = tmp_path / "data.npz"
    bad.write_bytes(b"not a zip")
    assert_one_line_error(snncompile(CNN, "-o", out, "--data", bad), "data.npz")
    import numpy as np

    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 3, 5, 5), dtype=np.float32))
    assert_one_line_error(snncompile(CNN, "-o", out, "--data", wrong), "wrong.npz", "(1, 8, 8)")
    assert not out.exists()


@pytest.mark.lava
def test_netx_and_nir_targets_and_a_nir_model(tmp_path):
    mlp = ROOT / "examples" / "digits_mlp.pt2"
    proc = snncompile(mlp, "--target", "netx", "-o", tmp_path / "netx", "--samples", 1, "--steps", 16)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "netx").iterdir()) == [
        "lava_fastconv.py", "model.net", "model.nir", "network.json", "network.npz", "plots", "report.html",
        "report.json", "report.md", "run_on_loihi.py"]
    assert "mismatches: 0" in proc.stdout

    proc = snncompile(mlp, "--target", "nir", "-o", tmp_path / "nir", "--steps", 16)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "nir" / "report.json").read_text())
    assert report["bit_exact"] is None and report["snn_accuracy"] is None
    assert report["float_snn_accuracy"] > 0.8

    # the NIR file just written is itself a model: an SNN, compiled without conversion
    proc = snncompile(tmp_path / "nir" / "model.nir", "-o", tmp_path / "again", "--samples", 1, "--steps", 16)
    assert proc.returncode == 0, proc.stderr
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["ann_accuracy"] is None and again["bit_exact"]["mismatches"] == 0
    assert again["float_snn_accuracy"] == report["float_snn_accuracy"]


@pytest.mark.lava
def test_mse_thresholds_and_light_calibration(tmp_path):
    proc = snncompile(CNN, "-o", tmp_path / "out", "--steps", 16, "--samples", 1,
                      "--threshold", "mse", "--calibrate", "light")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["bit_exact"]["mismatches"] == 0
    assert report["snn_accuracy"] >= 0.95 * report["ann_accuracy"]  # plain max balancing: ~0.90 at T=16
