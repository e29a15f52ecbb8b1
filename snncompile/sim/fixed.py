"""The exact fixed-point simulator: Loihi 2 integer arithmetic as Lava 0.10 computes it, batched.

Bit-exactness rules (shared DESIGN §5): neuron state is held in int64 tensors and updated with
the shifts, wraps and clips of Lava's PyLifModelBitAcc; synaptic sums run as float64 matmul or
convolution (exact: every partial sum is an integer far below 2**53) and are rounded back to
int64 at once, so neither the summation order, the batch size nor the device changes a bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.errors import SnnCompileError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import BiasEncoder, FixedConv2d, FixedDense, LoihiNeuron, Output, Reset
from snncompile.sim.ann import encode_inputs
from snncompile.sim.trace import Trace

DECAY_SHIFT = 12
DECAY_UNITY = 1 << DECAY_SHIFT
ACT_SHIFT = 6
VTH_SHIFT = 6


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def decay(x: torch.Tensor, keep: int) -> torch.Tensor:
    """sign(x·keep) · (|x·keep| >> 12): Lava's decay, rounding toward zero."""
    prod = x * keep
    return torch.sign(prod) * (prod.abs() >> DECAY_SHIFT)


@dataclass
class LayerStats:
    """Overflow accounting per neuron layer, summed over samples and steps."""

    v_clipped: int = 0  # v clipped at +(2**23 − 1)
    v_clipped_low: int = 0  # v clipped at −(2**23 − 1): a silent neuron driven far below zero
    u_wrapped: int = 0  # u wrapped around 24 bits
    a_in_overflow: int = 0  # synaptic input beyond the declared 16 bits (Lava does not wrap it)
    conv_wrapped: int = 0  # a conv output wrapped at 24 bits (summed over the conv feeding it)
    bias_saturated: int = 0  # host input beyond the bias format
    readout_spikes: int = 0  # a readout neuron crossed its (maximum) threshold
    spikes: int = 0

    @property
    def saturations(self) -> int:
        return (
            self.v_clipped + self.v_clipped_low + self.u_wrapped + self.a_in_overflow + self.conv_wrapped
            + self.bias_saturated + self.readout_spikes
        )

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"saturations": self.saturations}


@dataclass
class FixedResult:
    trace: Trace
    stats: dict[str, LayerStats] = field(default_factory=dict)


class _Neuron:
    """State and constants of one LoihiNeuron layer on a device."""

    def __init__(self, op: LoihiNeuron, n: int, dev: torch.device, bias: torch.Tensor | None, target):
        shape = (n,) + op.vth.shape
        self.op = op
        self.u = torch.zeros(shape, dtype=torch.int64, device=dev)
        self.v = torch.tensor(op.v_init, device=dev).expand(shape).clone()
        if bias is None:
            bias = torch.tensor(op.bias_mant, device=dev) << torch.tensor(op.bias_exp, device=dev)
        self.bias = bias
        self.vth = torch.tensor(op.vth, device=dev) << VTH_SHIFT
        self.keep_u = DECAY_UNITY - (op.du + 1)
        self.keep_v = DECAY_UNITY - op.dv
        self.u_max = 2 ** (target.state.bits - 1)
        self.v_max = self.u_max - 1
        self.a_fmt = target.a_in

    def step(self, a_in: torch.Tensor, stats: LayerStats) -> torch.Tensor:
        stats.a_in_overflow += int(((a_in > self.a_fmt.max) | (a_in < self.a_fmt.min)).sum())
        cur = decay(self.u, self.keep_u) + (a_in << ACT_SHIFT)
        wrapped = torch.where(cur > self.u_max, cur - 2 * self.u_max, cur)
        wrapped = torch.where(wrapped <= -self.u_max, cur + 2 * self.u_max, wrapped)
        stats.u_wrapped += int((wrapped != cur).sum())
        self.u = wrapped
        volt = decay(self.v, self.keep_v) + self.u + self.bias
        self.v = volt.clamp(-self.v_max, self.v_max)
        stats.v_clipped += int((volt > self.v_max).sum())
        stats.v_clipped_low += int((volt < -self.v_max).sum())
        spikes = self.v > self.vth
        n_spikes = int(spikes.sum())
        if self.op.readout:
            stats.readout_spikes += n_spikes
        else:
            stats.spikes += n_spikes
        if self.op.reset is Reset.ZERO:
            self.v = torch.where(spikes, torch.zeros_like(self.v), self.v)
        else:
            self.v = self.v - spikes.to(torch.int64) * self.vth
        return spikes


def _synapse(op, spikes: torch.Tensor, stats: LayerStats) -> torch.Tensor:
    """Integer synaptic input caused by ``spikes`` (N, *in shape) -> (N, *out shape)."""
    s = spikes.to(torch.float64)
    w = torch.tensor(op.weight, dtype=torch.float64, device=s.device)
    if isinstance(op, FixedDense):
        acc = torch.round(s.reshape(s.shape[0], -1) @ w.T).to(torch.int64)
        e = op.weight_exp
        return acc << e if e > 0 else acc >> -e
    if isinstance(op, FixedConv2d):
        acc = torch.round(F.conv2d(s, w, None, op.stride, op.padding, op.dilation, op.groups)).to(torch.int64)
        half = 2 ** (op.output_format.bits - 1)
        wrapped = torch.remainder(acc + half, 2 * half) - half
        stats.conv_wrapped += int((wrapped != acc).sum())
        return wrapped
    raise SnnCompileError(f"{op.kind.value} is not a fixed-point synapse")


def simulate(
    graph: Graph,
    x: np.ndarray,
    steps: int,
    *,
    target=None,
    device: str | None = None,
    record: bool = True,
    encoded: dict | None = None,
) -> FixedResult:
    """Run a fixed-point graph for ``steps`` steps on a batch ``x`` (N, *input shape).

    ``record`` keeps every neuron's spikes and v at every step (memory: N·steps·neurons·9 bytes);
    without it only the outputs and the statistics are kept. ``encoded`` is the host-side input
    encoding (computed with ``encode_inputs`` when not given).
    """
    if target is None:
        from snncompile.targets.loihi2 import LOIHI2 as target
    dev = torch.device(device or default_device())
    n = len(x)
    if encoded is None:
        encoded = encode_inputs(graph, x)
    neurons: dict[str, _Neuron] = {}
    stats: dict[str, LayerStats] = {}
    synapses: list[str] = []
    feeds: dict[str, list[str]] = {}
    for name, op in graph.nodes():
        if isinstance(op, LoihiNeuron):
            stats[name] = LayerStats()
            bias = None
            feeds[name] = []
            for src in graph.inputs(name):
                if isinstance(graph.op(src), BiasEncoder):
                    mant, exp, sat = encoded[src]
                    stats[name].bias_saturated += sat
                    bias = torch.tensor(mant, device=dev) << torch.tensor(exp, device=dev)
                else:
                    feeds[name].append(src)
            neurons[name] = _Neuron(op, n, dev, bias, target)
        elif isinstance(op, (FixedDense, FixedConv2d)):
            synapses.append(name)
    buffers = {
        s: torch.zeros((n,) + graph.shape(s), dtype=torch.int64, device=dev) for s in synapses
    }
    trace = Trace(steps=steps)
    rec_s = {k: [] for k in neurons} if record else None
    rec_v = {k: [] for k in neurons} if record else None
    for _ in range(steps):
        spikes = {}
        for name, neuron in neurons.items():
            a_in = torch.zeros_like(neuron.v)
            for src in feeds[name]:
                a_in = a_in + buffers[src]
            spikes[name] = neuron.step(a_in, stats[name])
            if record:
                rec_s[name].append(spikes[name].to(torch.int8).cpu())
                rec_v[name].append(neuron.v.cpu())
        for s in synapses:
            (pre,) = graph.inputs(s)
            consumer = graph.users(s)[0]
            buffers[s] = _synapse(graph.op(s), spikes[pre], stats[consumer])
    if record:
        trace.spikes = {k: torch.stack(v, 1).numpy() for k, v in rec_s.items()}
        trace.v = {k: torch.stack(v, 1).numpy() for k, v in rec_v.items()}
    for out in graph.find(Output):
        (src,) = graph.inputs(out)
        trace.outputs[out] = neurons[src].v.cpu().numpy()
    return FixedResult(trace=trace, stats=stats)


def output_values(graph: Graph, result: FixedResult) -> np.ndarray:
    """The (single) output in float units: the readout's v divided by its v_scale."""
    (out,) = graph.output_names()
    (src,) = graph.inputs(out)
    return result.trace.outputs[out] / graph.op(src).v_scale
