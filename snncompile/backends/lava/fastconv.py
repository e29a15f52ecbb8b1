"""Lava's Conv model, with its convolution computed in one vectorized call instead of one
``scipy.signal.convolve2d`` per (output, input) channel pair.

Lava 0.10's ``lava.proc.conv.utils.conv`` has two implementations: torch's ``conv2d`` (switched
off in Lava's source: "torch calls inside Lava PyProcess hangs") and ``conv_scipy``, which loops
over groups × out-channels-per-group × in-channels-per-group in Python. A 32×32 MobileNet-V2 at
width 0.25 (a 1×1 conv of 80 × 480 channel pairs) then spends most of a Lava run in that loop:
~6 s a time step, one process at 100 % of a core.

``conv_exact`` takes ``conv_scipy``'s arguments and returns its float64 array, element for
element: Lava's conv is a true convolution (``convolve2d`` flips the dilated kernel), so it
is the correlation with the kernel flipped in X and Y at the same dilation, taken over strided
windows of the zero-padded input. The products are of 0/1 spikes (or graded integers) and 8-bit
weights shifted by at most 7, their sums far below 2**53: float64 holds every partial sum exactly
in any order, so BLAS's order and scipy's give the same numbers (tests/backends/test_fastconv.py
checks it against ``conv_scipy`` itself on every stride, padding, dilation and grouping).

Everything else in Lava's Conv model (the one-step buffer, the bool input, the cast to the
weights' int32, the 24-bit wrap) stays Lava's own code; ``install`` only replaces the module
attribute ``conv_scipy`` that ``utils.conv`` calls, in this process, before Lava forks the
process models, which inherit it.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_ORIGINAL = {}


def conv_exact(input_: np.ndarray, weight: np.ndarray, kernel_size, stride, padding, dilation,
               groups: int) -> np.ndarray:
    """``lava.proc.conv.utils.conv_scipy(input_, weight, ...)``: input (X, Y, C), weight
    (K, kx, ky, C / groups), result (X', Y', K) float64."""
    from lava.proc.conv import utils

    C = input_.shape[2]
    K = weight.shape[0]
    shape = tuple(int(n) for n in utils.output_shape(input_.shape, K, kernel_size, stride, padding, dilation))
    kx, ky = int(kernel_size[0]), int(kernel_size[1])
    sx, sy = int(stride[0]), int(stride[1])
    px, py = int(padding[0]), int(padding[1])
    dx, dy = int(dilation[0]), int(dilation[1])
    ex, ey = dx * (kx - 1) + 1, dy * (ky - 1) + 1
    # conv_scipy allocates its output and dilated kernel first: a kernel size wrapped by Lava's
    # int8 Var fails there, and fails here with numpy's words (without allocating every step)
    if min(*shape, ex, ey) < 0:
        raise ValueError("negative dimensions are not allowed")
    g = int(groups)
    if C % g != 0 or K % g != 0:
        raise Exception(f"Expected channels divisible by groups; found {C=}, {K=} and {g=}.")
    padded = np.pad(np.asarray(input_, dtype=np.float64), ((px, px), (py, py), (0, 0)))
    windows = sliding_window_view(padded, (ex, ey), axis=(0, 1))[::sx, ::sy, :, ::dx, ::dy]
    ox, oy = windows.shape[:2]
    windows = windows.reshape(ox, oy, g, C // g, kx, ky)
    kernel = np.asarray(weight, dtype=np.float64)[:, ::-1, ::-1, :].reshape(g, K // g, kx, ky, C // g)
    out = np.einsum("xygcab,gkabc->xygk", windows, kernel, optimize=True)
    out = out.reshape(ox, oy, K)
    if out.shape != shape:  # conv_scipy's ``output[...] += temp`` would not broadcast
        raise ValueError(f"operands could not be broadcast together with shapes {shape} {out.shape}")
    return np.ascontiguousarray(out)


def install() -> None:
    """Make Lava's ``utils.conv`` use ``conv_exact`` in this process and those it forks."""
    from lava.proc.conv import utils

    if "conv_scipy" not in _ORIGINAL:
        _ORIGINAL["conv_scipy"] = utils.conv_scipy
    utils.conv_scipy = conv_exact


def original_conv_scipy():
    """Lava's own ``conv_scipy`` (for the tests that pin ``conv_exact`` to it)."""
    from lava.proc.conv import utils

    return _ORIGINAL.get("conv_scipy", utils.conv_scipy)
