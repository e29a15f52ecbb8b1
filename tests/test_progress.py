"""Long runs say where they are (snncompile/runtime/progress.py): timestamped lines in a log, bars on a
terminal, nothing with --quiet; the summary says which network each accuracy belongs to and flags
results at chance and layers that never fire."""

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from snncompile.runtime import progress
from snncompile.api import Options, compile_model
from snncompile.ir import Dense, ReLU, chain

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d snncompile: ")


@pytest.fixture
def log(monkeypatch, capsys):
    """stderr as a log file (pytest's capture: not a terminal), with a short heartbeat; call it
    for what was written."""
    monkeypatch.setattr(progress, "INTERVAL_S", 0.6)
    monkeypatch.setattr(progress, "MIN_GAP_S", 0.2)
    return lambda: capsys.readouterr().err


def test_log_lines_have_timestamps_progress_and_elapsed(log):
    timings = {}
    phase = progress.phases(True, timings)
    with phase("calibrate"):
        for _ in progress.track(["relu1", "relu2"], "advanced calibration", unit="layers", note=str):
            for _ in progress.track(range(4), "weight calibration", unit="Adam steps"):
                time.sleep(0.1)
    with phase("Lava"):
        time.sleep(2.0)  # one long step: the heartbeat (every 0.6 s here) says it is alive, even on a busy machine
    written = log()
    lines = written.splitlines()
    assert "\r" not in written and all(STAMP.match(line) for line in lines), lines
    text = [STAMP.sub("", line) for line in lines]
    assert text[0] == "calibrate: started"
    assert "calibrate > weight calibration: started (4 Adam steps)" in text
    assert any(t.startswith("calibrate: 1/2 layers (50 %), ") and "elapsed" in t for t in text), text
    assert any(re.fullmatch(r"Lava: \d\.\d s elapsed", t) for t in text), text  # heartbeat
    assert re.fullmatch(r"Lava: done in \d\.\d s", text[-1])
    assert list(timings) == ["calibrate_s", "lava_s"] and timings["lava_s"] >= 1.0


def test_a_run_refused_early_leaves_the_error_line_alone(log):
    phase = progress.phases(True, hold=True)  # as api.compile_model: held until its checks pass
    with phase("load"):
        pass
    with pytest.raises(ValueError), phase("convert"):
        raise ValueError("bad model")
    assert log() == ""
    phase = progress.phases(True, hold=True)
    with phase("load"):
        pass
    assert log() == ""
    progress.release()
    assert [STAMP.sub("", line).split(" in ")[0] for line in log().splitlines()] == [
        "load: started", "load: done"]


def test_not_shown_is_silent_and_still_timed(log):
    timings = {}
    with progress.phase("float SNN", show=False, timings=timings):
        list(progress.track(range(3), "float SNN", show=False))
    assert log() == "" and "float_snn_s" in timings


def _dead_relu_mlp():
    """64 -> 16 -> 10 whose hidden ReLU is never positive on digits (pixels are >= 0)."""
    rng = np.random.default_rng(0)
    return chain((64,), [("fc1", Dense(weight=rng.normal(0, 0.1, (16, 64)), bias=np.full(16, -100.0))),
                         ("relu1", ReLU()),
                         ("fc2", Dense(weight=rng.normal(0, 0.3, (10, 16)), bias=rng.normal(0, 0.1, 10)))])


@pytest.mark.lava
def test_a_silent_network_is_flagged(tmp_path):
    result = compile_model(_dead_relu_mlp(), tmp_path / "out",
                           Options(steps=8, samples=1, calib_samples=32, device="cpu", progress=False))
    flags = json.loads((tmp_path / "out" / "report.json").read_text())["flags"]
    assert {"kind": "silent_layer", "layer": "relu1"} in [{k: f[k] for k in ("kind", "layer") if k in f}
                                                         for f in flags]
    assert "snn_accuracy" in [f.get("accuracy") for f in flags if f["kind"] == "chance_accuracy"]
    summary = result.report.summary()
    assert "flag: layer relu1 never fired on the evaluation data (360 samples x 8 steps)" in summary
    assert "flag: SNN (fixed point) accuracy 10.00 % is at chance level" in summary


@pytest.mark.lava
def test_a_calibrated_run_names_each_accuracy(tmp_path):
    result = compile_model(ROOT / "examples" / "digits_mlp.pt2", tmp_path / "out",
                           Options(steps=8, samples=1, calib_samples=64, calibrate="light", device="cpu",
                                   progress=False))
    lines = result.report.summary().splitlines()
    assert re.fullmatch(r"ANN accuracy: \d+\.\d\d % \(float ANN\)", lines[1])
    assert re.fullmatch(r"float SNN accuracy: \d+\.\d\d % \(float SNN, not quantized, before calibration\)",
                        lines[2])
    assert re.match(r"SNN accuracy: \d+\.\d\d % \(Loihi 2 fixed point after light calibration on 64 samples, "
                    r"reference simulator\)   SNN/ANN: ", lines[3])
    assert re.fullmatch(r"times: load .* s, convert .*, calibrate .*, Lava .*, write .* \(total .*\)", lines[-1])
    meaning = result.report.data["accuracy_of"]
    assert "before light calibration" in meaning["float_snn_accuracy"]
    assert "after light calibration" in meaning["snn_accuracy"]


@pytest.mark.lava
def test_mixups_are_named_apart_from_the_calibration_samples(tmp_path):
    """The mixups compiler.convert added (--calib-mixup on) are named apart from the calibration
    samples in the summary, report.md and report.json; the samples counted are the real ones."""
    result = compile_model(ROOT / "examples" / "digits_mlp.pt2", tmp_path / "out",
                           Options(steps=8, samples=1, calib_samples=64, calibrate="light", device="cpu",
                                   progress=False, calib_mixup="on"))
    lines = result.report.summary().splitlines()
    assert re.match(r"SNN accuracy: \d+\.\d\d % \(Loihi 2 fixed point after light calibration on 64 samples "
                    r"\+ 64 mixups, reference simulator\)   SNN/ANN: ", lines[3])
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["calib_samples"] == 64 and data["data"]["calibration"]["samples"] == 64
    assert data["calib_samples_choice"]["mixups"] == 64 and data["calibration"]["samples"] == 128
    assert "- Calibration samples: 64 + 64 mixups (--calib-mixup on" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.lava
def test_log_file_gets_phase_lines_and_json_keeps_stdout_clean(tmp_path):
    """A run of more than 10 s with stderr to a file: every phase's start and elapsed time, a
    heartbeat or progress line, no carriage return; stdout is the one JSON document. 150 Lava
    samples keep that phase well over MIN_GAP_S (5 s), so a tenth of its work is a progress line:
    since the populations record themselves, Lava's conv is vectorized and samples run back to
    back without Var.set, 100 take 7.7-10 s on 2 cores (40 took 24 s before). They also check 150
    samples bit for bit. No calibration: its phase lines are another test's (9 s here)."""
    err_path = tmp_path / "stderr.log"
    start = time.monotonic()
    with err_path.open("w") as err:
        proc = subprocess.run([sys.executable, "-m", "snncompile.cli", "examples/digits_cnn.pt2", "-o",
                               tmp_path / "out", "--steps", "32", "--samples", "150", "--json", "--device", "cpu",
                               "--calibrate", "none"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, timeout=900)
    seconds = time.monotonic() - start
    log = err_path.read_text()
    assert proc.returncode == 0, log[-2000:]
    assert seconds > 10
    assert json.loads(proc.stdout)["bit_exact"]["mismatches"] == 0
    assert "\r" not in log
    lines = log.splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    for name in ("load", "convert", "quantize", "place", "float SNN", "reference", "Lava", "diagnostics", "write"):
        assert f"snncompile: {name}: started" in log, name
        assert re.search(rf"snncompile: {name}: done in \d+\.\d s$", log, re.M), name
    assert re.search(r"snncompile: Lava: \d+/150 samples \(\d+ %\), .* elapsed", log) or \
        re.search(r"snncompile: \w[\w ]*: .*\d s elapsed", log), log


def test_quiet_prints_nothing_on_stderr(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snncompile.cli", "examples/digits_mlp.pt2", "--target", "nir",
                           "-o", tmp_path / "out", "--steps", "4", "--quiet"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr


def test_bars_on_a_terminal(tmp_path):
    """On a pty: tqdm bars (carriage returns, 'it/s'-style rates, a bar per phase), no log lines."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdout and stderr are the terminal
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "snncompile.cli", "examples/digits_mlp.pt2", "--target",
                                  "nir", "-o", str(tmp_path / "out"), "--steps", "16"])
    out, deadline = b"", time.monotonic() + 600
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    # the float SNN runs the split in batches (sim.snn.predict): its bar counts batches
    assert "\r" in text and "float SNN:" in text and re.search(r"(steps|batches)/s", text), text[-2000:]
    assert re.search(r"load: done in \d\d:\d\d", text), text[-2000:]
    assert not STAMP.search(text.replace("\r", "\n"))
    assert "float SNN accuracy:" in text


def test_version_from_the_package_metadata():
    proc = subprocess.run([sys.executable, "-m", "snncompile.cli", "--version"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"snncompile {metadata.version('snncompile')}"
