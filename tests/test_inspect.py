"""``snncompile inspect`` and the resources in the report: the IR as a table with every layer's
cores, the old ``snncompile MODEL`` form untouched, and a model too large for one chip failing
with one line that names its layers and fitting when given enough chips (real CLI, subprocess)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from snncompile import cli
from snncompile.api import Options, inspect_model
from snncompile.report.build import build_report, ir_table, write_report
from snncompile.sim.fixed import LayerStats

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "examples" / "digits_cnn.pt2"
MLP = ROOT / "examples" / "digits_mlp.pt2"


def snncompile(*args):
    return subprocess.run([sys.executable, "-m", "snncompile.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def one_line_error(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snncompile: error: "), text
    return lines[0]


@pytest.fixture(scope="module")
def big_mlp(tmp_path_factory):
    """64 -> 4096 -> 2800 -> 10: 11.5 M weights, 142 Loihi 2 cores under the default limits."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 4096), nn.ReLU(), nn.Linear(4096, 2800), nn.ReLU(), nn.Linear(2800, 10))
    with torch.no_grad():  # every hidden unit active over a similar range: per-channel threshold
        for layer in (model[0], model[2]):  # balancing then keeps every weight (a random init's
            layer.weight.uniform_(0.5, 1.5).div_(layer.in_features)  # near-silent units would round
            layer.bias.fill_(0.1)  # most of them to zero in fixed point, and fit on one chip)
    path = tmp_path_factory.mktemp("big") / "big.pt2"
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(1, 64),)), path)
    return path


def test_inspect_prints_the_ir_with_cores(capsys):
    # max thresholds: the default mse search at T=16 gives relu_5 a bias clock (negative biases
    # beyond its start potential, passes.latency), two more rows than this layout pins
    assert cli.main(["inspect", str(CNN), "--steps", "16", "--calib-samples", "64", "--threshold", "max"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["name", "op", "shape", "neurons", "synapses", "cores"]
    rows = {line.split()[0]: line.split() for line in lines[2:] if line and not line.startswith("Loihi 2")}
    assert list(rows) == ["input", "conv2d_0", "relu_2_input", "relu_2", "conv2d_3", "relu_5", "dense_8",
                          "dense_8_readout", "output"]
    assert rows["input"][-1] == "host" and rows["relu_2_input"][-1] == "host"
    assert rows["relu_2"][1:] == ["LoihiNeuron", "16x8x8", "1024", "0", "0"]
    assert rows["relu_5"][3] == "512" and rows["relu_5"][-1] == "0"
    assert rows["conv2d_3"][4] == rows["relu_5"][4]  # a neuron's synapses are those of the ops feeding it
    assert lines[-1] == "Loihi 2: 1 core(s) on 1 of 1 chip(s); lower bound 1 core(s), ratio 1.00"


def test_inspect_calibrates_only_when_asked_by_name(capsys):
    """Under --calibrate auto inspect shows the uncalibrated graph and says on stderr what a
    compile would run; --calibrate light runs it. The layers and cores are the same either way.
    (T=8: at T=16 light's bias correction leaves the signed-spike CNN as it was, closer to the ANN.)"""
    assert cli.main(["inspect", str(CNN), "--steps", "8", "--calib-samples", "64"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("snncompile: inspect: no calibration run; a compile would run advanced (auto: ")
    assert captured.err.count("\n") == 1
    result = inspect_model(CNN, Options(steps=8, calib_samples=64, progress=False))
    assert result.calibration.startswith("advanced (auto: ")
    assert result.fixed_graph.metadata["calibration"]["mode"] == "none"
    light = inspect_model(CNN, Options(steps=8, calib_samples=64, progress=False, calibrate="light"))
    assert light.calibration is None and light.fixed_graph.metadata["calibration"]["mode"] == "light"
    assert list(light.fixed_graph.order()) == list(result.fixed_graph.order())
    assert light.placement.as_dict()["cores_used"] == result.placement.as_dict()["cores_used"]
    assert any(not np.array_equal(light.fixed_graph.op(n).bias_mant, result.fixed_graph.op(n).bias_mant)
               for n in ("relu_2", "relu_5"))
    assert cli.main(["inspect", str(CNN), "--steps", "8", "--calib-samples", "64", "--calibrate", "light"]) == 0
    assert capsys.readouterr().err == ""


def test_inspect_and_the_old_form_share_one_line_errors(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in one_line_error(capsys.readouterr().err)
    # the old form still reads its first word as the model, and takes --chips
    out = tmp_path / "out"
    assert cli.main([str(tmp_path / "inspect.pt"), "-o", str(out), "--chips", "2"]) == 2
    assert "inspect.pt: model file not found" in one_line_error(capsys.readouterr().err)
    assert not out.exists()


def test_too_large_for_one_chip_fails_and_fits_on_two(big_mlp, tmp_path):
    out = tmp_path / "out"
    proc = snncompile(big_mlp, "-o", out, "--calib-samples", 16)
    line = one_line_error(proc.stderr)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "needs 142 cores, 128 available on 1 Loihi 2 chip(s), 14 short (fits on 2 chips)" in line
    assert "relu_1 (142 cores)" in line and "relu_3 (140 cores)" in line
    assert not out.exists()

    proc = snncompile("inspect", big_mlp, "--calib-samples", 16, "--chips", 2)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("Loihi 2: 142 core(s) on 2 of 2 chip(s)")


def test_report_resources_and_energy_estimate(tmp_path):
    options = Options(steps=8, calib_samples=64, progress=False)
    result = inspect_model(MLP, options)
    g, placement = result.fixed_graph, result.placement
    spikes = {"relu_1": 640, "relu_3": 320, "dense_4_readout": 0}
    stats = {name: LayerStats(spikes=n) for name, n in spikes.items()}
    report = build_report(
        options=options, float_graph=result.float_graph, snn_graph=result.snn_graph, fixed_graph=g,
        ann_accuracy=None, float_snn_accuracy=0.5, snn_accuracy=0.5, ann_logits=None, snn_logits=None,
        stats=stats, comparison=None, test_samples=10, calib_samples=64, timings={}, placement=placement)
    res = report.data["resources"]
    assert res["cores_used"] == 1 and res["chips"] == 1 and res["lower_bound"] == 1
    assert res["cores_over_lower_bound"] == 1.0
    assert res["totals"]["neurons"] == 64 + 32 + 10
    assert res["utilization"]["neurons"]["max"] == pytest.approx(106 / 7812)
    act = res["activity"]
    # 64 spikes per inference in relu_1, each reaching relu_3's 32 neurons through dense_2's weights
    dense_2 = int((g.op("dense_2").weight != 0).sum())
    assert act["layers"][0]["synaptic_ops"] == pytest.approx(64 * dense_2 / 64)
    assert act["per_inference"]["neuron_updates"] == 106 * 8
    energy = act["energy_estimate_uJ"]
    assert energy["low"] == pytest.approx((act["per_inference"]["synaptic_ops"] * 23.6 + 106 * 8 * 52) * 1e-6)
    assert "LOIHI 1" in energy["source"] and "estimate" in energy["note"]
    assert "Loihi 2: 1 core(s) on 1 of 1 chip(s)" in report.summary()

    files = write_report(report, tmp_path)
    assert json.loads(files["report_json"].read_text())["resources"]["cores_used"] == 1
    md = files["report_md"].read_text()
    assert "## Resources (Loihi 2)" in md and "Estimated energy" in md and "Loihi 1" in md
    assert ir_table(g, placement).count("\n") == len(g) + 3


def test_a_closed_pipe_is_no_traceback():
    """`snncompile inspect MODEL | head`: the reader may leave before the table is written (here
    it never reads: `true` exits at once); no traceback, exit 0."""
    import subprocess
    import sys

    proc = subprocess.run(f"'{sys.executable}' -m snncompile.cli inspect examples/digits_mlp.pt2 --steps 4 | true; "
                          "echo ${PIPESTATUS[0]}", shell=True, capture_output=True, text=True,
                          executable="/bin/bash", timeout=300)
    assert proc.stdout.strip() == "0", proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
