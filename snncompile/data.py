"""Data sets for calibration and evaluation: scikit-learn's digits (bundled) or a user's .npz file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snncompile.errors import DataError

DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (float32, shape (N, *sample_shape)) and labels ``y`` (int64, or None)."""

    x: np.ndarray
    y: np.ndarray | None

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int | None) -> Split:
        if n is None:
            return self
        return Split(self.x[:n], None if self.y is None else self.y[:n])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split


def digits(image: bool = True) -> Dataset:
    """scikit-learn's 8x8 digits: pixels 0..16 scaled to [0, 1], a fixed stratified 80/20 split.

    ``image=True`` gives samples of shape (1, 8, 8), otherwise (64,).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)
    x = x[:, None, :, :] if image else x.reshape(len(x), -1)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SEED, stratify=y
    )
    return Dataset("digits", Split(x_tr, y_tr), Split(x_te, y_te))


def load_npz(path: str | Path) -> Dataset:
    """A .npz with ``x`` (and optionally ``y``); optional ``x_train``/``y_train`` for calibration.

    Without a separate training split, the same samples serve for calibration and evaluation.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found; pass --data digits or an existing .npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # numpy raises several types for corrupt files
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if "x" not in arrays:
        raise DataError(f"{path}: no array named 'x'; save with np.savez(path, x=inputs, y=labels)")
    test = _split(path, arrays, "x", "y")
    train = _split(path, arrays, "x_train", "y_train") if "x_train" in arrays else test
    return Dataset(path.name, train, test)


def _split(path: Path, arrays: dict, xk: str, yk: str) -> Split:
    x = arrays[xk]
    if not np.issubdtype(x.dtype, np.number) or x.ndim < 2 or not np.all(np.isfinite(x)):
        raise DataError(f"{path}: '{xk}' must be a finite numeric array of shape (N, ...)")
    y = arrays.get(yk)
    if y is not None and (y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer)):
        raise DataError(f"{path}: '{yk}' must be integer labels of shape ({len(x)},)")
    return Split(x.astype(np.float32), None if y is None else y.astype(np.int64))


def load(spec: str, sample_shape: tuple[int, ...]) -> Dataset:
    """``digits`` or a path to a .npz; the samples are checked against the model's input shape."""
    if spec == "digits":
        ds = digits(image=len(sample_shape) == 3)
    else:
        ds = load_npz(spec)
    for split in (ds.train, ds.test):
        if tuple(split.x.shape[1:]) != tuple(sample_shape):
            if int(np.prod(split.x.shape[1:])) == int(np.prod(sample_shape)):
                object.__setattr__(split, "x", split.x.reshape((len(split.x),) + tuple(sample_shape)))
            else:
                raise DataError(
                    f"{spec}: samples have shape {tuple(split.x.shape[1:])}, "
                    f"the model's input is {tuple(sample_shape)}"
                )
    return ds
