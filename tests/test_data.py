"""The data contract: calibration data kept apart from evaluation data, the same for every command."""

import json

import numpy as np
import pytest

from snncompile import data as datasets
from snncompile.cli import main
from snncompile.errors import DataError

IMAGE = (1, 8, 8)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _samples(digits_image, n, start=0):
    return digits_image.test.x[start:start + n], digits_image.test.y[start:start + n]


def test_named_set_calibrates_on_train_and_evaluates_on_test(digits_image):
    ds = datasets.load("digits", IMAGE, classes=10)
    assert len(ds.train) == 1437 and len(ds.test) == 360
    # no sample is in both parts
    train = {x.tobytes() for x in ds.train.x}
    assert not any(x.tobytes() in train for x in ds.test.x)
    info = ds.describe(256)
    assert info["calibration"] == {"source": "digits: train split (1437 samples; stratified 80 %, seed 0)",
                                   "samples": 256}
    assert info["evaluation"]["samples"] == 360 and info["evaluation"]["labels"] is True


def test_one_file_is_split_into_disjoint_calibration_and_evaluation_parts(tmp_path, digits_image):
    x, y = _samples(digits_image, 100)
    ds = datasets.load(_npz(tmp_path / "d.npz", x=x, y=y), IMAGE, classes=10)
    assert (len(ds.train), len(ds.test)) == (20, 80)  # a fifth calibrates
    order = np.random.default_rng(datasets.SPLIT_SEED).permutation(100)
    np.testing.assert_array_equal(ds.train.x, x[np.sort(order[:20])])
    np.testing.assert_array_equal(ds.test.x, x[np.sort(order[20:])])
    np.testing.assert_array_equal(ds.test.y, y[np.sort(order[20:])])
    assert "20 of 100" in ds.describe()["calibration"]["source"]
    # the same file gives the same split every time
    again = datasets.load(str(tmp_path / "d.npz"), IMAGE, classes=10)
    np.testing.assert_array_equal(again.train.x, ds.train.x)


def test_two_files_keep_every_evaluation_sample(tmp_path, digits_image):
    x, y = _samples(digits_image, 60)
    cx, _ = _samples(digits_image, 30, start=100)
    ds = datasets.load(_npz(tmp_path / "eval.npz", x=x, y=y), IMAGE,
                       calib_spec=_npz(tmp_path / "calib.npz", x=cx), classes=10)
    np.testing.assert_array_equal(ds.test.x, x)
    np.testing.assert_array_equal(ds.train.x, cx)
    info = ds.describe()
    assert info["evaluation"]["samples"] == 60 and info["calibration"]["samples"] == 30
    assert "calib.npz" in info["calibration"]["source"]
    # a named set can calibrate a file's evaluation, too
    mixed = datasets.load(str(tmp_path / "eval.npz"), IMAGE, calib_spec="digits", classes=10)
    assert len(mixed.train) == 1437 and len(mixed.test) == 60


def test_flat_samples_fit_an_image_model_of_the_same_size(tmp_path, digits_image):
    x, y = _samples(digits_image, 10)
    ds = datasets.load(_npz(tmp_path / "flat.npz", x=x.reshape(10, 64), y=y), IMAGE)
    assert ds.test.x.shape[1:] == IMAGE


@pytest.mark.parametrize("case, message", [
    ("shape", "samples have shape (5, 5), the model's input is (1, 8, 8)"),
    ("int_x", "'x' has dtype int64; inputs must be floating point"),
    ("float_y", "'y' has dtype float64; labels must be integers"),
    ("y_length", "'y' has shape (3,); labels must have shape (10,)"),
    ("nan", "'x' holds 1 NaN/Inf value(s), the first at index (2, 0, 3, 4)"),
    ("labels", "..12, the model has 10 outputs (labels must lie in 0..9)"),
    ("no_x", "no array named 'x' (found: inputs)"),
    ("one", "1 sample(s) cannot be split into calibration and evaluation data"),
])
def test_bad_data_is_refused_up_front_naming_file_and_key(tmp_path, digits_image, case, message):
    x, y = _samples(digits_image, 10)
    arrays = {
        "shape": dict(x=np.zeros((10, 5, 5), np.float32), y=y),
        "int_x": dict(x=x.astype(np.int64), y=y),
        "float_y": dict(x=x, y=y.astype(np.float64)),
        "y_length": dict(x=x, y=y[:3]),
        "nan": dict(x=np.where(np.arange(x.size).reshape(x.shape) == 2 * 64 + 3 * 8 + 4, np.nan, x), y=y),
        "labels": dict(x=x, y=np.where(np.arange(10) == 4, 12, y)),
        "no_x": dict(inputs=x),
        "one": dict(x=x[:1], y=y[:1]),
    }[case]
    path = _npz(tmp_path / f"{case}.npz", **arrays)
    with pytest.raises(DataError) as err:
        datasets.load(path, IMAGE, classes=10)
    assert message in str(err.value) and path in str(err.value)


def test_cli_refuses_mismatched_data_before_any_work(tmp_path, capsys):
    bad = _npz(tmp_path / "bad.npz", x=np.zeros((10, 3, 4, 4), np.float32))
    out = tmp_path / "out"
    assert main(["examples/digits_mlp.pt2", "-o", str(out), "--data", bad, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "samples have shape (3, 4, 4), the model's input is (64,)" in err[0]
    assert not out.exists()


@pytest.mark.lava
def test_missing_labels_run_everything_but_accuracy(tmp_path, digits_image, capsys):
    x, _ = _samples(digits_image, 40)
    calib = _npz(tmp_path / "calib.npz", x=digits_image.train.x[:64])
    data = _npz(tmp_path / "nolabels.npz", x=x)
    out = tmp_path / "out"
    code = main(["examples/digits_mlp.pt2", "-o", str(out), "--data", data, "--calib-data", calib,
                 "--steps", "16", "--samples", "1", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "SNN accuracy: n/a" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["snn_accuracy"] is None and report["ann_accuracy"] is None
    assert report["bit_exact"]["mismatches"] == 0
    assert report["data"]["evaluation"] == {"source": f"{data}: all 40 samples", "samples": 40, "labels": False}
    assert report["data"]["calibration"]["samples"] == 64
    md = (out / "report.md").read_text()
    assert "no labels 'y': accuracy not available" in md and "calib.npz" in md
