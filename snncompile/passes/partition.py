"""Place a fixed-point graph's neurons on Loihi 2 cores and chips, within every per-core limit.

What a core holds and how a box of neurons is counted is the resource model of
``targets/loihi2_cores.py``; this module decides the boxes and the cores.

Algorithm, linear in neurons + parameters (up to a log factor):

1. Populations are cut in reverse topological order, so that each population's consumers are
   cut before its output axons are counted.
   - A population that synapses read as an image (C, H, W) is cut into *boxes*: channel groups of
     g channels × bands of th rows (× runs of tw columns when one row of the group is too much).
     Keeping whole rows and whole channel groups together keeps a box's receptive field, and so
     its input axons and its consumers' output axons, small: spatial neighbourhoods stay on one
     core. For a few group sizes g (C, C/2, C/3, ..., and the largest g whose whole image
     fits) the largest band height that fits is found by bisection; the cut chosen is the one
     with the fewest cores by estimate (max of the boxes over half a core, and the rounded-up sum
     of their largest resource fraction), then the least total resource (duplicated kernels and
     halo axons), then the fewest boxes.
   - A vector population (dense synapses) is cut into contiguous ranges, each grown row by row
     as far as every limit allows.
   Every box must fit ``fraction`` of a core (falling back to a whole core when a neuron needs
   more); small boxes let first-fit packing mix neuron-heavy and memory-heavy layers on one core.
2. Boxes are packed first-fit, in topological order, onto the cores opened so far (all of them,
   as arrays), opening a core when none has room. Usages on a core are added, so shared axons
   and kernels are counted once per box: never below the real use.
3. Steps 1-2 run for each ``fractions`` entry (and step 2 for each of ``orders``: topological,
   or first-fit decreasing by largest resource fraction); the fewest cores wins.

Core ``i`` sits on chip ``i // cores_per_chip``. When a single neuron exceeds a core, or the cores
exceed ``chips`` chips, ``ResourceError`` says which layers and by how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np

from snncompile.errors import ResourceError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import LoihiNeuron
from snncompile.targets.loihi2 import LOIHI2, Loihi2
from snncompile.targets.loihi2_cores import (  # noqa: F401  (re-exported: report.py, tests)
    Box, ConvEdge, DenseEdge, FanOut, Usage, box_inputs, box_usage, capacity, connections, coverage, dense_axons,
    edges, grid, incoming, spike_source, unsplit_usage, with_fan_out)


@dataclass(frozen=True)
class Slice:
    """Box ``box`` of population ``layer`` (seen as (C, H, W), a vector as (N, 1, 1)), on core
    ``core`` of chip ``chip``. ``channels`` is the box's channel range for (C, H, W) populations."""

    layer: str
    box: Box
    core: int
    chip: int
    usage: Usage
    grid: tuple[int, int, int]
    image: bool = True  # the population is (C, H, W), not a vector

    @property
    def channels(self) -> tuple[int, int] | None:
        return (self.box.c0, self.box.c1) if self.image else None

    @property
    def start(self) -> int:
        """First neuron (flat C-order index)."""
        _, h, w = self.grid
        return (self.box.c0 * h + self.box.y0) * w + self.box.x0

    @property
    def stop(self) -> int:
        """One past the last neuron (flat C-order); stop - start == neurons only for contiguous boxes."""
        _, h, w = self.grid
        return ((self.box.c1 - 1) * h + self.box.y1 - 1) * w + self.box.x1

    @property
    def neurons(self) -> int:
        return self.box.size

    def indices(self) -> np.ndarray:
        return self.box.indices(self.grid)

    def as_dict(self) -> dict:
        b = self.box
        return {"layer": self.layer, "core": self.core, "chip": self.chip,
                "channels": None if self.channels is None else list(self.channels),
                "rows": [b.y0, b.y1], "cols": [b.x0, b.x1], "span": [self.start, self.stop]} | self.usage.as_dict()


@dataclass(frozen=True)
class Placement:
    """Where every neuron went: the slices (in placement order), each core's modelled usage, and
    the totals of the unsplit populations (what the lower bound on the cores is computed from)."""

    slices: tuple[Slice, ...]
    cores: tuple[Usage, ...]
    capacity: Usage
    chips: int
    cores_per_chip: int
    layer_totals: dict[str, Usage] = field(default_factory=dict)

    @property
    def cores_used(self) -> int:
        return len(self.cores)

    @property
    def chips_used(self) -> int:
        return math.ceil(self.cores_used / self.cores_per_chip)

    @property
    def totals(self) -> Usage:
        total = Usage()
        for usage in self.layer_totals.values():
            total = total + usage
        return total

    def lower_bound_terms(self) -> dict[str, int]:
        """Cores needed by each resource alone, if cores could be filled to the brim."""
        total = self.totals
        return {f.name: math.ceil(getattr(total, f.name) / max(1, getattr(self.capacity, f.name)))
                for f in fields(Usage)}

    @property
    def lower_bound(self) -> int:
        """max over resources of ceil(total need / per-core capacity), at least 1. The needs are
        those of the unsplit populations: neurons; synaptic memory with every kernel stored once
        and one input axon per reached source neuron (dense) or pixel (conv); those input axons;
        one output axon per sending neuron (dense consumers) or pixel (conv consumers). Any
        placement needs at least that much of each."""
        return max(1, *self.lower_bound_terms().values())

    @property
    def ratio(self) -> float:
        """Cores used over the lower bound (1.0 is optimal)."""
        return self.cores_used / self.lower_bound

    def by_layer(self) -> dict[str, list[Slice]]:
        layers: dict[str, list[Slice]] = {name: [] for name in self.layer_totals}
        for s in self.slices:
            layers.setdefault(s.layer, []).append(s)
        return layers

    def core_range(self, layer: str) -> str:
        """The cores of ``layer`` as '0-3,7' ('' when it has none)."""
        return _ranges(sorted({s.core for s in self.slices if s.layer == layer}))

    def utilization(self) -> dict[str, dict[str, float]]:
        """min / mean / max over used cores of each resource, as a fraction of the core's limit."""
        out = {}
        for f in fields(Usage):
            cap = max(1, getattr(self.capacity, f.name))
            values = [getattr(c, f.name) / cap for c in self.cores] or [0.0]
            out[f.name] = {"min": min(values), "mean": float(np.mean(values)), "max": max(values)}
        return out

    def as_dict(self) -> dict:
        return {
            "cores_used": self.cores_used,
            "chips_used": self.chips_used,
            "chips": self.chips,
            "cores_available": self.chips * self.cores_per_chip,
            "core_limits": self.capacity.as_dict(),
            "totals": self.totals.as_dict(),
            "lower_bound": self.lower_bound,
            "lower_bound_terms": self.lower_bound_terms(),
            "cores_over_lower_bound": self.ratio,
            "utilization": self.utilization(),
            "cores": [{"core": i, "chip": i // self.cores_per_chip} | c.as_dict() for i, c in enumerate(self.cores)],
            "layers": [{"name": name, "cores": len({s.core for s in slices}), "core_range": self.core_range(name),
                        "slices": [s.as_dict() for s in slices]} for name, slices in self.by_layer().items()],
        }


def _ranges(values: list[int]) -> str:
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(parts)


# -- cutting one population ----------------------------------------------------------------------


class _TooLarge(Exception):
    pass


def _boxes(c: int, h: int, w: int, g: int, th: int, tw: int) -> dict[str, np.ndarray]:
    """Channel groups of g × bands of th rows × runs of tw columns, channel-major, remainders last."""
    cs, ys, xs = np.arange(0, c, g), np.arange(0, h, th), np.arange(0, w, tw)
    # meshgrid(cs, ys, xs, indexing="ij") flattened, without its overhead (called thousands of times)
    c0 = np.repeat(cs, len(ys) * len(xs))
    y0 = np.tile(np.repeat(ys, len(xs)), len(cs))
    x0 = np.tile(xs, len(cs) * len(ys))
    return {"c0": c0, "c1": np.minimum(c0 + g, c), "y0": y0, "y1": np.minimum(y0 + th, h),
            "x0": x0, "x1": np.minimum(x0 + tw, w)}


def _bisect(lo: int, hi: int, fits) -> int:
    """The largest v in [lo, hi] with fits(v) (monotone), or lo - 1 when none."""
    if not fits(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


class _Population:
    def __init__(self, graph: Graph, name: str, target: Loihi2):
        self.name = name
        self.grid = grid(graph.shape(name))
        self.image = len(graph.shape(name)) == 3
        self.size = int(np.prod(self.grid))
        self.edges = edges(graph, name)
        self.conv = [e for e in self.edges if isinstance(e, ConvEdge)]
        self.dense = [e for e in self.edges if isinstance(e, DenseEdge)]
        self.target = target
        # (g, th, tw) -> boxes and their box_inputs: the same for every placement tried
        self._inputs: dict[tuple[int, int, int], tuple[dict[str, np.ndarray], np.ndarray]] = {}

    def cut(self, fan_out: FanOut, limit: np.ndarray, cap: np.ndarray):
        """(boxes, (n, 4) usages): boxes within ``limit``, or within ``cap`` where that fails."""
        if self.dense or (not self.conv and self.grid[1:] == (1, 1)):
            return self._cut_ranges(fan_out, limit, cap)
        for bound in (limit, cap):
            best = self._cut_boxes(fan_out, bound, cap)
            if best is not None:
                return best
        b = _boxes(*self.grid, 1, 1, 1)
        usage = box_usage(b, self.conv, fan_out, self.target)
        first = int(np.argmax(~np.all(usage <= cap, axis=1)))
        raise _TooLarge(f"neuron {first} alone needs "
                        f"{', '.join(Usage.from_array(usage[first]).exceeded(Usage.from_array(cap)))}")

    def _cut_boxes(self, fan_out: FanOut, bound: np.ndarray, cap: np.ndarray):
        c, h, w = self.grid
        outputs = {}  # the bisections ask for some cuts more than once

        def inputs(key):
            if key not in self._inputs:
                b = _boxes(c, h, w, *key)
                self._inputs[key] = b, box_inputs(b, self.conv, self.target)
            return self._inputs[key]

        def output_axons(key, b):
            if key not in outputs:
                outputs[key] = fan_out.query(b)
            return outputs[key]

        def evaluate(g, th, tw):
            b, ins = inputs((g, th, tw))
            return b, with_fan_out(ins, output_axons((g, th, tw), b))

        bound_in, bound_out, max_neurons = bound[:3], bound[3], bound[0]

        def fits(g, th, tw):  # the output axons only where the rest fits
            if g * th * tw > max_neurons:  # the first box's neurons already exceed the bound
                return False
            b, ins = inputs((g, th, tw))
            return bool((ins <= bound_in).all() and (output_axons((g, th, tw), b) <= bound_out).all())

        groups = {math.ceil(c / k) for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
                  if k <= c}
        g_max = _bisect(1, c, lambda g: fits(g, h, w))
        if g_max >= 1:
            groups.add(g_max)
        best, best_key = None, None
        for g in sorted(groups, reverse=True):
            if g_max >= g:
                th, tw = h, w
            else:
                th, tw = _bisect(1, h, lambda t: fits(g, t, w)), w
                if th < 1:
                    th, tw = 1, _bisect(1, w, lambda t: fits(g, 1, t))
                    if tw < 1:
                        continue
            b, usage = evaluate(g, th, tw)
            frac = usage / np.maximum(cap, 1)
            dom = frac.max(axis=1)
            estimate = max(int((dom > 0.5).sum()), math.ceil(dom.sum() - 1e-9))
            key = (estimate, round(float(frac.sum()), 9), len(dom), -g)
            if best_key is None or key < best_key:
                best, best_key = (b, usage), key
        return best

    def _cut_ranges(self, fan_out: FanOut, limit: np.ndarray, cap: np.ndarray):
        """Contiguous ranges of a vector population, each grown row by row within ``limit``."""
        n, t = self.size, self.target
        per_neuron = fan_out.query({"c0": np.arange(n), "c1": np.arange(n) + 1, "y0": np.zeros(n, np.int64),
                                    "y1": np.ones(n, np.int64), "x0": np.zeros(n, np.int64),
                                    "x1": np.ones(n, np.int64)})
        fo_prefix = np.concatenate([[0], np.cumsum(per_neuron)])
        sources = sorted({e.source for e in self.dense})
        grids = {e.source: e.src_grid for e in self.dense}
        ranges, usages, start = [], [], 0
        while start < n:
            masks = {s: None for s in sources}
            fan_in = stored = 0
            stop, usage = start, None
            while stop < n:
                new_masks, new_fan_in = {}, 0
                for s in sources:
                    row = None
                    for e in self.dense:
                        if e.source == s:
                            row = e.nonzero[stop] if row is None else row | e.nonzero[stop]
                    m = row if masks[s] is None else masks[s] | row
                    new_masks[s], new_fan_in = m, new_fan_in + dense_axons(grids[s], m)
                new_stored = stored + sum(int(e.row_prefix[stop + 1] - e.row_prefix[stop]) for e in self.dense)
                u = np.array([stop + 1 - start, new_stored * t.weight_bytes + new_fan_in * t.axon_bytes,
                              new_fan_in, fo_prefix[stop + 1] - fo_prefix[start]], dtype=np.int64)
                if not np.all(u <= limit) and not (stop == start and np.all(u <= cap)):
                    if stop == start:
                        raise _TooLarge(f"neuron {start} alone needs "
                                        f"{', '.join(Usage.from_array(u).exceeded(Usage.from_array(cap)))}")
                    break
                masks, fan_in, stored, usage, stop = new_masks, new_fan_in, new_stored, u, stop + 1
            ranges.append((start, stop))
            usages.append(usage)
            start = stop
        a = np.array(ranges, dtype=np.int64).reshape(-1, 2)
        ones, zeros = np.ones(len(a), np.int64), np.zeros(len(a), np.int64)
        b = {"c0": a[:, 0], "c1": a[:, 1], "y0": zeros, "y1": ones, "x0": zeros, "x1": ones}
        return b, np.array(usages, dtype=np.int64).reshape(-1, 4)


# -- the pass -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    """Place every neuron of a fixed-point graph on ``chips`` Loihi 2 chips; returns a Placement.

    Leaves the graph unchanged. Raises ResourceError (one line) when a neuron exceeds a core or
    the model needs more cores than ``chips`` chips hold. ``fractions``: the largest part of a
    core one box may take (a number, or one per resource in Usage's order); ``orders``: how boxes
    are packed. One placement is tried per (fraction, order); the fewest cores wins.
    """

    name: ClassVar[str] = "partition"
    target: Loihi2 = LOIHI2
    chips: int = 1
    # boxes up to a whole core, or up to half of a core's neurons: the smaller ones let
    # neuron-heavy early layers share cores with memory-heavy late ones (a third try at 0.6 never
    # won on ResNet-20, VGG-16 or ResNet-18 and cost a third of the pass)
    fractions: tuple = (1.0, (0.5, 1.0, 1.0, 1.0))
    orders: tuple[str, ...] = ("topological", "decreasing")

    def __call__(self, graph: Graph) -> Placement:
        cap = capacity(self.target)
        cap_a = cap.as_array()
        names = graph.find(LoihiNeuron)
        pops = {n: _Population(graph, n, self.target) for n in names}
        best = None
        for fraction in self.fractions:
            limit = np.floor(cap_a * np.asarray(fraction, dtype=np.float64)).astype(np.int64)
            cuts, too_large = self._cut_all(names, pops, limit, cap_a)
            if too_large:
                raise ResourceError(
                    f"does not fit any number of Loihi 2 chips: a single neuron exceeds a core "
                    f"(limits per core: {_limits(cap)}): {'; '.join(too_large)}")
            for order in self.orders:
                placed, cores = self._pack(names, cuts, cap_a, order)
                if best is None or len(cores) < len(best[1]):
                    best = (cuts, cores, placed)
        cuts, cores, placed = best
        slices = self._slices(names, pops, cuts, placed)  # of the winner only
        placement = Placement(tuple(slices), tuple(Usage.from_array(c) for c in cores), cap, self.chips,
                              self.target.cores_per_chip, self._totals(names, pops))
        available = self.chips * self.target.cores_per_chip
        if placement.cores_used > available:
            raise ResourceError(_shortfall(placement, available))
        return placement

    def _cut_all(self, names, pops, limit, cap):
        fan_outs = {n: FanOut(pops[n].grid) for n in names}
        cuts, too_large = {}, []
        for name in reversed(names):
            pop = pops[name]
            fan_outs[name].finish()
            try:
                b, usage = pop.cut(fan_outs[name], limit, cap)
            except _TooLarge as exc:
                too_large.append(f"{name} ({exc})")
                continue
            cuts[name] = (b, usage)
            for e in pop.edges:
                if e.source not in fan_outs:
                    continue
                if isinstance(e, ConvEdge):
                    fan_outs[e.source].add_conv(*e.reach(b))
                else:
                    for c0, c1 in zip(b["c0"].tolist(), b["c1"].tolist()):
                        fan_outs[e.source].add_dense(e.reached(c0, c1))
        return cuts, list(reversed(too_large))

    def _pack(self, names, cuts, cap, order):
        """First fit of every box, in topological order or by decreasing largest resource fraction
        (first-fit decreasing: memory-heavy boxes first, neuron-heavy ones fill the rest).
        Returns each box's core, {(population, box index): core}, and the cores' usage."""
        items = [(name, i) for name in names for i in range(len(cuts[name][1]))]
        if order == "decreasing" and items:  # each box's largest fraction, a population at a time
            frac = np.concatenate([(cuts[name][1] / np.maximum(cap, 1)).max(axis=1) for name in names])
            items = [items[k] for k in np.argsort(-frac, kind="stable")]
        slack = np.zeros((0, 4), dtype=np.int64)  # cap - usage of each core opened so far
        used, placed = 0, {}
        for name, i in items:
            u = cuts[name][1][i]
            room = (slack[:used] >= u).all(axis=1)  # (cores + u <= cap, without a new sum)
            core = int(room.argmax()) if used else 0
            if not used or not room[core]:
                if used == len(slack):
                    slack = np.concatenate([slack, np.repeat(cap[None], max(16, used), axis=0)])
                core, used = used, used + 1
            slack[core] -= u
            placed[name, i] = core
        return placed, (cap - slack)[:used]

    def _slices(self, names, pops, cuts, placed) -> list[Slice]:
        """Slices in topological order, a population's boxes in cut order."""
        slices = []
        for name in names:
            b, usage = cuts[name]
            pop = pops[name]
            for i in range(len(usage)):
                core = placed[name, i]
                box = Box(*(int(b[k][i]) for k in ("c0", "c1", "y0", "y1", "x0", "x1")))
                slices.append(Slice(name, box, core, core // self.target.cores_per_chip, Usage.from_array(usage[i]),
                                    pop.grid, pop.image))
        return slices

    def _totals(self, names, pops) -> dict[str, Usage]:
        conv_senders = {n: np.zeros(pops[n].grid[1:], dtype=bool) for n in names}
        dense_senders = {n: np.zeros(pops[n].size, dtype=bool) for n in names}
        for pop in pops.values():
            for e in pop.edges:
                if e.source not in pops:
                    continue
                if isinstance(e, ConvEdge):
                    conv_senders[e.source] |= e.reached_pixels()
                else:
                    dense_senders[e.source] |= e.reached(0, e.nonzero.shape[0])
        return {n: unsplit_usage(pops[n].edges, pops[n].size, self.target,
                                 int(conv_senders[n].sum() + dense_senders[n].sum())) for n in names}


def _limits(cap: Usage) -> str:
    return ", ".join(f"{k} {v}" for k, v in cap.as_dict().items())


def _shortfall(placement: Placement, available: int) -> str:
    per_layer = sorted(((len({s.core for s in slices}), name) for name, slices in placement.by_layer().items()),
                       reverse=True)
    listed = [f"{name} ({n} cores)" for n, name in per_layer if n][:8]
    more = len([n for n, _ in per_layer if n]) - len(listed)
    return (f"does not fit: needs {placement.cores_used} cores, {available} available on {placement.chips} "
            f"Loihi 2 chip(s), {placement.cores_used - available} short (fits on {placement.chips_used} chips); "
            f"cores per layer: {', '.join(listed)}" + (f" and {more} more" if more > 0 else ""))
