"""The run bundle (network.json + network.npz) and the standalone run_on_loihi.py it ships with."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from snncompile.api import load_model
from snncompile.backends import bundle
from snncompile.backends.lava import compat, run_lava
from snncompile.ir import FixedConv2d, Reset
from snncompile.passes import pipeline
from snncompile.passes.convert import ConvertReLU
from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.passes.linear_regions import LowerLinearRegions
from snncompile.passes.quantize import Quantize
from snncompile.sim.ann import encode_inputs
from tests.builders import make_cnn, make_deep_cnn, make_resnet

ROOT = Path(__file__).resolve().parents[2]
SITE_PACKAGES = Path(np.__file__).resolve().parents[1]
# What lava-nc 0.10 needs to import and run on the CPU (found by removing packages one at a time).
LAVA_ONLY = ("lava", "numpy", "scipy", "networkx", "asteval")
STEPS = 16


@pytest.fixture(scope="module")
def mlp(digits_flat):
    graph = load_model(ROOT / "examples" / "digits_mlp.pt2")
    return pipeline.run(graph, pipeline.loihi2(digits_flat.train.x[:256], STEPS))


@pytest.fixture(scope="module")
def deep_cnn(digits_image):
    return pipeline.run(make_deep_cnn(seed=9), pipeline.loihi2(digits_image.train.x[:128], STEPS))


def fixed_graphs(digits_image):
    data = digits_image.train.x[:64]
    zero = (fold_batchnorm, ConvertReLU(data=data, reset=Reset.ZERO), LowerLinearRegions(relays=False), Quantize(data=data, steps=40))
    return {
        "resnet": pipeline.run(make_resnet(seed=3), pipeline.loihi2(data, STEPS)),
        "cnn_zero_reset": pipeline.run(make_cnn(seed=7), zero),
    }


def assert_same_graph(a, b):
    assert a.structure() == b.structure()
    for name, op in a.nodes():
        assert b.op(name) == op, name
        assert type(b.op(name)) is type(op)
        assert b.shape(name) == a.shape(name)


def test_round_trip_mlp_and_cnn(tmp_path, mlp, deep_cnn, digits_flat, digits_image):
    for name, graph, x in (("mlp", mlp, digits_flat.test.x[:3]), ("cnn", deep_cnn, digits_image.test.x[:3])):
        out = tmp_path / name
        out.mkdir()
        paths = bundle.write(graph, out, steps=STEPS, x=x, sample_ids=[5, 7, 9])
        assert sorted(p.name for p in paths.values()) == ["network.json", "network.npz"]
        loaded = bundle.load(out)
        assert_same_graph(graph, loaded.graph)
        assert loaded.steps == STEPS
        assert loaded.sample_ids.tolist() == [5, 7, 9]
        assert np.array_equal(loaded.x, x)
        for enc, (mant, exp, _) in encode_inputs(graph, x).items():
            assert np.array_equal(loaded.encoded[enc][0], mant)
            assert np.array_equal(loaded.encoded[enc][1], exp)
        assert loaded.graph.metadata["quantization"] == json.loads(json.dumps(graph.metadata["quantization"]))
        with np.load(out / "network.npz", allow_pickle=False) as npz:
            assert all(npz[k].dtype != object for k in npz.files)
    assert len(deep_cnn.find(FixedConv2d)) == 2


def test_round_trip_residual_and_zero_reset(tmp_path, digits_image):
    for name, graph in fixed_graphs(digits_image).items():
        out = tmp_path / name
        out.mkdir()
        bundle.write(graph, out, steps=STEPS, x=digits_image.test.x[:1])
        assert_same_graph(graph, bundle.load(out).graph)


def test_bad_bundles_name_the_file(tmp_path, mlp, digits_flat):
    with pytest.raises(bundle.BundleError, match="network.json: run bundle not found"):
        bundle.load(tmp_path)
    bundle.write(mlp, tmp_path, steps=STEPS, x=digits_flat.test.x[:1])
    doc = json.loads((tmp_path / "network.json").read_text())
    doc["version"] = 99
    (tmp_path / "network.json").write_text(json.dumps(doc))
    with pytest.raises(bundle.BundleError, match="bundle version 99"):
        bundle.load(tmp_path)
    doc["version"] = bundle.VERSION
    doc["nodes"][3]["params"]["vth"] = {"array": "node/3/nothing"}
    (tmp_path / "network.json").write_text(json.dumps(doc))
    with pytest.raises(bundle.BundleError, match="node 'relu_1': array 'node/3/nothing' is missing"):
        bundle.load(tmp_path)


def test_script_patches_lava_like_compat():
    """The script's copy of the import hook rewrites Lava's sources exactly as compat does."""
    spec = importlib.util.spec_from_file_location("run_on_loihi_copy", ROOT / "snncompile/backends/run_on_loihi.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for module, ours, theirs in ((compat.VAR_MODEL, compat.patch_source, script.patch_var_model),
                                 (compat.MULTIPROCESSING, compat.patch_start_method, script.patch_start_method)):
        source = Path(importlib.util.find_spec(module).origin).read_text()
        assert ours(source) != source
        assert theirs(source) == ours(source)


def restricted_env(tmp_path: Path) -> dict:
    """A PYTHONPATH holding only lava-nc, numpy and their pure dependencies (run with python -S)."""
    site = tmp_path / "site"
    site.mkdir()
    for name in LAVA_ONLY:
        (site / name).symlink_to(SITE_PACKAGES / name)
    for dist in SITE_PACKAGES.glob("lava_nc-*.dist-info"):
        (site / dist.name).symlink_to(dist)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    return env


@pytest.mark.lava
def test_script_runs_without_snncompile_and_matches_run_lava(tmp_path, deep_cnn, digits_image):
    out = tmp_path / "out"
    out.mkdir()
    x = digits_image.test.x[:2]
    bundle.write(deep_cnn, out, steps=STEPS, x=x)
    script = bundle.write_script(out)
    env = restricted_env(tmp_path)
    python = [sys.executable, "-S"]
    for module in ("torch", "snncompile"):
        proc = subprocess.run([*python, "-c", f"import {module}"], env=env, cwd=tmp_path,
                              capture_output=True, text=True)
        assert proc.returncode == 1 and f"No module named '{module}'" in proc.stderr
    proc = subprocess.run([*python, str(script), "--probe", "all", "--out", str(tmp_path / "rec.npz")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Loihi2SimCfg(select_tag='fixed_pt')" in proc.stdout
    assert "convolution: conv_exact (lava_fastconv.py)" in proc.stdout

    lava = run_lava(deep_cnn, x, STEPS)
    with np.load(tmp_path / "rec.npz", allow_pickle=False) as rec:
        meta = json.loads(str(rec["meta"]))
        assert meta["layers"] == list(lava.v)  # --probe all: every neuron layer, in graph order
        assert meta["output_layers"] == [deep_cnn.inputs(out)[0] for out in deep_cnn.output_names()]
        assert meta["run_config"] == "Loihi2SimCfg(select_tag='fixed_pt')"
        assert meta["lava_version"] == "0.10.0"
        assert meta["steps"] == STEPS and meta["sample_ids"] == [0, 1]
        assert rec["sample_ids"].tolist() == [0, 1]
        for layer in lava.v:
            assert rec[f"spikes/{layer}"].dtype == np.int8 and rec[f"v/{layer}"].dtype == np.int32
            assert rec[f"spikes/{layer}"].shape == (2, STEPS, *deep_cnn.shape(layer))
            assert np.array_equal(rec[f"spikes/{layer}"], lava.spikes[layer]), layer
            assert np.array_equal(rec[f"v/{layer}"], lava.v[layer]), layer
        assert sum(int(rec[f"spikes/{layer}"].sum()) for layer in lava.v) > 0
        assert meta["conv"] == "conv_exact (lava_fastconv.py)"
    # without its helper the script runs Lava's own conv_scipy, and says so: the same recording
    (out / bundle.HELPER_NAME).unlink()
    proc = subprocess.run([*python, str(script), "--samples", "1", "--out", str(tmp_path / "rec_scipy.npz")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "rec_scipy.npz", allow_pickle=False) as rec:
        assert json.loads(str(rec["meta"]))["conv"].startswith("conv_scipy (Lava's")
        (layer,) = json.loads(str(rec["meta"]))["output_layers"]
        assert np.array_equal(rec[f"v/{layer}"], lava.v[layer][:1])


def test_script_rejects_unknown_probe_and_too_many_samples(tmp_path, mlp, digits_flat):
    bundle.write(mlp, tmp_path, steps=STEPS, x=digits_flat.test.x[:1])
    script = bundle.write_script(tmp_path)
    for args, fragment in ((["--probe", "nope"], "--probe: no neuron layer named nope"),
                           (["--samples", "2"], "--samples must be between 1 and 1")):
        proc = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("run_on_loihi.py: error: ") and fragment in lines[0]
    assert not (tmp_path / "recording.npz").exists()


@pytest.mark.lava
def test_script_runs_signed_spikes_like_run_lava_and_the_reference(tmp_path, digits_image):
    """Reset.SIGNED: the bundle keeps the reset ("signed") and the script rebuilds SignedLIF
    populations whose −1 spikes reach Dense and Conv as −weight (num_message_bits = 2): its
    recording equals run_lava's and the reference simulator's, every layer, every step."""
    from snncompile.backends import reference
    from tests.backends.test_lava_backend import signed_resnet

    graph, steps = signed_resnet(digits_image.train.x)
    out = tmp_path / "out"
    out.mkdir()
    x = digits_image.test.x[2:4]
    bundle.write(graph, out, steps=steps, x=x)
    assert_same_graph(graph, bundle.load(out).graph)
    resets = {n["params"]["reset"] for n in json.loads((out / "network.json").read_text())["nodes"]
              if n["op"] == "LoihiNeuron"}
    assert resets == {"signed", "zero"}
    script = bundle.write_script(out)
    proc = subprocess.run([sys.executable, "-S", str(script), "--probe", "all", "--out", str(tmp_path / "rec.npz")],
                          env=restricted_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    ref = reference.run(graph, x, steps, device="cpu").trace
    lava = run_lava(graph, x, steps)
    with np.load(tmp_path / "rec.npz", allow_pickle=False) as rec:
        assert json.loads(str(rec["meta"]))["layers"] == list(ref.v)
        for layer in ref.v:
            for what, want in (("spikes", ref.spikes[layer]), ("v", ref.v[layer])):
                assert np.array_equal(rec[f"{what}/{layer}"], want), (what, layer)
                assert np.array_equal(getattr(lava, what)[layer], want), (what, layer)
        negative = {layer: int((rec[f"spikes/{layer}"] < 0).sum()) for layer in ref.v}
    assert all(negative[n] > 0 for n in ("conv1_2", "relu", "down_2")), negative
