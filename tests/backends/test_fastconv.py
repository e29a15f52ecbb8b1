"""fastconv.conv_exact against Lava's own conv_scipy: the same float64 array, element for
element, on every stride, padding, dilation and grouping the backend can emit, and through
Lava's own Conv process model."""

import itertools

import numpy as np
import pytest

from snncompile.backends.lava import compat

compat.install()

from snncompile.backends.lava import fastconv  # noqa: E402


CASES = [  # (X, Y, C, K, kx, ky, stride, padding, dilation, groups)
    (7, 5, 3, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (8, 8, 4, 6, 3, 3, (2, 2), (1, 1), (1, 1), 2),
    (9, 6, 6, 6, 3, 3, (1, 2), (0, 1), (1, 1), 6),  # depthwise, unequal strides and padding
    (10, 9, 4, 8, 3, 2, (1, 1), (2, 1), (2, 1), 1),  # dilation, non-square kernel
    (6, 6, 8, 16, 1, 1, (1, 1), (0, 0), (1, 1), 1),  # pointwise
    (11, 7, 6, 9, 5, 3, (3, 2), (2, 1), (1, 2), 3),
    (4, 4, 2, 2, 4, 4, (1, 1), (0, 0), (1, 1), 1),  # kernel = input
    (5, 5, 12, 24, 3, 3, (2, 2), (1, 1), (1, 1), 12),  # depthwise with a channel multiplier
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("graded", [False, True])
def test_conv_exact_equals_lavas_conv_scipy(case, graded):
    X, Y, C, K, kx, ky, stride, padding, dilation, groups = case
    rng = np.random.default_rng(hash(case) % 2**32)
    if graded:
        x = rng.integers(-(2**7), 2**7, size=(X, Y, C)).astype(np.int32)
    else:
        x = rng.random((X, Y, C)) < 0.4
    w = (rng.integers(-256, 256, size=(K, kx, ky, C // groups)) << rng.integers(0, 8)).astype(np.int32)
    args = (np.array([kx, ky], np.int8), np.array(stride, np.int8), np.array(padding, np.int8),
            np.array(dilation, np.int8), np.int8(groups))
    want = fastconv.original_conv_scipy()(x, w, *args)
    got = fastconv.conv_exact(x, w, *args)
    assert got.dtype == want.dtype == np.float64
    np.testing.assert_array_equal(got, want)


def test_install_replaces_what_lavas_conv_calls():
    from lava.proc.conv import utils

    fastconv.install()
    fastconv.install()  # twice: the original is kept
    assert utils.conv_scipy is fastconv.conv_exact
    assert fastconv.original_conv_scipy() is not fastconv.conv_exact
    x = np.random.default_rng(1).random((6, 6, 4)) < 0.5
    w = np.arange(2 * 3 * 3 * 4, dtype=np.int32).reshape(2, 3, 3, 4) - 30
    for stride, padding in itertools.product([(1, 1), (2, 1)], [(0, 0), (1, 1)]):
        args = ((3, 3), stride, padding, (1, 1), 1)
        np.testing.assert_array_equal(utils.conv(x, w, *args),
                                      fastconv.original_conv_scipy()(x, w, *args).astype(w.dtype))
