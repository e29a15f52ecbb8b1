"""benchmarks/fidelity.py runs end to end on a small bundled model: the main table after a mode
that reuses the calibrate-none conversion, and the --gap/--noise table (cb80d14 fixed a crash
there that no test saw: every mode after ``none`` failed with --gap), with --unseen also fixed −
float paired per sample."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PERCENT = r"(\d+\.\d\d)"


def test_fidelity_script_main_and_gap_tables(tmp_path):
    out = tmp_path / "fidelity.md"
    done = subprocess.run(
        [sys.executable, "benchmarks/fidelity.py", "--models", "mlp", "--steps", "4", "--modes", "none",
         "light (float)", "light", "--gap", "--noise", "1", "--no-peer", "--test-samples", "40", "--timing",
         "--unseen", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "Produced by `python benchmarks/fidelity.py --models mlp" in text
    rows = {}
    for line in text.splitlines():
        m = re.match(rf"\| mlp \| {PERCENT} % \| 4 \| {PERCENT} % \| ([^|]+) \| {PERCENT} % \| ([+-]\d+\.\d\d) \|", line)
        if m:
            ann, float_snn, mode, snn, diff = m.groups()
            rows[mode.strip()] = (float(ann), float(float_snn), float(snn), float(diff))
    assert set(rows) == {"none", "light (float)", "light"}, text
    for ann, float_snn, snn, diff in rows.values():
        assert 0 < snn <= 100 and abs(snn - ann - diff) < 0.011
    gap = [line for line in text.splitlines() if re.match(rf"\| mlp \| 4 \| {PERCENT} \|", line)]
    assert len(gap) == 1, text
    cells = [c.strip() for c in gap[0].strip("|").split("|")]
    # model, T, float, weights, thresholds, biases, v_init, all, fixed, the noise range
    assert len(cells) == 10
    numbers = [float(c) for c in cells[2:9]]
    assert all(0 < v <= 100 for v in numbers)
    # the gap table's float SNN is the main table's (the same conversion, the same test samples)
    assert numbers[0] == rows["none"][1]
    assert re.fullmatch(rf"{PERCENT} – {PERCENT} \(mean {PERCENT}\)", cells[9])
    # --timing: a row per main-table row; off = more + fewer (shares of sample·neuron pairs, rounded)
    timing = re.findall(r"^\| mlp \| 4 \| ([^|]+) \| (\d+) \| (\d+\.\d) % \| (\d+\.\d) % \| (\d+\.\d) % \| "
                        r"([+-]\d+\.\d{3}) \| (\d+\.\d\d) \| (\w+): (\d+\.\d) %, ([+-]\d+\.\d{3}) \|$", text, re.M)
    assert {t[0].strip() for t in timing} == set(rows), text
    for _, layers, off, more, fewer, _, count, _, worst_off, _ in timing:
        assert int(layers) == 2 and float(count) > 0
        assert abs(float(off) - float(more) - float(fewer)) <= 0.11 and float(off) <= float(worst_off) <= 100
    # --unseen: a row per main-table row; its test difference is the main table's SNN − ANN, the
    # unseen samples are the train split after the 256 calibration samples (1,437 − 256), and the
    # 95 % interval of both sets together lies around a mean within the two sets' means
    unseen = re.findall(r"^\| mlp \| 4 \| ([^|]+) \| ([+-]\d+\.\d\d) ± (\d+\.\d\d) \| (\d+) \| ([+-]\d+\.\d\d) ± "
                        rf"(\d+\.\d\d) \| {PERCENT} % \| ([+-]\d+\.\d\d) … ([+-]\d+\.\d\d) \| — \|$", text, re.M)
    assert {u[0].strip() for u in unseen} == set(rows), text
    for mode, test, test_se, count, diff, diff_se, agree, low, high in unseen:
        assert abs(float(test) - rows[mode.strip()][3]) < 0.011 and float(test_se) >= 0 and float(diff_se) >= 0
        assert int(count) == 1437 - 256 and 0 < float(agree) <= 100
        middle = (float(low) + float(high)) / 2
        assert float(low) <= float(high) and min(float(test), float(diff)) - 0.011 <= middle <= max(float(test), float(diff)) + 0.011
    # --gap with --unseen: the quantization's own loss paired per sample, on the same unseen
    # samples; on the test split it is the main table's fixed point less its float SNN
    quant = re.findall(r"^\| mlp \| 4 \| ([+-]\d+\.\d\d) ± (\d+\.\d\d) \| (\d+) \| ([+-]\d+\.\d\d) ± (\d+\.\d\d) \| "
                       rf"{PERCENT} % \| ([+-]\d+\.\d\d) … ([+-]\d+\.\d\d) \|$", text, re.M)
    assert len(quant) == 1, text
    test, _, count, diff, _, agree, low, high = quant[0]
    assert abs(float(test) - (rows["none"][2] - rows["none"][1])) < 0.011
    assert int(count) == 1437 - 256 and 0 < float(agree) <= 100 and float(low) <= float(high)


def test_fidelity_script_ideal_rate_model_and_model_file(tmp_path):
    """--model-file runs the benchmark on another file of a benchmark model (here a copy of the
    bundled MLP), and --ideal adds each conversion's ideal T-step rate model: at T=64 it scores
    within 3 points of the ANN (a wrong threshold or relay rule in it gave chance level on
    MobileNetV2), and its table carries the main table's ANN and float SNN."""
    import shutil

    copy = tmp_path / "mlp_copy.pt2"
    shutil.copy(ROOT / "examples" / "digits_mlp.pt2", copy)
    done = subprocess.run(
        [sys.executable, "benchmarks/fidelity.py", "--models", "mlp", "--steps", "64", "--modes", "none",
         "--no-peer", "--test-samples", "100", "--ideal", "--model-file", f"mlp={copy}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"(mlp: the model in {copy}, not the bundled examples/digits_mlp.pt2)" in done.stdout
    main = re.search(rf"\| mlp \| {PERCENT} % \| 64 \| {PERCENT} % \| none \|", done.stdout)
    ideal = re.search(rf"^\| mlp \| 64 \| 256 \| {PERCENT} % \| {PERCENT} % \| {PERCENT} % \|$", done.stdout, re.M)
    assert main and ideal, done.stdout
    ann, ideal_acc, float_snn = map(float, ideal.groups())
    assert float(main.group(1)) == ann and float(main.group(2)) == float_snn
    assert abs(ideal_acc - ann) <= 3.0

    bad = subprocess.run([sys.executable, "benchmarks/fidelity.py", "--models", "mlp", "--model-file", "mlp"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--model-file mlp: expected KEY=PATH" in bad.stderr
