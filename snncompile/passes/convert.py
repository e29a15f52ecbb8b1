"""ANN-to-SNN conversion: every ReLU becomes an IF neuron (reset by subtraction) with a balanced
threshold, and the last layer becomes a non-spiking integrator whose membrane is read out.

Threshold balancing (data-based, Rueckauer et al. 2017; the calibration paper's baseline): for a
ReLU whose activation over the calibration batch has maximum λ (or a percentile of it), the IF
neuron gets threshold λ and emits unit spikes, so its rate r ≈ a / λ for activation a ∈ [0, λ].
Every synaptic op downstream (through AvgPool2d / Flatten, which commute with scaling) has its
weights multiplied by λ, so it sees λ·r ≈ a: the float SNN approximates the ANN layer by layer.
The first layer takes the analog input as a constant current every step (no spike encoding).

Two defaults, measured on the bundled digits CNN, ResNet and VGG (benchmarks/fidelity.py):

- initial potential θ/2 (``v_init``): the count over T steps rounds a·T/θ instead of flooring it
  (Li et al. 2021's analysis; SpikingJelly's half threshold). Float SNN at T=8, max thresholds:
  CNN 58.1 → 97.8 %, VGG 34.2 → 99.4 %, ResNet 18.6 → 63.3 %.
- per-channel balancing (``channel_wise``, see ``balance_channels``): each channel gets its own λ_c
  folded into the weights, one threshold per layer on the chip. On top of θ/2, fixed point at T=8:
  CNN 89.7 → 95.8 %, VGG 76.7 → 87.8 %.

The compiler's default threshold mode is ``mse`` (compiler.Options.threshold; this pass's own
default stays ``max``): λ_c is the candidate max·(1 − 0.01 i) whose T-step rate, rounded and
clipped, is closest to the channel's activations (``mse_thresholds``). With the default
calibration it lifted the digits ResNet at T=4 from 84.7 to 94.7 %, ResNet-20 at T=8 from 95.0 to
95.6 % and MobileNetV2 at T=8/16 by 1.1/2.0 pp, and moved the rest by one or two test samples
either way (benchmarks/results/fidelity.md).

Residual adds become membrane-add: for ``relu(add(a, b))`` both branches synapse onto the IF
neurons that replace the ReLU, which sum their inputs; a branch that is not already a Linear or
Conv2d (an identity shortcut from an earlier ReLU) gets an identity synapse (a 1×1 Conv2d or a
Dense with the identity matrix), rescaled by that ReLU's λ like every other synapse. On the
chip this costs one synapse per neuron of the block and no extra neuron.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from snncompile.errors import Problem, UnsupportedModelError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import IF, Add, AvgPool2d, Conv2d, Dense, Flatten, Integrator, Output, ReLU, Reset, owned
from snncompile.sim.ann import evaluate, one_thread

PASS_THROUGH = (AvgPool2d, Flatten)


def identity_synapse(shape: tuple[int, ...], gain: float) -> Dense | Conv2d:
    """gain × identity, as a 1×1 Conv2d for (C, H, W) tensors, else as a Dense."""
    if len(shape) == 3:
        weight = np.eye(shape[0]).reshape(shape[0], shape[0], 1, 1) * gain
        return Conv2d(weight=weight)
    return Dense(weight=np.eye(int(np.prod(shape))) * gain)


THRESHOLD_MODES = ("max", "percentile", "mse")
# threshold statistics in float32 above this many multiply-accumulates over the calibration samples
# (the digits models: < 2**28; ResNet-20 at 32x32 x 256 samples: 1e10): float32 maxima differ by
# ~1e-7, which moved the calibrated digits ResNet at T=8 by 3 test samples, so small models keep
# float64 (ResNet-20's accuracies at T=8/16/32 were the same either way)
STATS_FLOAT32_MACS = 2**30
MSE_CANDIDATES = 95  # max·(1 − 0.01 i), i = 0 .. 94 (the calibration paper's grid)


def quantized_clipped(a: np.ndarray, theta: float, steps: int, v_init: float = 0.5) -> np.ndarray:
    """What an IF neuron (reset by subtraction, v starting at ``v_init``·θ) can represent in
    ``steps`` steps: floor(clamp(a/θ·T + v_init, 0, T))·θ/T; v_init = 0.5 rounds, 0 floors."""
    return np.floor(np.clip(a / theta * steps + v_init, 0, steps)) * theta / steps


def mse_thresholds(rows: np.ndarray, steps: int, v_init: float = 0.5) -> np.ndarray:
    """``mse_threshold`` of each row of (C, M) values at once. Each row is sorted once; for a
    candidate θ the values from (k − v_init)·θ/T upwards count k or more spikes, so the squared
    error Σ (x − q(x))² = Σ x² − 2θ/T Σ_k S_k + (θ/T)² Σ_k (2k − 1) n_k follows from the number n_k
    and the sum S_k of the values above each of the T level boundaries (prefix sums, binary
    search): O(M log M + candidates · T log M) per row instead of candidates · M (ResNet-20,
    256 samples: 98 s of brute force)."""
    x = torch.from_numpy(np.sort(np.ascontiguousarray(rows, dtype=np.float64).reshape(len(rows), -1), axis=1))
    count = x.shape[1]
    top = x[:, -1]
    cum1 = torch.cat([torch.zeros(len(x), 1, dtype=x.dtype), torch.cumsum(x, dim=1)], dim=1)
    total1, total2 = cum1[:, -1:], (x * x).sum(dim=1)
    levels = torch.arange(1, steps + 1, dtype=x.dtype)
    grid = 1 - 0.01 * torch.arange(MSE_CANDIDATES, dtype=x.dtype)
    errors = torch.empty(len(x), MSE_CANDIDATES, dtype=x.dtype)
    chunk = max(1, min(MSE_CANDIDATES, 2**22 // max(1, len(x) * steps)))  # candidates per batch of searches
    for i in range(0, MSE_CANDIDATES, chunk):
        step = top[:, None] * grid[None, i:i + chunk] / steps  # θ/T per row and candidate
        bounds = (step[:, :, None] * (levels - v_init)).reshape(len(x), -1)
        below = torch.searchsorted(x, bounds)  # values under each boundary
        n = (count - below).reshape(step.shape + (steps,))  # values counting at least k spikes
        sums = (total1 - torch.gather(cum1, 1, below)).reshape(n.shape)
        errors[:, i:i + chunk] = (total2[:, None] - 2 * step * sums.sum(2)
                                  + step ** 2 * (n * (2 * levels - 1)).sum(2))
    best = top * grid[torch.argmin(errors, dim=1)]
    return torch.where(top > 0, best, torch.ones_like(best)).numpy()


def mse_threshold(values: np.ndarray, steps: int, v_init: float = 0.5) -> float:
    """The candidate max·(1 − 0.01 i) with the least squared error between the activations and
    their T-step quantized, clipped version (Li et al. 2021, §4), with the neuron's initial
    potential ``v_init`` (a fraction of θ: 0.5 rounds, 0 floors); 1.0 for values that are never
    positive."""
    flat = np.asarray(values).ravel()
    if v_init < 1:  # a zero counts no spike and costs no error: only the rest need sorting
        flat = flat[flat != 0]
    return float(mse_thresholds(flat.reshape(1, -1), steps, v_init)[0]) if flat.size else 1.0


def activation_scale(values: np.ndarray, percentile: float, mode: str = "max", steps: int = 32,
                     v_init: float = 0.5) -> float:
    """λ for one layer: ``max``, a high ``percentile`` of the activations, or the ``mse`` grid
    search for ``steps`` steps. ``percentile`` ≥ 100 in mode "max"/"percentile" means the max."""
    if mode != "mse" and (mode == "max" or percentile >= 100):
        lam = float(np.max(values))  # (exact in the values' own type: no float64 copy)
        return lam if lam > 0 else 1.0
    if mode == "mse":  # (it drops the zeros before its float64 copy)
        return mse_threshold(values, steps, v_init)
    flat = np.asarray(values, dtype=np.float64).ravel()
    lam = float(np.percentile(flat, percentile))
    return lam if lam > 0 else 1.0  # a silent layer: any positive threshold keeps it silent


def _channel_max(values: np.ndarray) -> np.ndarray:
    """max over every axis but 1 of (N, C, ...), without a copy (0 for an empty channel)."""
    v = np.asarray(values)
    v = v.reshape(v.shape[0], v.shape[1], -1)
    return v.max(axis=(0, 2)) if v.size else np.zeros(v.shape[1], dtype=v.dtype)


def channel_scales(values: np.ndarray, percentile: float, mode: str = "max", steps: int = 32,
                   v_init: float = 0.5) -> np.ndarray:
    """λ_c per channel (axis 1 of (N, C, ...)): ``activation_scale`` of each channel's values."""
    if mode == "max" or (mode == "percentile" and percentile >= 100):  # one reduction, not C
        lam = _channel_max(values).astype(np.float64)  # (the maxima exact in the values' own type)
        return np.where(lam > 0, lam, 1.0)
    values = np.asarray(values, dtype=np.float64)
    per_channel = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1)
    if mode == "mse":
        return mse_thresholds(per_channel, steps, v_init)
    return np.array([activation_scale(c, percentile, mode, steps, v_init) for c in per_channel])


@dataclass(frozen=True, eq=False)
class ConvertReLU:
    """Replace ReLU with IF (threshold balanced on ``data``) and add the readout Integrator."""

    data: np.ndarray
    percentile: float = 100.0
    reset: Reset = Reset.SUBTRACT
    mode: str = "max"  # threshold selection: max | percentile | mse (see activation_scale)
    steps: int = 32  # the time steps the mse search optimizes for
    v_init: float = 0.5  # initial potential as a fraction of θ: 0.5 rounds the rate, 0 floors it
    channel_wise: bool = True  # per-channel λ_c folded into the weights (see balance_channels)
    name: str = "convert_relu"

    def __post_init__(self):
        if self.mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold mode must be one of {THRESHOLD_MODES}, not {self.mode!r}")
        if self.mode == "percentile" and self.percentile >= 100:
            object.__setattr__(self, "percentile", 99.99)

    def __call__(self, graph: Graph) -> Graph:
        relus = graph.find(ReLU)
        last = {graph.inputs(out)[0] for out in graph.find(Output)}
        readout_synapses = {s for src in last for s in self._synapses_of(graph, src)}
        # statistics only (maxima, percentiles): float64 as the ANN computes them, float32 (oneDNN's
        # fast path) where that evaluation is large (ResNet-18 at 224x224, 2 samples: 0.10-0.15 s
        # against 0.29 s; ResNet-20, 256 samples: about 2.5 s less); one thread, as two were 2-4x
        # slower on a busy 2-core machine
        macs = sum(int(np.prod(graph.shape(n))) * int(np.prod(op.weight.shape[1:]))
                   for n, op in graph.nodes() if isinstance(op, (Dense, Conv2d)))
        dtype = torch.float32 if macs * len(self.data) > STATS_FLOAT32_MACS else torch.float64
        with one_thread():
            acts = evaluate(graph, self.data, dtype=dtype, upto=set(relus) | last | readout_synapses)
        builder = graph.edit()
        problems = []
        scales: dict[str, float] = {}
        gains: dict[str, np.ndarray] = {}
        # with per-channel balancing, each synapse's λ factors are applied by balance_channels in
        # the same buffer as its gains (one new weight array per synapse instead of two)
        pending: dict[str, list[float]] = {}
        for relu in relus:
            values = acts[relu].numpy()
            lam = activation_scale(values, self.percentile, self.mode, self.steps, self.v_init)
            upper = graph.op(relu).upper
            if upper is not None:
                lam = min(lam, upper)  # a clipped ReLU: one spike per step is the clip
            scales[relu] = lam
            if self.channel_wise:
                per_channel = channel_scales(values, self.percentile, self.mode, self.steps, self.v_init)
                silent = _channel_max(values) <= 0
                per_channel = np.where(silent, lam, per_channel)
                if upper is not None:
                    per_channel = np.minimum(per_channel, upper)
                gains[relu] = per_channel / lam
            builder.replace(relu, IF(threshold=owned(np.full(graph.shape(relu), lam)), reset=self.reset,
                                     v_init=owned(np.full(graph.shape(relu), self.v_init * lam))))
            for synapse in self._downstream_synapses(graph, relu, problems):
                if self.channel_wise:
                    pending.setdefault(synapse, []).append(lam)
                    continue
                op = builder.op(synapse)
                builder.replace(synapse, dataclasses.replace(op, weight=owned(op.weight * lam)))
        self._lower_adds(graph, builder, problems)
        for out in graph.find(Output):
            (src,) = graph.inputs(out)
            synapses = self._synapses_of(graph, src)
            if not synapses:
                problems.append(Problem(out, "Output", f"reads a {graph.op(src).kind.value}; the "
                                        "last layer must be Linear or Conv2d (no final ReLU)"))
                continue
            readout = builder.unique_name(f"{src}_readout")
            builder.add(readout, Integrator(), synapses)
            builder.set_inputs(out, [readout])
            if isinstance(graph.op(src), Add):
                builder.remove(src)  # the Integrator now reads the Add's synapses itself
        if problems:
            raise UnsupportedModelError("conversion", problems)
        # the readout's input range on the data sizes its fixed-point scale (passes.quantize)
        peaks = {s: float(acts[s].abs().max()) for s in readout_synapses}
        builder.metadata = {**builder.metadata, "thresholds": scales, "readout_input_peaks": peaks}
        converted = builder.build()
        return balance_channels(converted, gains, pending) if gains else converted

    @staticmethod
    def _synapses_of(graph: Graph, node: str) -> list[str]:
        """The synaptic ops whose sum ``node`` is (itself, or the inputs of an Add of them)."""
        op = graph.op(node)
        if isinstance(op, (Dense, Conv2d)):
            return [node]
        if isinstance(op, Add) and all(isinstance(graph.op(s), (Dense, Conv2d)) for s in graph.inputs(node)):
            return list(graph.inputs(node))
        return []

    def _lower_adds(self, graph: Graph, builder, problems: list) -> None:
        """relu(add(a, b, …)) -> IF fed by the synapses of a, b, … (see the module docstring)."""
        for add in graph.find(Add):
            users = graph.users(add)
            if len(users) == 1 and isinstance(graph.op(users[0]), Output):
                continue  # the readout's sum of synapses: the Integrator takes them
            if len(users) != 1 or not isinstance(graph.op(users[0]), ReLU):
                problems.append(Problem(add, "Add", "a residual add must feed exactly one ReLU "
                                        "(post-activation block); it becomes a membrane-add"))
                continue
            synapses = []
            for branch in graph.inputs(add):
                op = graph.op(branch)
                if isinstance(op, (Dense, Conv2d)):
                    synapses.append(branch)
                elif isinstance(op, ReLU):
                    shape = graph.shape(branch)
                    lam = float(builder.op(branch).threshold.max())
                    synapse = builder.unique_name(f"{add}_shortcut_{branch}")
                    builder.add(synapse, identity_synapse(shape, lam), [branch])
                    synapses.append(synapse)
                else:
                    problems.append(Problem(add, "Add", f"input '{branch}' is a {op.kind.value}; "
                                            "residual branches must end in Linear/Conv2d or a ReLU"))
            builder.set_inputs(users[0], synapses)
            builder.remove(add)

    @staticmethod
    def _downstream_synapses(graph: Graph, relu: str, problems: list) -> list[str]:
        found, stack = [], list(graph.users(relu))
        while stack:
            node = stack.pop()
            op = graph.op(node)
            if isinstance(op, (Dense, Conv2d)):
                found.append(node)
            elif isinstance(op, PASS_THROUGH):
                stack.extend(graph.users(node))
            elif isinstance(op, Add) and node in graph.users(relu):
                continue  # an identity shortcut; _lower_adds gives it a synapse scaled by λ
            else:
                problems.append(Problem(node, op.kind.value, f"follows ReLU '{relu}'; only pooling, "
                                        "Flatten, Linear and Conv2d may follow a converted ReLU"))
        return found


def _gain_rows(op: Dense | Conv2d, gain: np.ndarray) -> np.ndarray:
    """``gain`` per output channel, broadcastable to the op's weight."""
    return gain.reshape((-1,) + (1,) * (op.weight.ndim - 1))


def _gain_columns(op: Dense | Conv2d, gain: np.ndarray) -> np.ndarray:
    """``gain`` per input channel of a synapse, broadcastable to its weight: a Dense reading a
    flattened (C, H, W) tensor repeats each channel's gain H·W times (channel-major order); a
    grouped Conv2d's group k reads channels k·(C/groups) … ."""
    if isinstance(op, Dense):
        return np.repeat(gain, op.weight.shape[1] // gain.size)[None, :]
    out, per_group = op.weight.shape[:2]
    group = np.arange(out) // (out // op.groups)
    return gain[group[:, None] * per_group + np.arange(per_group)[None, :]][:, :, None, None]


def balance_channels(graph: Graph, gains: dict[str, np.ndarray], factors: dict[str, list[float]] | None = None) -> Graph:
    """Per-channel threshold balancing folded into the weights, one threshold per layer.

    For an IF layer with threshold θ and channel c's own scale λ_c = g_c·θ: channel c's incoming
    weights and bias are divided by g_c, and every synapse reading the layer (through pooling and
    Flatten) multiplies its weights for channel c by g_c. For a ReLU network this leaves the
    function unchanged, relu(x/g) · g = relu(x) for g > 0, so the ANN the SNN approximates is the
    same; each channel then spans the whole [0, θ] range of the layer's one threshold
    (Rueckauer et al. 2017; SpikingJelly's channel-wise mode). ``graph.metadata["channel_gains"]``
    keeps g per layer: a layer's rate·θ approximates a_c / g_c (passes.calibrate divides its
    targets by it). ``factors``: per synapse, scalars its weights are multiplied by first, in
    order (conversion's λ of the layer it reads).
    """
    factors = factors or {}
    # per synapse, every factor its weights get (λ scalars, 1/g of the layer it feeds per output
    # channel, g of the layer it reads per input channel), multiplied together on arrays of kernel
    # size, then applied to the weights in one pass: each pass over a model's weights (ResNet-18:
    # 93 MB) costs more than the arithmetic
    multipliers: dict[str, np.ndarray] = {}
    biases: dict[str, np.ndarray | None] = {}

    def times(synapse: str, by: np.ndarray) -> None:
        multipliers[synapse] = multipliers.get(synapse, np.float64(1.0)) * by

    for synapse, by in factors.items():
        times(synapse, np.float64(np.prod(by)))
    for layer, gain in gains.items():
        for synapse in graph.inputs(layer):
            op = graph.op(synapse)
            times(synapse, 1.0 / _gain_rows(op, gain))
            biases[synapse] = None if op.bias is None else op.bias / gain
        stack = list(graph.users(layer))
        while stack:
            node = stack.pop()
            op = graph.op(node)
            if isinstance(op, PASS_THROUGH):
                stack.extend(graph.users(node))
            elif isinstance(op, (Dense, Conv2d)):
                times(node, _gain_columns(op, gain))
    weights = {name: graph.op(name).weight * m for name, m in multipliers.items()}
    builder = graph.edit()
    for name, weight in weights.items():
        op = graph.op(name)
        builder.replace(name, dataclasses.replace(op, weight=owned(weight), bias=biases.get(name, op.bias)))
    builder.metadata = {**builder.metadata, "channel_gains": {k: [float(x) for x in g] for k, g in gains.items()}}
    return builder.build()
