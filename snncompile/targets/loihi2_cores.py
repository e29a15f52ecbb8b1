"""What one Loihi 2 neuro-core holds, and what a box of a population costs on it.

The routing model (Loihi 1 as published, and as nengo-loihi programs it; Loihi 2 keeps the scheme):

- A population is one LoihiNeuron node of shape (C, H, W); a vector population of N neurons is
  taken as (N, 1, 1). A core holds *boxes*: channels c0:c1 × rows y0:y1 × columns x0:x1 of one
  population, with every synapse that ends on them.
- **Input axons** (a core's synapse-map entries, "fan-in"): one per source neuron for a dense
  synapse from a vector population; one per *source pixel* for a convolution, and for a dense
  synapse from an image population (a Linear reading pooled feature maps: the same population
  axons, the atom selecting that channel's weights, which stay stored per (pixel, channel,
  target); without them VGG's and AlexNet's first Linear at 224×224 would need 25,088 and 9,216
  input axons on one core, beyond the 4,096 assumed); for a convolution, whose spike carries the channel as an atom
  that selects the kernel slice (population axons: nengo-loihi's ``build_conv2d_connection``,
  ``Synapse(n_pixels)`` with ``pixel_idxs`` as axons and ``channel_idxs`` as atoms). Several
  synaptic ops from one source share the axons.
- **Output axons** (a core's axon-config entries, "fan-out"): one per (source neuron,
  destination core), never per target synapse or target pixel. For a convolution's population
  axons the neurons of one source pixel share their entries: nengo-loihi
  (``hardware/nxsdk_objects.py`` ``build_axons``) keys a compartment's axon list by
  (destination core, destination axon) and gives every compartment with the same key the same
  ``axonCfg`` pointer, with its channel as the atom. So a conv's consumer costs one output axon
  per (source pixel, destination core); a dense consumer one per (source neuron, destination core).
- **Synaptic memory**: stored weights × ``weight_bytes`` + input axons × ``axon_bytes``. A dense op
  stores every nonzero weight of the box's rows; a convolution stores the kernel of each output
  channel the box holds once (its nonzero entries), however many of the channel's pixels the core
  holds.

How a box is counted. Neurons and stored weights exactly. Input axons: for each source, the
bounding rectangle of the source pixels the box's receptive field reaches (a superset of the real
set; holes left by strides or zero kernel rows are not subtracted). Output axons: per
destination *box* (several boxes on one core share axons on the chip; counting per box can only
overcount). So a core's modelled usage, the sum of its boxes', is never below the real usage.
The lower bound on cores (``totals``) counts the unsplit populations exactly: every kernel once,
every reached source pixel or neuron once, one output axon per sending pixel or neuron.

Per-core figures, each published or assumed (overridable, ``dataclasses.replace(LOIHI2, ...)``),
live on ``targets.loihi2.Loihi2``; their sources are written there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from snncompile.ir.graph import Graph
from snncompile.ir.ops import FixedConv2d, FixedDense, Flatten
from snncompile.targets.loihi2 import LOIHI2, Loihi2

RESOURCES = ("neurons", "synapse_bytes", "fan_in", "fan_out")


@dataclass(frozen=True)
class Usage:
    """Resources of one box or one core (or, as ``capacity``, what a core offers)."""

    neurons: int = 0
    synapse_bytes: int = 0
    fan_in: int = 0
    fan_out: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.neurons + other.neurons, self.synapse_bytes + other.synapse_bytes,
                     self.fan_in + other.fan_in, self.fan_out + other.fan_out)

    def fits(self, capacity: Usage) -> bool:
        return (self.neurons <= capacity.neurons and self.synapse_bytes <= capacity.synapse_bytes
                and self.fan_in <= capacity.fan_in and self.fan_out <= capacity.fan_out)

    def exceeded(self, capacity: Usage) -> list[str]:
        """The resources above ``capacity``, as 'name a > b' (empty when it fits)."""
        return [f"{f.name} {getattr(self, f.name)} > {getattr(capacity, f.name)}" for f in fields(self)
                if getattr(self, f.name) > getattr(capacity, f.name)]

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def as_array(self) -> np.ndarray:
        return np.array([self.neurons, self.synapse_bytes, self.fan_in, self.fan_out], dtype=np.int64)

    @classmethod
    def from_array(cls, a) -> Usage:
        return cls(*(int(v) for v in a))


def capacity(target: Loihi2 = LOIHI2) -> Usage:
    """What one core of ``target`` offers."""
    return Usage(target.neurons_per_core, target.synapse_bytes_per_core, target.fan_in_per_core,
                 target.fan_out_per_core)


@dataclass(frozen=True)
class Box:
    """Channels c0:c1, rows y0:y1, columns x0:x1 of a population seen as (C, H, W)."""

    c0: int
    c1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def size(self) -> int:
        return (self.c1 - self.c0) * (self.y1 - self.y0) * (self.x1 - self.x0)

    def indices(self, grid: tuple[int, int, int]) -> np.ndarray:
        """The box's neurons as flat C-order indices of the population."""
        _, h, w = grid
        c, y, x = np.meshgrid(np.arange(self.c0, self.c1), np.arange(self.y0, self.y1),
                              np.arange(self.x0, self.x1), indexing="ij")
        return ((c * h + y) * w + x).reshape(-1)


def grid(shape) -> tuple[int, int, int]:
    """A population's shape as (C, H, W): vectors (and any other rank) as (N, 1, 1)."""
    shape = tuple(int(s) for s in shape)
    return shape if len(shape) == 3 else (int(np.prod(shape)), 1, 1)


# -- connectivity ---------------------------------------------------------------------------------


def spike_source(graph: Graph, synapse: str) -> str:
    """The population a synaptic op reads (through Flattens, which are views of the spikes)."""
    (node,) = graph.inputs(synapse)
    while isinstance(graph.op(node), Flatten):
        (node,) = graph.inputs(node)
    return node


def incoming(graph: Graph, population: str) -> list[str]:
    """The synaptic ops that end on ``population``."""
    return [s for s in graph.inputs(population) if isinstance(graph.op(s), (FixedDense, FixedConv2d))]


def _valid_taps(out_len: int, in_len: int, stride: int, pad: int, dil: int, k: int) -> np.ndarray:
    """For each kernel tap, how many outputs read an input inside 0..in_len-1 through it."""
    pos = np.arange(out_len)[:, None] * stride - pad + np.arange(k)[None, :] * dil
    return ((pos >= 0) & (pos < in_len)).sum(axis=0)


def connections(graph: Graph, synapse: str) -> int:
    """The synapses of one op: (source, target) neuron pairs joined by a nonzero weight.
    For a conv, each nonzero tap (kh, kw) joins as many pairs as outputs that read inside the
    input through it, a product of a row count and a column count: O(parameters)."""
    op = graph.op(synapse)
    if isinstance(op, FixedDense):
        return int(np.count_nonzero(op.weight))
    _, hi, wi = graph.shape(spike_source(graph, synapse))
    _, ho, wo = graph.shape(synapse)
    kh, kw = op.weight.shape[2:]
    rows = _valid_taps(ho, hi, op.stride[0], op.padding[0], op.dilation[0], kh)
    cols = _valid_taps(wo, wi, op.stride[1], op.padding[1], op.dilation[1], kw)
    per_tap = np.count_nonzero(op.weight, axis=(0, 1))
    return int((per_tap * np.outer(rows, cols)).sum())


def coverage(graph: Graph, synapse: str, start: int, stop: int) -> np.ndarray:
    """Which source neurons (flat, C-order) have a nonzero weight onto target neurons start:stop
    (exact; for tests and reports, not used by placement)."""
    op = graph.op(synapse)
    src_shape = graph.shape(spike_source(graph, synapse))
    if isinstance(op, FixedDense):
        return np.asarray(op.weight[start:stop] != 0).any(axis=0)
    c_out, h_out, w_out = graph.shape(synapse)
    mask = torch.zeros(c_out * h_out * w_out, dtype=torch.float64)
    mask[start:stop] = 1.0
    nonzero = torch.from_numpy(np.asarray(op.weight != 0, dtype=np.float64))
    # the gradient of conv2d with respect to its input is the transposed convolution: it is
    # nonzero exactly where an input reaches a masked output through a nonzero weight
    reach = torch.nn.grad.conv2d_input((1,) + tuple(src_shape), nonzero, mask.reshape(1, c_out, h_out, w_out),
                                       op.stride, op.padding, op.dilation, op.groups)
    return (reach[0] > 0).numpy().reshape(-1)


# -- one synaptic op -----------------------------------------------------------------------------


class ConvEdge:
    """A FixedConv2d seen from the boxes of its target population."""

    def __init__(self, graph: Graph, name: str):
        op = graph.op(name)
        self.name, self.op = name, op
        self.source = spike_source(graph, name)
        self.src_grid = grid(graph.shape(self.source))
        self.dst_grid = grid(graph.shape(name))
        nonzero = np.asarray(op.weight) != 0
        c_out, self.cin_g = nonzero.shape[:2]
        self.cout_g = c_out // op.groups
        per_channel = nonzero.reshape(c_out, -1).sum(axis=1)
        self.kernel_prefix = np.concatenate([[0], np.cumsum(per_channel)]).astype(np.int64)
        self.live_prefix = np.concatenate([[0], np.cumsum(per_channel > 0)]).astype(np.int64)
        self.taps = np.argwhere(nonzero.any(axis=(0, 1)))  # (kh, kw) with a nonzero anywhere
        self.empty = len(self.taps) == 0
        if not self.empty:
            (self.kh0, self.kw0), (self.kh1, self.kw1) = self.taps.min(axis=0), self.taps.max(axis=0)
            (sh, sw), (ph, pw), (dh, dw) = op.stride, op.padding, op.dilation
            _, hi, wi = self.src_grid
            self._offsets = (sh, sw, hi, wi, int(-ph + self.kh0 * dh), int(-sh - ph + self.kh1 * dh + 1),
                             int(-pw + self.kw0 * dw), int(-sw - pw + self.kw1 * dw + 1))

    def reach(self, b: dict[str, np.ndarray]):
        """For target boxes (arrays c0..x1), the source rectangle each reaches: (live, ci0, ci1,
        r0, r1, q0, q1), a bounding box of the real set. ``live`` is false where no weight lands."""
        n = len(b["c0"])
        if self.empty:
            z = np.zeros(n, np.int64)
            return np.zeros(n, bool), z, z, z, z, z, z
        live, r0, r1, q0, q1 = self.rectangles(b)
        if self.op.groups == 1:  # every box reads all source channels (0 <= c0 < c1 <= C_out)
            ci0, ci1 = np.zeros(n, np.int64), np.full(n, self.cin_g, np.int64)
        else:
            ci0 = b["c0"] // self.cout_g * self.cin_g
            ci1 = ((b["c1"] - 1) // self.cout_g + 1) * self.cin_g
        return live, ci0, ci1, r0, r1, q0, q1

    def rectangles(self, b: dict[str, np.ndarray]):
        """``reach`` without the source channels: (live, r0, r1, q0, q1); not for an empty edge."""
        sh, sw, hi, wi, oy0, oy1, ox0, ox1 = self._offsets
        # (y1 - 1)·sh − ph + kh1·dh + 1 = y1·sh + oy1, and so on: the same integers, fewer steps
        r0 = np.minimum(np.maximum(b["y0"] * sh + oy0, 0), hi)
        r1 = np.minimum(np.maximum(b["y1"] * sh + oy1, 0), hi)
        q0 = np.minimum(np.maximum(b["x0"] * sw + ox0, 0), wi)
        q1 = np.minimum(np.maximum(b["x1"] * sw + ox1, 0), wi)
        live = (r1 > r0) & (q1 > q0) & (self.live_prefix[b["c1"]] > self.live_prefix[b["c0"]])
        return live, r0, r1, q0, q1

    def kernels(self, b: dict[str, np.ndarray]) -> np.ndarray:
        """Stored kernel entries of each box: its channels' kernels, once each."""
        return self.kernel_prefix[b["c1"]] - self.kernel_prefix[b["c0"]]

    def reached_pixels(self) -> np.ndarray:
        """(H_in, W_in) bool: the source pixels some output reads through a nonzero tap (exact)."""
        (sh, sw), (ph, pw), (dh, dw) = self.op.stride, self.op.padding, self.op.dilation
        _, hi, wi = self.src_grid
        _, ho, wo = self.dst_grid
        mask = np.zeros((hi, wi), dtype=bool)
        for kh, kw in self.taps:
            rows = np.arange(ho) * sh - ph + kh * dh
            cols = np.arange(wo) * sw - pw + kw * dw
            mask[np.ix_(rows[(rows >= 0) & (rows < hi)], cols[(cols >= 0) & (cols < wi)])] = True
        return mask


class DenseEdge:
    """A FixedDense seen from the (vector) target population."""

    def __init__(self, graph: Graph, name: str):
        self.name = name
        self.source = spike_source(graph, name)
        self.src_grid = grid(graph.shape(self.source))
        self.nonzero = np.asarray(graph.op(name).weight) != 0
        self.row_prefix = np.concatenate([[0], np.cumsum(self.nonzero.sum(axis=1))]).astype(np.int64)

    def reached(self, start: int, stop: int) -> np.ndarray:
        return self.nonzero[start:stop].any(axis=0)


def dense_axons(src_grid: tuple[int, int, int], mask: np.ndarray) -> int:
    """Input axons of a dense synapse reading the source neurons in ``mask``: one per neuron of a
    vector population, one per pixel of an image population (population axons, see above)."""
    c, h, w = src_grid
    if h * w == 1:
        return int(np.count_nonzero(mask))
    return int(np.count_nonzero(np.asarray(mask).reshape(c, h, w).any(axis=0)))


def edges(graph: Graph, population: str) -> list[ConvEdge | DenseEdge]:
    return [ConvEdge(graph, s) if isinstance(graph.op(s), FixedConv2d) else DenseEdge(graph, s)
            for s in incoming(graph, population)]


# -- output axons of a source population ----------------------------------------------------------


def _sat2(counts: np.ndarray) -> np.ndarray:
    sat = np.zeros((counts.shape[0] + 1, counts.shape[1] + 1), dtype=np.int64)
    sat[1:, 1:] = counts.cumsum(0).cumsum(1)
    return sat


class FanOut:
    """Output axons of a source population's boxes, once every consumer is cut into boxes.

    Conv consumers: per distinct source channel interval reached, a count per source pixel of the
    destination boxes whose receptive rectangle holds it (a 2-D difference array, then a summed-
    area table). Dense consumers: per source neuron, the destination boxes it has a nonzero
    weight onto (a 3-D summed-area table). A box's output axons are then O(1) to query.
    """

    def __init__(self, grid3: tuple[int, int, int]):
        self.grid = grid3
        self._diff: dict[tuple[int, int], np.ndarray] = {}
        self._dense = np.zeros(grid3, dtype=np.int64)
        self._has_dense = False
        self._sat: dict | None = None

    def add_conv(self, live, ci0, ci1, r0, r1, q0, q1) -> None:
        _, h, w = self.grid
        for key in set(zip(ci0[live].tolist(), ci1[live].tolist())):
            sel = live & (ci0 == key[0]) & (ci1 == key[1])
            d = self._diff.setdefault(key, np.zeros((h + 1, w + 1), dtype=np.int64))
            np.add.at(d, (r0[sel], q0[sel]), 1)
            np.add.at(d, (r1[sel], q0[sel]), -1)
            np.add.at(d, (r0[sel], q1[sel]), -1)
            np.add.at(d, (r1[sel], q1[sel]), 1)

    def add_dense(self, reached: np.ndarray) -> None:
        self._dense += reached.reshape(self.grid)
        self._has_dense = True

    def finish(self) -> None:
        self._sat = {key: _sat2(d.cumsum(0).cumsum(1)[:-1, :-1]) for key, d in self._diff.items()}
        if self._has_dense:
            c, h, w = self.grid
            sat = np.zeros((c + 1, h + 1, w + 1), dtype=np.int64)
            sat[1:, 1:, 1:] = self._dense.cumsum(0).cumsum(1).cumsum(2)
            self._sat3 = sat
        del self._dense, self._diff

    def query(self, b: dict[str, np.ndarray]) -> np.ndarray:
        total = np.zeros(len(b["c0"]), dtype=np.int64)
        y0, y1, x0, x1 = b["y0"], b["y1"], b["x0"], b["x1"]
        for (ci0, ci1), sat in self._sat.items():
            overlap = (b["c0"] < ci1) & (b["c1"] > ci0)
            total += overlap * (sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0])
        if self._has_dense:
            s, c0, c1 = self._sat3, b["c0"], b["c1"]
            total += (s[c1, y1, x1] - s[c0, y1, x1] - s[c1, y0, x1] - s[c1, y1, x0]
                      + s[c0, y0, x1] + s[c0, y1, x0] + s[c1, y0, x0] - s[c0, y0, x0])
        return total


# -- boxes of one population ---------------------------------------------------------------------


def box_usage(b: dict[str, np.ndarray], conv: list[ConvEdge], fan_out: FanOut, target: Loihi2) -> np.ndarray:
    """(n, 4) usage of boxes of a population whose synapses are all convolutions (or none)."""
    return with_fan_out(box_inputs(b, conv, target), fan_out.query(b))


def with_fan_out(inputs: np.ndarray, output_axons: np.ndarray) -> np.ndarray:
    """``box_inputs``' (n, 3) columns and the boxes' output axons (``FanOut.query``): the (n, 4) usage."""
    usage = np.empty((len(inputs), 4), dtype=np.int64)
    usage[:, :3] = inputs
    usage[:, 3] = output_axons
    return usage


def box_inputs(b: dict[str, np.ndarray], conv: list[ConvEdge], target: Loihi2) -> np.ndarray:
    """(n, 3) neurons, synapse bytes and input axons of boxes of a population whose synapses are
    all convolutions (or none): the part of their usage that does not depend on where their
    spikes go (the partition pass reuses it for every placement it tries)."""
    n = len(b["c0"])
    neurons = (b["c1"] - b["c0"]) * (b["y1"] - b["y0"]) * (b["x1"] - b["x0"])
    kernels = np.zeros(n, dtype=np.int64)
    per_source: dict[str, list] = {}
    for e in conv:
        kernels += e.kernels(b)
        if e.empty:
            live, _, _, r0, r1, q0, q1 = e.reach(b)
        else:
            live, r0, r1, q0, q1 = e.rectangles(b)
        if e.source in per_source:  # one axon per source pixel: the bounding union of the rectangles
            l2, a0, a1, p0, p1 = per_source[e.source]
            r0, r1 = np.where(l2, np.where(live, np.minimum(r0, a0), a0), r0), \
                np.where(l2, np.where(live, np.maximum(r1, a1), a1), r1)
            q0, q1 = np.where(l2, np.where(live, np.minimum(q0, p0), p0), q0), \
                np.where(l2, np.where(live, np.maximum(q1, p1), p1), q1)
            live = live | l2
        per_source[e.source] = [live, r0, r1, q0, q1]
    fan_in = np.zeros(n, dtype=np.int64)
    for live, r0, r1, q0, q1 in per_source.values():
        fan_in += live * (r1 - r0) * (q1 - q0)
    synapse_bytes = kernels * target.weight_bytes + fan_in * target.axon_bytes
    return np.stack([neurons, synapse_bytes, fan_in], axis=1)


def unsplit_usage(edges_in: list, size: int, target: Loihi2, senders: int) -> Usage:
    """What the whole population needs if it sat on one core: the lower bound's terms (exact)."""
    stored, conv_pixels, dense_reach, grids = 0, {}, {}, {}
    for e in edges_in:
        if isinstance(e, ConvEdge):
            stored += int(e.kernel_prefix[-1])
            mask = e.reached_pixels()
            conv_pixels[e.source] = mask | conv_pixels[e.source] if e.source in conv_pixels else mask
        else:
            stored += int(e.row_prefix[-1])
            reached = e.reached(0, e.nonzero.shape[0])
            dense_reach[e.source] = reached | dense_reach[e.source] if e.source in dense_reach else reached
            grids[e.source] = e.src_grid
    fan_in = sum(int(m.sum()) for m in conv_pixels.values()) + sum(
        dense_axons(grids[s], m) for s, m in dense_reach.items())
    return Usage(size, stored * target.weight_bytes + fan_in * target.axon_bytes, fan_in, senders)
