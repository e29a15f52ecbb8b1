"""The fidelity gate (``--min-accuracy-ratio`` / ``--max-accuracy-drop``, exit code 3), and the
project's own gate on every CI run: the bundled CNN, light calibration in fixed point, T=16, and
the VGG-style CNN with the defaults at T=8."""

import json

import pytest

from snncompile.cli import EXIT_FIDELITY, main


@pytest.mark.lava
def test_ci_fidelity_gate_bundled_cnn_light_calibration_t16(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["examples/digits_cnn.pt2", "-o", str(out), "--steps", "16", "--threshold", "mse",
                 "--calibrate", "light", "--max-accuracy-drop", "2", "--min-accuracy-ratio", "0.98",
                 "--samples", "1", "--no-progress"])
    report = json.loads((out / "report.json").read_text())
    gate = report["fidelity_gate"]
    assert code == 0, gate
    assert gate["passed"] and gate["reference"] == "ANN" and gate["failures"] == []
    assert report["snn_accuracy"] >= report["ann_accuracy"] - 0.02
    assert report["calibration"]["mode"] == "light" and report["calibration"]["samples"] == 256
    assert report["calibration"]["seconds"] > 0
    assert "Fidelity gate: passed" in (out / "report.md").read_text()
    # the drop with its paired 95 % interval: its mean is the accuracies' difference
    drop = report["fidelity"]["accuracy_drop"]
    assert drop["samples"] == report["test_samples"] == 360
    assert abs(drop["pp"] - 100 * (report["ann_accuracy"] - report["snn_accuracy"])) < 1e-9
    low, high = drop["interval_95_pp"]
    # 1.96 standard errors, or where no sample differs (SE 0) the rule of three, 3/360
    half = 1.96 * drop["standard_error_pp"] or 300 / 360
    assert drop["standard_error_pp"] >= 0 and abs(low - (drop["pp"] - half)) < 1e-9
    assert abs(high - (drop["pp"] + half)) < 1e-9
    assert "Accuracy drop from the ANN: " in (out / "report.md").read_text()


@pytest.mark.lava
def test_ci_fidelity_gate_vgg_defaults_t8(tmp_path, capsys):
    """A second model, the defaults (θ/2, per-channel balancing, --calibrate auto = advanced here)
    and T=8 steps of evidence: measured 99.72 % = the ANN's (benchmarks/results/fidelity.md); the
    gate allows a 1.5 pp drop."""
    out = tmp_path / "out"
    code = main(["examples/digits_vgg.pt2", "-o", str(out), "--steps", "8", "--max-accuracy-drop", "1.5",
                 "--samples", "1", "--no-progress"])
    report = json.loads((out / "report.json").read_text())
    gate = report["fidelity_gate"]
    assert code == 0, gate
    assert gate["passed"] and gate["failures"] == []
    # --calibrate auto: advanced on a model this small
    assert report["calibration"]["mode"] == "advanced" and report["calibration"]["requested"] == "auto"
    assert report["snn_accuracy"] >= report["ann_accuracy"] - 0.015
    # advanced ends with the readout's weight calibration: its output error on the calibration
    # samples before and after, and whether it is in the graph compiled (only where it went down)
    readout = report["calibration"]["readout"]
    before, after = readout["objective"]
    assert isinstance(readout["kept"], bool) and before > 0
    assert after < before or not readout["kept"]


def test_gate_failure_exits_3_with_one_line_and_keeps_the_report(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["examples/digits_mlp.pt2", "--target", "nir", "-o", str(out), "--steps", "2",
                 "--min-accuracy-ratio", "0.999", "--no-progress"])
    assert code == EXIT_FIDELITY == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("snncompile: error: fidelity gate failed: SNN/ANN accuracy ratio")
    gate = json.loads((out / "report.json").read_text())["fidelity_gate"]
    assert not gate["passed"] and gate["min_accuracy_ratio"] == 0.999
    assert gate["reference"] == "ANN" and gate["snn_accuracy"] < 0.999 * gate["reference_accuracy"]


def test_gate_needs_labels(tmp_path, capsys, digits_flat):
    import numpy as np

    data = tmp_path / "x.npz"
    np.savez(data, x=digits_flat.test.x[:20])
    assert main(["examples/digits_mlp.pt2", "--target", "nir", "-o", str(tmp_path / "o"), "--data", str(data),
                 "--max-accuracy-drop", "1"]) == 2
    assert "the fidelity gate needs labels ('y')" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--min-accuracy-ratio", "1.5"), ("--max-accuracy-drop", "-1"),
                                         ("--min-accuracy-ratio", "abc")])
def test_gate_values_are_checked(tmp_path, capsys, flag, value):
    assert main(["examples/digits_mlp.pt2", "-o", str(tmp_path / "o"), flag, value]) == 2
    assert flag in capsys.readouterr().err


def test_paired_difference_and_the_gate_message_carry_the_interval():
    """The paired per-sample difference against a hand computation, and a failing gate names the
    drop's 95 % interval beside the drop."""
    import numpy as np

    from snncompile.compiler import Options, fidelity_gate
    from snncompile.report.build import Report, accuracy_drop, paired_difference

    labels = np.array([0, 1, 2, 3])
    mean, se = paired_difference([0, 1, 0, 3], [0, 0, 0, 0], labels)  # correct: 1 1 0 1 vs 1 0 0 0
    # differences 0, 1, 0, 1: mean 0.5, sample standard deviation √(1/3), over √4
    assert mean == 0.5 and abs(se - np.sqrt(1 / 3) / 2) < 1e-12
    assert np.isnan(paired_difference([1], [1], [1])[1])

    eye = np.eye(4)
    ann, snn = eye[[0, 1, 2, 3]], eye[[0, 1, 0, 0]]  # the ANN right on all 4, the SNN on 2
    drop = accuracy_drop(ann, snn, labels)
    assert drop["pp"] == 50.0 and drop["samples"] == 4
    assert abs(drop["standard_error_pp"] - 100 * np.sqrt(1 / 3) / 2) < 1e-9
    same = accuracy_drop(ann, ann, labels)  # no sample differs: ±3/n, not ±0
    assert same["pp"] == 0 and same["standard_error_pp"] == 0 and same["interval_95_pp"] == [-75.0, 75.0]
    report = Report({"snn_accuracy": 0.5, "ann_accuracy": 1.0, "float_snn_accuracy": 0.5,
                     "fidelity": {"accuracy_drop": drop}})
    gate = fidelity_gate(report, Options(max_accuracy_drop=10))
    low, high = drop["interval_95_pp"]
    assert gate["failures"] == [f"accuracy drop 50.00 pp > 10 pp (ANN 100.00 %, SNN 50.00 %, 95 % interval "
                                f"{low:.2f} … {high:.2f} pp)"]
