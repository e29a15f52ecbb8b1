"""Map a fixed-point graph onto Loihi 2 cores and chips, within every per-core limit.

Resource model. A population is one LoihiNeuron node; its neurons are numbered in C-order
(channel-major for (C, H, W)). A core holds one or more *slices*, each a contiguous range of one
population's neurons together with all synapses that end on them. Spikes reach a core through
input axons, of two kinds:

- a FixedDense (and anything else that is not a convolution) has one axon per source neuron;
- a FixedConv2d has one *population axon per source pixel* (y, x), the spike carrying its channel
  as an atom that selects the kernel slice: how nengo-loihi maps convolutions onto Loihi
  (``nengo_loihi/builder/connection.py``, ``build_conv2d_connection``: ``Synapse(n_pixels)`` with
  ``pixel_idxs`` as axons and ``channel_idxs`` as atoms).

A slice uses:

- neurons: its size;
- fan-in: its input axons, one per source neuron (dense) or source pixel (conv) with at least one
  nonzero weight onto the slice; several synaptic ops of the same kind from the same population
  share the axons;
- fan-out: the output axons its neurons need, one per (source neuron, destination slice) for
  dense, one per (source pixel, destination slice) for conv. For conv the slice is charged every
  pixel it holds that the destination reaches from any channel (an upper bound when a sparse or
  grouped kernel leaves some channels out);
- synaptic memory: ``stored weights · weight_bytes + fan-in · axon_bytes``. A FixedDense stores
  each nonzero weight of the slice's rows. A FixedConv2d shares its weights: the kernel of an
  output channel (its nonzero entries, (in/groups)·kH·kW at most) is stored once on the core for
  every channel the slice touches, however many of the channel's neurons the slice holds; the
  per-neuron cost of a convolution is its input axons, counted in fan-in.

The limits come from the target (``targets/loihi2.py``); Intel does not publish Loihi 2's per-core
figures, so they are conservative defaults there, not chip facts.

Algorithm. Populations are sliced in reverse topological order, so that the slicing of every
consumer is known when a population's fan-out is counted. A slice grows greedily as far as every
limit allows (each resource only grows with the range, so an exponential-then-binary search
finds the end). A convolution's population is cut at a channel boundary where there is one inside
the slice, so no kernel is stored twice; where that needs more slices than cutting anywhere
(channels larger than a core), it is cut anywhere and a split channel's kernel is stored on every
core that holds part of it. Slices are then packed first-fit, in topological order, onto the last
``window`` cores opened (every core, for models up to that size): a core may hold slices of
several populations. Usages on a core are added up, which overcounts shared axons and kernels, so
the real use is never above the modelled one. Core ``i`` sits on chip ``i // cores_per_chip``.
When a single neuron exceeds a core, or the cores exceed ``chips`` chips, ``ResourceError`` says
which layers and by how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np
import torch

from snncompile.errors import ResourceError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import FixedConv2d, FixedDense, Flatten, LoihiNeuron
from snncompile.targets.loihi2 import LOIHI2, Loihi2

NEURON, PIXEL = "neuron", "pixel"  # the two kinds of input axon


@dataclass(frozen=True)
class Usage:
    """Resources of one slice or one core (or, as ``capacity``, what a core offers)."""

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


def capacity(target: Loihi2 = LOIHI2) -> Usage:
    """What one core of ``target`` offers."""
    return Usage(target.neurons_per_core, target.synapse_bytes_per_core, target.fan_in_per_core,
                 target.fan_out_per_core)


@dataclass(frozen=True)
class Slice:
    """Neurons ``start:stop`` (C-order) of population ``layer``, on core ``core`` of chip ``chip``.
    ``channels`` is the range of channels the slice touches, for (C, H, W) populations."""

    layer: str
    start: int
    stop: int
    core: int
    chip: int
    channels: tuple[int, int] | None
    usage: Usage

    def as_dict(self) -> dict:
        return {"layer": self.layer, "neurons": [self.start, self.stop], "core": self.core, "chip": self.chip,
                "channels": None if self.channels is None else list(self.channels)} | self.usage.as_dict()


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
        """max(ceil(neurons / neurons per core), ceil(synapse bytes / bytes per core)), at least 1."""
        terms = self.lower_bound_terms()
        return max(1, terms["neurons"], terms["synapse_bytes"])

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


def axon_kind(graph: Graph, synapse: str) -> str:
    """PIXEL for a convolution (population axons), NEURON otherwise."""
    return PIXEL if isinstance(graph.op(synapse), FixedConv2d) else NEURON


def pixels(graph: Graph, population: str) -> int:
    """Pixels per channel of a (C, H, W) population (1 for any other shape)."""
    shape = graph.shape(population)
    return int(np.prod(shape[1:])) if len(shape) == 3 else 1


def coverage(graph: Graph, synapse: str, start: int, stop: int, nonzero: torch.Tensor | None = None) -> np.ndarray:
    """Which source neurons (flat, C-order) have a nonzero weight onto target neurons start:stop.
    ``nonzero`` is the conv's weight != 0 as float64, when the caller has it already."""
    op = graph.op(synapse)
    src_shape = graph.shape(spike_source(graph, synapse))
    if isinstance(op, FixedDense):
        return np.asarray(op.weight[start:stop] != 0).any(axis=0)
    c_out, h_out, w_out = graph.shape(synapse)
    hw = h_out * w_out
    first, last = start // hw, (stop - 1) // hw + 1
    mask = torch.zeros((last - first) * hw, dtype=torch.float64)
    mask[start - first * hw:stop - first * hw] = 1.0
    if nonzero is None:
        nonzero = torch.from_numpy(np.asarray(op.weight != 0, dtype=np.float64))
    if op.groups == 1:
        weight, grad = nonzero[first:last], mask.reshape(1, last - first, h_out, w_out)
    else:  # the adjoint needs every channel of a grouped conv; channels outside get a zero mask
        grad = torch.zeros((1, c_out, h_out, w_out), dtype=torch.float64)
        grad[0, first:last] = mask.reshape(last - first, h_out, w_out)
        weight = nonzero
    # the gradient of conv2d with respect to its input is the transposed convolution: it is
    # nonzero exactly where an input reaches a masked output through a nonzero weight
    reach = torch.nn.grad.conv2d_input((1,) + tuple(src_shape), weight, grad, op.stride, op.padding,
                                       op.dilation, op.groups)
    return (reach[0] > 0).numpy().reshape(-1)


def axons(kind: str, reached: np.ndarray, pixels_per_channel: int) -> np.ndarray:
    """The input axons that ``reached`` (over source neurons) needs: itself for NEURON, the pixels
    reached from any channel for PIXEL."""
    if kind == NEURON:
        return reached
    return reached.reshape(-1, pixels_per_channel).any(axis=0)


def connections(graph: Graph, synapse: str) -> int:
    """The synapses of one op: (source, target) neuron pairs joined by a nonzero weight."""
    op = graph.op(synapse)
    if isinstance(op, FixedDense):
        return int(np.count_nonzero(op.weight))
    ones = torch.ones((1,) + tuple(graph.shape(spike_source(graph, synapse))), dtype=torch.float64)
    nonzero = torch.from_numpy(np.asarray(op.weight != 0, dtype=np.float64))
    per_target = torch.nn.functional.conv2d(ones, nonzero, None, op.stride, op.padding, op.dilation, op.groups)
    return int(round(float(per_target.sum())))


# -- one population ------------------------------------------------------------------------------


def _last_fitting(lo: int, hi: int, fits, guess: int) -> int:
    """The largest b in [lo, hi] with fits(b), for fits true up to some b and false after; lo is
    taken to fit. Probes ``guess`` first (the previous slice's end), then steps out exponentially
    and bisects."""
    guess = min(max(guess, lo), hi)
    if guess > lo:
        if fits(guess):
            lo = guess
        else:
            hi = guess - 1
    step = 1
    while lo < hi:
        b = min(hi, lo + step)
        if not fits(b):
            hi = b - 1
            break
        lo, step = b, step * 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


class _Population:
    """One LoihiNeuron node with what its slices cost."""

    def __init__(self, graph: Graph, name: str, target: Loihi2):
        self.graph, self.name, self.target = graph, name, target
        self.shape = graph.shape(name)
        self.size = int(np.prod(self.shape))
        self.synapses = incoming(graph, name)
        # neurons per channel: slices are aligned to channels of (C, H, W) populations
        self.unit = pixels(graph, name)
        self.dense_prefix = np.zeros(self.size + 1, dtype=np.int64)  # stored dense weights, cumulative
        self.kernel_prefix = np.zeros(self.size // self.unit + 1, dtype=np.int64)  # per channel
        self.nonzero = {}
        for s in self.synapses:
            op = graph.op(s)
            w = np.asarray(op.weight)
            if isinstance(op, FixedDense):
                self.dense_prefix[1:] += np.cumsum(np.count_nonzero(w, axis=1))
            else:
                self.kernel_prefix[1:] += np.cumsum(np.count_nonzero(w.reshape(w.shape[0], -1), axis=1))
                self.nonzero[s] = torch.from_numpy(np.asarray(w != 0, dtype=np.float64))
        # output axons: per neuron (NEURON) and per destination slice x pixel (PIXEL)
        self.neuron_fan_out = np.zeros(self.size + 1, dtype=np.int64)
        self.pixel_reach = np.zeros((0, self.unit + 1), dtype=np.int64)

    def set_fan_out(self, per_neuron: np.ndarray, per_pixel: list[np.ndarray]) -> None:
        """Output axons, known once the consumers are sliced: how many destination slices each
        neuron reaches through dense synapses, and for each destination slice reached through a
        convolution, which pixels it reaches."""
        self.neuron_fan_out = np.concatenate([[0], np.cumsum(per_neuron)]).astype(np.int64)
        if per_pixel:
            reach = np.stack(per_pixel).astype(np.int64)
            self.pixel_reach = np.concatenate([np.zeros((len(reach), 1), np.int64), np.cumsum(reach, 1)], 1)

    def channels(self, start: int, stop: int) -> tuple[int, int]:
        return start // self.unit, (stop - 1) // self.unit + 1

    def weights(self, start: int, stop: int) -> int:
        first, last = self.channels(start, stop)
        kernels = self.kernel_prefix[last] - self.kernel_prefix[first]
        return int(self.dense_prefix[stop] - self.dense_prefix[start] + kernels)

    def fan_out(self, start: int, stop: int) -> int:
        total = int(self.neuron_fan_out[stop] - self.neuron_fan_out[start])
        if len(self.pixel_reach):
            p, reach = self.unit, self.pixel_reach
            if stop - start >= p:  # every pixel is in the range
                total += int(reach[:, p].sum())
            elif start % p < (stop - 1) % p + 1:  # pixels start%p .. (stop-1)%p
                total += int((reach[:, (stop - 1) % p + 1] - reach[:, start % p]).sum())
            else:  # the range wraps into the next channel
                total += int((reach[:, p] - reach[:, start % p] + reach[:, (stop - 1) % p + 1]).sum())
        return total

    def reached(self, start: int, stop: int) -> dict[tuple[str, str], np.ndarray]:
        """Per (source population, axon kind), the source neurons that reach neurons start:stop."""
        out: dict[tuple[str, str], np.ndarray] = {}
        for s in self.synapses:
            key = (spike_source(self.graph, s), axon_kind(self.graph, s))
            cov = coverage(self.graph, s, start, stop, self.nonzero.get(s))
            out[key] = cov if key not in out else out[key] | cov
        return out

    def usage(self, start: int, stop: int, with_fan_in: bool = True) -> Usage:
        fan_in = 0
        if with_fan_in:
            for (src, kind), cov in self.reached(start, stop).items():
                fan_in += int(axons(kind, cov, pixels(self.graph, src)).sum())
        t = self.target
        return Usage(neurons=stop - start,
                     synapse_bytes=self.weights(start, stop) * t.weight_bytes + fan_in * t.axon_bytes,
                     fan_in=fan_in, fan_out=self.fan_out(start, stop))

    def slices(self, cap: Usage, align: bool) -> list[tuple[int, int]]:
        """Greedy contiguous ranges covering the population; ValueError names a neuron too large."""
        ranges, start, guess = [], 0, self.size
        while start < self.size:
            # cheap resources first (no fan-in), then the exact check inside that bound
            hi = _last_fitting(start, self.size, lambda b: self.usage(start, b, False).fits(cap), self.size)
            stop = _last_fitting(start, hi, lambda b: self.usage(start, b).fits(cap), start + guess)
            if stop == start:
                over = self.usage(start, start + 1).exceeded(cap)
                raise ValueError(f"neuron {start} alone needs {', '.join(over)}")
            guess = stop - start
            boundary = stop // self.unit * self.unit
            if align and stop < self.size and boundary > start:
                stop = boundary
            ranges.append((start, stop))
            start = stop
        return ranges

    def best_slices(self, cap: Usage) -> list[tuple[int, int]]:
        """Channel-aligned slices unless cutting through channels needs fewer of them."""
        aligned = self.slices(cap, align=True)
        if self.unit == 1 or len(aligned) == 1:
            return aligned
        anywhere = self.slices(cap, align=False)
        return anywhere if len(anywhere) < len(aligned) else aligned


# -- the pass -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    """Place every neuron of a fixed-point graph on ``chips`` Loihi 2 chips; returns a Placement.

    Leaves the graph unchanged. Raises ResourceError (one line) when a neuron exceeds a core or
    the model needs more cores than ``chips`` chips hold. ``window``: how many of the most recently
    opened cores first-fit packing tries before opening a new one.
    """

    name: ClassVar[str] = "partition"
    target: Loihi2 = LOIHI2
    chips: int = 1
    window: int = 256

    def __call__(self, graph: Graph) -> Placement:
        cap = capacity(self.target)
        names = graph.find(LoihiNeuron)
        pops = {n: _Population(graph, n, self.target) for n in names}
        per_neuron = {n: np.zeros(p.size, dtype=np.int64) for n, p in pops.items()}
        per_pixel: dict[str, list[np.ndarray]] = {n: [] for n in names}
        ranges: dict[str, list[tuple[int, int]]] = {}
        too_large: list[str] = []
        for name in reversed(names):
            pop = pops[name]
            pop.set_fan_out(per_neuron[name], per_pixel[name])
            try:
                ranges[name] = pop.best_slices(cap)
            except ValueError as exc:
                too_large.append(f"{name} ({exc})")
                continue
            for start, stop in ranges[name]:
                for (src, kind), cov in pop.reached(start, stop).items():
                    if src not in pops:
                        continue
                    if kind == NEURON:
                        per_neuron[src] += cov
                    else:
                        per_pixel[src].append(axons(kind, cov, pops[src].unit))
        if too_large:
            raise ResourceError(
                f"does not fit any number of Loihi 2 chips: a single neuron exceeds a core "
                f"(limits per core: {_limits(cap)}): {'; '.join(too_large)}")

        totals = {}
        for n, pop in pops.items():
            whole = pop.usage(0, pop.size)
            # unsplit, a population still needs one output axon per neuron or pixel it sends from
            sending = int(np.count_nonzero(per_neuron[n]))
            if per_pixel[n]:
                sending += int(np.count_nonzero(np.any(per_pixel[n], axis=0)))
            totals[n] = Usage(whole.neurons, whole.synapse_bytes, whole.fan_in, sending)
        cores: list[Usage] = []
        slices: list[Slice] = []
        for name in names:
            pop = pops[name]
            for start, stop in ranges[name]:
                usage = pop.usage(start, stop)
                first = max(0, len(cores) - self.window)
                core = next((i for i in range(first, len(cores)) if (cores[i] + usage).fits(cap)), len(cores))
                if core == len(cores):
                    cores.append(Usage())
                cores[core] = cores[core] + usage
                slices.append(Slice(name, start, stop, core, core // self.target.cores_per_chip,
                                    pop.channels(start, stop) if len(pop.shape) == 3 else None, usage))
        placement = Placement(tuple(slices), tuple(cores), cap, self.chips, self.target.cores_per_chip, totals)
        available = self.chips * self.target.cores_per_chip
        if placement.cores_used > available:
            raise ResourceError(_shortfall(placement, available))
        return placement


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
