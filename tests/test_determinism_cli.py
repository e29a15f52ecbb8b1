"""Determinism and CLI hygiene: the same model, data and flags give a byte-identical report.json
(timings aside) and identical spikes across processes with different hash seeds; --json prints
report.json's content and nothing else on stdout; --quiet prints nothing."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from snncompile.cli import main

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "examples" / "digits_mlp.pt2"


def _without_timings(text: str) -> dict:
    report = json.loads(text)
    report.pop("timings_s")
    report["calibration"].pop("seconds", None)  # a calibration's wall time
    return report


@pytest.mark.lava
def test_two_processes_give_the_same_report_and_spikes(tmp_path):
    outs, raw = [], []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}"
        script = (
            "import sys, numpy as np\n"
            "from snncompile.api import Options, compile_model\n"
            "from snncompile.backends import reference\n"
            "from snncompile.data import digits\n"
            f"c = compile_model({str(MLP)!r}, {str(out)!r}, Options(steps=8, samples=2, calib_samples=64, "
            "progress=False, device='cpu'))\n"
            "x = digits(image=False).test.x[:16]\n"
            "t = reference.run(c.fixed_graph, x, 8, device='cpu').trace\n"
            f"np.savez({str(out / 'spikes.npz')!r}, **{{k: v for k, v in t.spikes.items()}})\n"
        )
        env = dict(os.environ, PYTHONHASHSEED=seed)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                              env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(out)
        raw.append((out / "report.json").read_text())
    first, second = (_without_timings(r) for r in raw)
    assert first == second
    # byte-identical once the timings are removed: same keys, order and float formatting
    strip = [json.dumps(_without_timings(r), indent=2) for r in raw]
    assert strip[0] == strip[1]
    assert str(tmp_path) not in raw[0]  # no absolute output paths in the report
    # the CPU kernels the calibration's float32 sums ran on (they may change its integer weights)
    assert json.loads(raw[0])["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    a, b = (np.load(o / "spikes.npz") for o in outs)
    assert sorted(a.files) == sorted(b.files) and a.files
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key
    assert sum(int(a[k].sum()) for k in a.files) > 0


def _run(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def test_json_and_quiet(tmp_path):
    base = [str(MLP), "--target", "nir", "--steps", "2", "--calib-samples", "8"]
    code, out, err = _run(base + ["-o", str(tmp_path / "j"), "--json"])
    assert code == 0, err
    assert json.loads(out) == json.loads((tmp_path / "j" / "report.json").read_text())
    code, out, err = _run(base + ["-o", str(tmp_path / "q"), "--quiet"])
    assert code == 0 and out == "" and err == ""
    assert (tmp_path / "q" / "report.json").is_file()
    code, out, err = _run([str(tmp_path / "missing.pt2"), "-o", str(tmp_path / "e"), "--json", "--quiet"])
    assert code == 2 and json.loads(out)["exit_code"] == 2 and "missing.pt2" in json.loads(out)["error"]
    assert err.startswith("snncompile: error: ") and len(err.strip().splitlines()) == 1
