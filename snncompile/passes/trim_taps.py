"""Zero the kernel taps of a convolution that only ever read padding (exact).

A 3×3 convolution with padding 1 on a 1×1 map multiplies its input by the centre tap alone: the
eight others only ever meet the zeros of the padding (MobileNetV2's last depthwise convolutions
on 32×32 inputs, a ResNet's last stage on small maps). They change no output, but quantization
sizes a layer's integer scale by its largest weight (passes/quantize.py), so an unused tap larger
than the used ones takes the layer's precision: torchvision's MobileNetV2 on 32×32 inputs had
features_15's depthwise weights at most 26 of the 254 the 8-bit mantissas hold, median 6, because
an unused tap held 254. Zeroing them is exact (the same products are summed in the same order,
plus zeros) and frees the scale. ``graph.metadata["trimmed_taps"]`` lists each trimmed conv's
used and total taps.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from snncompile.ir.graph import Graph
from snncompile.ir.ops import Conv2d, owned


def _used(kernel: int, size: int, out: int, stride: int, padding: int, dilation: int) -> np.ndarray:
    """Along one axis: for each kernel index, whether some output position reads a real input
    (index o·stride − padding + k·dilation within 0..size−1) through it."""
    pos = np.arange(out)[:, None] * stride - padding + np.arange(kernel)[None, :] * dilation
    return ((pos >= 0) & (pos < size)).any(axis=0)


def used_taps(op: Conv2d, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """(kH, kW) bool: the taps that multiply some input value rather than padding only."""
    kh, kw = op.weight.shape[2:]
    rows = _used(kh, in_hw[0], out_hw[0], op.stride[0], op.padding[0], op.dilation[0])
    cols = _used(kw, in_hw[1], out_hw[1], op.stride[1], op.padding[1], op.dilation[1])
    return rows[:, None] & cols[None, :]


def trim_taps(graph: Graph) -> Graph:
    """Every Conv2d with taps that only read padding gets those taps' weights set to 0."""
    builder = graph.edit()
    trimmed = {}
    for name in graph.find(Conv2d):
        op = graph.op(name)
        (src,) = graph.inputs(name)
        used = used_taps(op, graph.shape(src)[1:], graph.shape(name)[1:])
        if used.all() or not np.any(op.weight[:, :, ~used]):
            continue
        builder.replace(name, dataclasses.replace(op, weight=owned(np.where(used, op.weight, 0.0))))
        trimmed[name] = [int(used.sum()), int(used.size)]
    if not trimmed:
        return graph
    builder.metadata = {**builder.metadata, "trimmed_taps": {**graph.metadata.get("trimmed_taps", {}), **trimmed}}
    return builder.build()
