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
    """``train`` is what calibration learns from, ``test`` what accuracy is measured on; the two
    never share a sample. ``calibration`` and ``evaluation`` say where each came from."""

    name: str
    train: Split
    test: Split
    calibration: str = ""
    evaluation: str = ""

    def describe(self, calib_samples: int | None = None) -> dict:
        """report.json's ``data``: the source and sample count of each part."""
        used = len(self.train) if calib_samples is None else min(calib_samples, len(self.train))
        return {
            "calibration": {"source": self.calibration or f"{self.name}: train", "samples": used},
            "evaluation": {"source": self.evaluation or f"{self.name}: test", "samples": len(self.test),
                           "labels": self.test.y is not None},
        }


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
    return Dataset("digits", Split(x_tr, y_tr), Split(x_te, y_te),
                   calibration=f"digits: train split ({len(x_tr)} samples; stratified 80 %, seed {DIGITS_SEED})",
                   evaluation=f"digits: test split ({len(x_te)} samples; 20 %)")


SPLIT_SEED = 0  # the permutation that splits a single .npz into calibration and evaluation


MAX_DATA_BYTES = 1 << 30  # all arrays of one .npz, as their headers declare them


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz file, never unpickling (object arrays are refused), after checking
    the sizes their headers declare against ``MAX_DATA_BYTES`` (a small file can inflate to
    gigabytes: the headers are read first, no array is)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found; pass 'digits' or an existing .npz file")
    declared = declared_npz_bytes(path)
    if declared > MAX_DATA_BYTES:
        raise DataError(f"{path}: its arrays declare {declared / 2**30:.1f} GiB, more than the "
                        f"{MAX_DATA_BYTES >> 30} GiB snncompile reads from a data file; pass fewer samples")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as exc:  # numpy raises several types for corrupt or pickled content
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc}); save one with "
                        "np.savez(path, x=inputs, y=labels)") from None


def npz_shape(path: str | Path, key: str) -> tuple[int, ...] | None:
    """The shape the header of array ``key`` in the .npz at ``path`` declares (its data is not
    read), or None when there is no such readable array."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return tuple(int(d) for d in read(member)[0])
    except Exception:  # not a zip, no such member, a damaged header: the data loader says which
        return None


def declared_npz_bytes(path: Path) -> int:
    """The bytes the .npy headers of the .npz at ``path`` declare; 0 when it is not a zip (np.load
    then says what it is)."""
    import zipfile

    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _order, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _order, dtype = np.lib.format.read_array_header_2_0(member)
                total += int(np.prod(shape, dtype=object)) * dtype.itemsize
    except zipfile.BadZipFile:
        return 0
    except Exception as exc:  # a damaged header: numpy and zipfile raise several types
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc}); save one with "
                        "np.savez(path, x=inputs, y=labels)") from None
    return total


def load_npz(path: str | Path) -> Dataset:
    """A .npz with ``x`` (N, C, H, W or N, F; floating point) and optionally ``y`` (N; integers).

    Calibration data never overlaps the evaluation data: with ``x_train`` (and ``y_train``) in
    the file, those are the calibration samples; otherwise the samples are split by a fixed
    permutation (seed 0): the first ``max(1, N // 5)`` of it are for calibration, the rest, in
    file order, for evaluation (see ``holdout``).
    """
    path = Path(path)
    arrays = read_npz(path)
    if "x" not in arrays:
        raise DataError(f"{path}: no array named 'x' (found: {', '.join(sorted(arrays)) or 'none'}); "
                        "save with np.savez(path, x=inputs, y=labels)")
    test = _split(path, arrays, "x", "y")
    if "x_train" in arrays:
        train = _split(path, arrays, "x_train", "y_train")
        return Dataset(path.name, train, test, calibration=f"{path}: x_train ({len(train)} samples)",
                       evaluation=f"{path}: x ({len(test)} samples)")
    return holdout(path, test)


def holdout(path: Path, whole: Split) -> Dataset:
    """One file's samples split into calibration (a seeded fifth) and evaluation (the rest)."""
    n = len(whole)
    if n < 2:
        raise DataError(f"{path}: {n} sample(s) cannot be split into calibration and evaluation data; "
                        "give at least 2, or a separate --calib-data file")
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    k = max(1, n // 5)
    calib_idx, eval_idx = np.sort(order[:k]), np.sort(order[k:])
    pick = lambda split, idx: Split(split.x[idx], None if split.y is None else split.y[idx])  # noqa: E731
    return Dataset(
        path.name, pick(whole, calib_idx), pick(whole, eval_idx),
        calibration=f"{path}: {k} of {n} samples (a seed-{SPLIT_SEED} permutation's first fifth)",
        evaluation=f"{path}: the other {n - k} samples",
    )


def _split(path: Path, arrays: dict, xk: str, yk: str) -> Split:
    x = arrays[xk]
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path}: '{xk}' has dtype {x.dtype}; inputs must be floating point "
                        f"(e.g. x.astype(np.float32))")
    if x.ndim < 2 or len(x) == 0:
        raise DataError(f"{path}: '{xk}' has shape {x.shape}; it must be (N, C, H, W) or (N, F) with N >= 1")
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{path}: '{xk}' holds {int(bad.sum())} NaN/Inf value(s), the first at index {first}")
    limit = float(np.finfo(np.float32).max)
    if x.dtype.itemsize > 4 and np.abs(x).max() > limit:  # would become Inf as float32
        first = tuple(int(i) for i in np.argwhere(np.abs(x) > limit)[0])
        raise DataError(f"{path}: '{xk}' holds values beyond float32's range (±{limit:.3g}), the first at "
                        f"index {first}")
    y = arrays.get(yk)
    if y is not None:
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: '{yk}' has dtype {y.dtype}; labels must be integers")
        if y.size and y.dtype.kind == "u" and int(y.max()) > np.iinfo(np.int64).max:
            raise DataError(f"{path}: '{yk}' holds label {int(y.max())}, beyond any class index")
        if y.shape != (len(x),):
            raise DataError(f"{path}: '{yk}' has shape {y.shape}; labels must have shape ({len(x)},), one per sample")
    return Split(x.astype(np.float32), None if y is None else y.astype(np.int64))


def _fit(split: Split, spec: str, sample_shape: tuple[int, ...]) -> Split:
    """The split's samples in the model's input shape (a flat (N, F) fits (C, H, W) of the same
    size), else the refusal, before any work starts."""
    if tuple(split.x.shape[1:]) == tuple(sample_shape):
        return split
    if int(np.prod(split.x.shape[1:])) == int(np.prod(sample_shape)):
        return Split(split.x.reshape((len(split.x),) + tuple(sample_shape)), split.y)
    raise DataError(f"{spec}: samples have shape {tuple(split.x.shape[1:])}, the model's input is "
                    f"{tuple(sample_shape)}; give data of the model's input shape")


def _check_labels(split: Split, spec: str, classes: int | None) -> None:
    if split.y is None or classes is None or len(split.y) == 0:
        return
    low, high = int(split.y.min()), int(split.y.max())
    if low < 0 or high >= classes:
        raise DataError(f"{spec}: labels range over {low}..{high}, the model has {classes} outputs "
                        f"(labels must lie in 0..{classes - 1})")


def _with_calibration(spec: str, calib_spec: str, image: bool) -> Dataset:
    """All of ``spec`` (digits: its test split) evaluates, ``calib_spec``'s x calibrates; each
    file is read once."""
    named = digits(image=image) if "digits" in (spec, calib_spec) else None
    if spec == "digits":
        test, evaluation, name = named.test, named.evaluation, named.name
    else:
        arrays = read_npz(spec)
        test, name = _split(Path(spec), arrays, "x", "y"), Path(spec).name
        evaluation = (f"{Path(spec)}: x ({len(test)} samples)" if "x_train" in arrays
                      else f"{spec}: all {len(test)} samples")
    if calib_spec == "digits":
        train, calibration = named.train, "digits: train split"
    else:
        train = _split(Path(calib_spec), read_npz(calib_spec), "x", "y")
        calibration = f"{calib_spec}: x ({len(train)} samples)"
    return Dataset(name, train, test, calibration=calibration, evaluation=evaluation)


def load(spec: str, sample_shape: tuple[int, ...], calib_spec: str | None = None,
         classes: int | None = None) -> Dataset:
    """The evaluation data ``spec`` and the calibration data (``calib_spec``, else the part of
    ``spec`` kept for it), checked against the model's input shape and output count.

    ``digits``: the evaluation set is its test split, the calibration set its train split.
    A .npz: see ``load_npz``. ``calib_spec`` (``digits`` or a .npz, whose ``x`` is used whole)
    replaces the calibration part and leaves every sample of ``spec`` for evaluation.
    """
    image = len(sample_shape) == 3
    if calib_spec is None:
        ds = digits(image=image) if spec == "digits" else load_npz(spec)
    else:
        ds = _with_calibration(spec, calib_spec, image)
    train = _fit(ds.train, calib_spec or spec, sample_shape)
    test = _fit(ds.test, spec, sample_shape)
    _check_labels(test, spec, classes)
    _check_labels(train, calib_spec or spec, classes)
    return Dataset(ds.name, train, test, calibration=ds.calibration, evaluation=ds.evaluation)
