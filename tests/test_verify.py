"""``snncompile verify``: a compiled OUTDIR replayed on the reference, against Lava or a recording."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from snncompile.report.verify import main as verify_main
from snncompile.report.verify import verify

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "examples" / "digits_mlp.pt2"
STEPS = 16
RUN = STEPS + 2  # T + L: the MLP's readout is two synaptic delays from the host (passes.latency)
SIM = "Loihi2SimCfg(select_tag='fixed_pt')"

pytestmark = pytest.mark.lava


def snncompile(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "snncompile.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or ROOT, timeout=600)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The bundled MLP compiled by the CLI, and the recording its run_on_loihi.py made (simulation)."""
    out = tmp_path_factory.mktemp("verify") / "out"
    proc = snncompile(MLP, "--target", "loihi2", "-o", out, "--steps", STEPS, "--samples", 2, "--calib-samples", 64,
                      "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert {"network.json", "network.npz", "run_on_loihi.py"} <= {p.name for p in out.iterdir()}
    recording = out.parent / "recording.npz"
    proc = subprocess.run([sys.executable, str(out / "run_on_loihi.py"), "--run-config", "sim", "--probe", "all",
                           "--out", str(recording)], capture_output=True, text=True, cwd=out.parent, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out, recording


def edited(recording: Path, path: Path, change) -> Path:
    """A copy of ``recording`` with ``change(arrays)`` applied."""
    with np.load(recording, allow_pickle=False) as npz:
        arrays = {k: npz[k].copy() for k in npz.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_recording_from_the_script_is_identical(compiled):
    out, recording = compiled
    proc = snncompile("verify", out, "--against", recording)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "summary: identical"
    assert f"vs {recording} ({SIM}), 2 sample(s) x {RUN} steps" in proc.stdout
    for layer in ("relu_1", "relu_3", "dense_4_readout"):
        assert any(line.split()[:1] == [layer] and line.split()[2] == "0" for line in proc.stdout.splitlines())


def test_one_flipped_spike_is_found_exactly(compiled, tmp_path, capsys):
    out, recording = compiled
    with np.load(recording, allow_pickle=False) as npz:
        original = int(npz["spikes/relu_3"][1, 5, 7])

    def flip(arrays):
        arrays["spikes/relu_3"][1, 5, 7] = 1 - original

    flipped = edited(recording, tmp_path / "flipped.npz", flip)
    proc = snncompile("verify", out, "--against", flipped)
    assert proc.returncode == 1, proc.stderr
    assert (f"first divergence: layer relu_3, step 5, sample 1, neuron (7), spikes: expected {original}, "
            f"got {1 - original}") in proc.stdout
    values = 2 * RUN * (64 + 32 + 10) * 2
    assert proc.stdout.strip().splitlines()[-1] == f"summary: differs in 1 of {values} values"
    assert "differing values per step, relu_3: 0 0 0 0 0 1 " + " ".join("0" * (RUN - 6)) in proc.stdout
    page = (Path(out) / "verify.html").read_text()  # the same section as the report's, as a page
    assert "relu_3" in page and "data:image/png;base64," in page

    result = verify(out, against=flipped, device="cpu")
    assert result["identical"] is False and result["passed"] is False
    assert result["first_divergence"] == {"layer": "relu_3", "step": 5, "sample": 1, "neuron": (7,),
                                          "quantity": "spikes", "expected": original, "got": 1 - original}
    assert result["layers"]["relu_3"] == {"compared": 2 * RUN * 32 * 2, "differing": 1, "spikes_differing": 1,
                                          "v_differing": 0, "per_step": [0] * 5 + [1] + [0] * (RUN - 6)}
    assert result["layers"]["relu_1"]["differing"] == 0
    assert result["summary"] == f"differs in 1 of {values} values"

    assert verify_main([str(out), "--against", str(flipped), "--tolerance", "0.001"]) == 0
    assert "(within tolerance 0.001)" in capsys.readouterr().out


def test_earliest_step_wins_across_layers(compiled, tmp_path):
    out, recording = compiled

    def change(arrays):
        arrays["v/dense_4_readout"][0, 9, 2] += 3  # later layer, later step
        arrays["v/relu_1"][1, 12, 40] -= 1
        arrays["v/relu_3"][0, 3, 4] += 64  # earliest

    result = verify(out, against=edited(recording, tmp_path / "v.npz", change), device="cpu")
    first = result["first_divergence"]
    assert (first["layer"], first["step"], first["sample"], first["neuron"], first["quantity"]) == (
        "relu_3", 3, 0, (4,), "v")
    assert first["got"] - first["expected"] == 64
    assert result["differing"] == 3
    assert [result["layers"][k]["v_differing"] for k in ("relu_1", "relu_3", "dense_4_readout")] == [1, 1, 1]


def test_verify_without_recording_compares_lava_and_reference(compiled, capsys):
    out, _ = compiled
    assert verify_main([str(out), "--samples", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["identical"] is True and result["against"] == "lava" and result["run_config"] == SIM
    assert result["samples"] == 1 and result["sample_ids"] == [0] and result["steps"] == RUN
    assert list(result["layers"]) == ["relu_1", "relu_3", "dense_4_readout"]
    assert result["first_divergence"] is None and result["summary"] == "identical"
    assert result["compared"] == RUN * (64 + 32 + 10) * 2


def bad(argv, capsys, *fragments):
    assert verify_main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("snncompile: error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


def test_bad_input_is_one_line_and_exit_2(compiled, tmp_path, capsys):
    out, recording = compiled
    bad([tmp_path, "--against", recording], capsys, "network.json: run bundle not found")
    bad([out, "--against", tmp_path / "none.npz"], capsys, "none.npz: recording not found")
    (tmp_path / "text.npz").write_text("not a zip")
    bad([out, "--against", tmp_path / "text.npz"], capsys, "text.npz: not a readable .npz recording")
    bad([out, "--against", recording, "--tolerance", "2"], capsys, "--tolerance is a fraction")
    bad([out, "--bogus"], capsys, "unrecognized arguments: --bogus")

    def short(arrays):
        arrays["v/relu_3"] = arrays["v/relu_3"][:, :-1]

    bad([out, "--against", edited(recording, tmp_path / "short.npz", short)], capsys,
        f"'v/relu_3' has shape (2, {RUN - 1}, 32), the bundle needs (2, {RUN}, 32)")

    def rename(arrays):
        meta = json.loads(str(arrays["meta"]))
        meta["layers"][0] = "conv9"
        arrays["meta"] = np.array(json.dumps(meta))

    bad([out, "--against", edited(recording, tmp_path / "renamed.npz", rename)], capsys,
        "layer(s) conv9 not in the bundle's neuron layers (relu_1, relu_3, dense_4_readout)")

    def schema(arrays):
        arrays["meta"] = np.array(json.dumps({"schema": "other", "version": 1}))

    bad([out, "--against", edited(recording, tmp_path / "schema.npz", schema)], capsys,
        "meta.schema is not 'snncompile-recording'")

    def ids(arrays):
        arrays["sample_ids"] = np.array([0, 99])

    bad([out, "--against", edited(recording, tmp_path / "ids.npz", ids)], capsys,
        "sample ids [99] are not in the bundle's samples [0, 1]")

    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    (moved / "network.npz").unlink()
    bad([moved], capsys, "network.npz: run bundle arrays not found")
