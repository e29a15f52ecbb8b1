"""The exact fixed-point simulator: Loihi 2 integer arithmetic as Lava 0.10 computes it, batched.

Bit-exactness rules (shared DESIGN §5): neuron state is held in int64 tensors and updated with
the shifts, wraps and clips of Lava's PyLifModelBitAcc; synaptic sums run as float64 matmul or
convolution (exact: every partial sum is an integer far below 2**53) and go back to int64 at
once, so neither the summation order, the batch size nor the device changes a bit. float64
rather than int64 kernels on every device: torch has no int64 matmul or convolution on CUDA,
and on the CPU its int64 kernels are slower than float64 BLAS (measured: int64 matmul about 6x,
int64 conv2d about 3x slower). Never float32 or TF32 (DESIGN §5).

Speed without giving up a bit:

- Parameters go to the device once; no host-device synchronisation inside the time loop: the
  overflow and spike counts stay device tensors, summed and read once after the last step, and
  recorded spikes and v are copied into preallocated host buffers (pinned, asynchronously, on
  CUDA).
- A check that a static bound proves can never fire is skipped, its count being zero by that
  proof: |a_in| is at most the largest absolute row sum of the weights feeding a neuron, |u| at
  most 64·that·4096/(du + 1), and |v| after t steps at most |v_init| + t·(max|u| + max|bias|);
  when these stay inside the 16-bit a_in, 24-bit u or v formats (or a conv's output format), the
  overflow test, the wrap or the clip are left out. On the CPU, where reading a value costs no
  stall, the remaining ones run only in steps whose min/max leaves the format.
- The decays take their exact shortcuts: decay(x, 0) = 0 and decay(x, 4096) = x, so an IF
  neuron (du = 4095, dv = 0) does no decay work; otherwise decay is one truncating division,
  which equals sign(p)·(|p| >> 12).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.errors import SnnCompileError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import BiasEncoder, FixedConv2d, FixedDense, Flatten, LoihiNeuron, Output, Reset
from snncompile.sim.ann import encode_inputs
from snncompile.sim.trace import Trace

DECAY_SHIFT = 12
DECAY_UNITY = 1 << DECAY_SHIFT
ACT_SHIFT = 6
VTH_SHIFT = 6


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _on_host(dev: torch.device) -> bool:
    """True on the CPU: reading a tensor's value there costs no queue stall, and torch's float64
    CPU kernels (BLAS gemm, im2col convolution) sum products directly, so their integer results
    are exact as they come. Elsewhere (CUDA) the simulator reads nothing before the end and
    rounds every synaptic sum. Tests patch this to run the CUDA code path on a CPU."""
    return dev.type == "cpu"


def decay(x: torch.Tensor, keep: int) -> torch.Tensor:
    """sign(x·keep) · (|x·keep| >> 12): Lava's decay, rounding toward zero."""
    return torch.div(x * keep, DECAY_UNITY, rounding_mode="trunc")


def _decayed(x: torch.Tensor, keep: int) -> torch.Tensor | None:
    """``decay(x, keep)`` with its exact shortcuts; None stands for zero."""
    if keep == 0:
        return None
    if keep == DECAY_UNITY:
        return x
    return decay(x, keep)


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
    # with ``count_spikes``: per layer, spikes per neuron over all steps, and over the steps whose
    # spikes reach the next layer within the run (0 .. T−2: a synapse delays by one step)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    counts_delivered: dict[str, np.ndarray] = field(default_factory=dict)


class _Counts:
    """Per-step counts of one layer as device tensors: read once, after the last step."""

    def __init__(self):
        self.parts: dict[str, list[torch.Tensor]] = {}

    def add(self, key: str, flags: torch.Tensor) -> None:
        self.parts.setdefault(key, []).append(torch.count_nonzero(flags))


def _read_counts(counts: dict[str, _Counts], stats: dict[str, LayerStats]) -> None:
    """Add every layer's device counts to its LayerStats with a single transfer."""
    keys = [(layer, key) for layer, c in counts.items() for key in c.parts]
    if not keys:
        return
    totals = torch.stack([torch.stack(counts[layer].parts[key]).sum() for layer, key in keys]).tolist()
    for (layer, key), total in zip(keys, totals):
        setattr(stats[layer], key, getattr(stats[layer], key) + int(total))


def _abs_row_sum(weight: np.ndarray) -> int:
    """The largest |sum| one output of a synaptic op can receive in a step (0/1 spikes)."""
    w = np.abs(np.asarray(weight, dtype=np.int64))
    return int(w.reshape(w.shape[0], -1).sum(axis=1).max()) if w.size else 0


class _Synapse:
    """A FixedDense or FixedConv2d on a device: integer synaptic input from 0/1 spikes."""

    def __init__(self, graph: Graph, name: str, dev: torch.device):
        op = graph.op(name)
        self.op = op
        # Off the CPU a library may pick a kernel that sums in a transformed domain (an FFT
        # convolution, say): its error is far below 0.5, and rounding restores the integer.
        self.round = not _on_host(dev)
        self.pre = _spike_source(graph, name)
        self.consumer = graph.users(name)[0]
        peak = _abs_row_sum(op.weight)
        if isinstance(op, FixedDense):
            exp = int(op.weight_exp)
            # A left shift folds into the weights (exact in float64: peak << exp is far below
            # 2**53); a right shift must floor the integer sum, so it stays after the sum.
            weight = np.asarray(op.weight, dtype=np.float64) * 2.0 ** max(exp, 0)
            self.weight = torch.tensor(weight, dtype=torch.float64, device=dev)
            self.right_shift = max(-exp, 0)
            self.bound = peak << exp if exp > 0 else peak
            self.half = None
        elif isinstance(op, FixedConv2d):
            self.weight = torch.tensor(op.weight, dtype=torch.float64, device=dev)
            self.half = 2 ** (op.output_format.bits - 1)
            self.wraps = peak >= self.half
            self.bound = self.half if self.wraps else peak
        else:
            raise SnnCompileError(f"{op.kind.value} is not a fixed-point synapse")

    def __call__(self, spikes: torch.Tensor, counts: _Counts) -> torch.Tensor:
        """Integer synaptic input caused by ``spikes`` (N, *in shape) -> (N, *out shape)."""
        s = spikes.to(torch.float64)
        op = self.op
        if self.half is None:
            acc = F.linear(s.reshape(s.shape[0], -1), self.weight)
        else:
            acc = F.conv2d(s, self.weight, None, op.stride, op.padding, op.dilation, op.groups)
        acc = (acc.round() if self.round else acc).to(torch.int64)
        if self.half is None:
            return acc >> self.right_shift if self.right_shift else acc
        if not self.wraps:
            return acc
        wrapped = torch.remainder(acc + self.half, 2 * self.half) - self.half
        counts.add("conv_wrapped", wrapped != acc)
        return wrapped


def _spike_source(graph: Graph, name: str) -> str:
    """The LoihiNeuron whose spikes a synapse reads (Flattens in between are views)."""
    (src,) = graph.inputs(name)
    while isinstance(graph.op(src), Flatten):
        (src,) = graph.inputs(src)
    if not isinstance(graph.op(src), LoihiNeuron):
        raise SnnCompileError(f"node '{name}': a fixed-point synapse must read a LoihiNeuron's spikes")
    return src


class _Neuron:
    """State and constants of one LoihiNeuron layer on a device."""

    def __init__(self, op: LoihiNeuron, n: int, dev: torch.device, bias: np.ndarray | None,
                 fan_in: int | None, steps: int, target):
        """``bias``: the encoded per-sample bias (N, *shape), else the op's own; ``fan_in``:
        the largest |a_in| its synapses can deliver, None when no synapse feeds it."""
        shape = (n,) + op.vth.shape
        self.op = op
        # On the CPU reading a min/max costs no stall, so overflow tests and clips run only in
        # the steps that need them; on CUDA that read would block the queue: they always run.
        self.lazy = _on_host(dev)
        if bias is None:
            bias = np.left_shift(np.asarray(op.bias_mant, dtype=np.int64), np.asarray(op.bias_exp, dtype=np.int64))
        bias_bound = int(np.abs(bias).max()) if bias.size else 0
        self.bias = torch.tensor(bias, dtype=torch.int64, device=dev) if bias_bound else None
        self.v = torch.tensor(op.v_init, dtype=torch.int64, device=dev).expand(shape).clone()
        # Full-size, same dtype: torch's bool-by-int64 broadcast multiply is ~10x slower.
        vth = torch.tensor(op.vth, dtype=torch.int64, device=dev) << VTH_SHIFT
        self.vth = vth.expand(shape).contiguous()
        self.keep_u = DECAY_UNITY - (op.du + 1)
        self.keep_v = DECAY_UNITY - op.dv
        self.u_max = 2 ** (target.state.bits - 1)
        self.v_max = self.u_max - 1
        self.a_fmt = target.a_in
        # Without a synapse u stays 0 (it starts at 0 and decays toward 0): no u at all.
        self.fed = fan_in is not None
        self.u = torch.zeros(shape, dtype=torch.int64, device=dev) if self.fed else None
        fan_in = fan_in or 0
        self.check_a_in = fan_in > self.a_fmt.max or -fan_in < self.a_fmt.min
        # |u| <= 64·fan_in·sum_k (keep_u/4096)**k < 64·fan_in·4096/(du + 1), rounding toward 0.
        u_bound = -(-(fan_in << ACT_SHIFT) * DECAY_UNITY // (op.du + 1))
        self.check_u = u_bound >= self.u_max
        v0 = int(np.abs(op.v_init).max()) if op.v_init.size else 0
        # Decays and resets only shrink |v|, so |v[t]| <= |v_init| + t·(max|u| + max|bias|);
        # after a u wrap (not a modulo) no bound is kept.
        self.check_v = self.check_u or v0 + steps * (u_bound + bias_bound) > self.v_max

    def _may_leave(self, x: torch.Tensor, low: int, high: int) -> bool:
        """False when ``x`` is known to lie in [low, high]."""
        if not self.lazy:
            return True
        if x.numel() == 0:
            return False
        least, most = torch.aminmax(x)
        return bool(least < low) or bool(most > high)

    def step(self, a_in: torch.Tensor | None, counts: _Counts) -> torch.Tensor:
        # v is replaced at the end of the step, so an undecayed v may be updated in place.
        volt = _decayed(self.v, self.keep_v)
        if self.fed:
            if self.check_a_in and self._may_leave(a_in, self.a_fmt.min, self.a_fmt.max):
                counts.add("a_in_overflow", (a_in > self.a_fmt.max) | (a_in < self.a_fmt.min))
            cur = a_in << ACT_SHIFT
            decayed = _decayed(self.u, self.keep_u)
            if decayed is not None:
                cur = cur + decayed
            if self.check_u and self._may_leave(cur, 1 - self.u_max, self.u_max):
                wrapped = torch.where(cur > self.u_max, cur - 2 * self.u_max, cur)
                wrapped = torch.where(wrapped <= -self.u_max, cur + 2 * self.u_max, wrapped)
                counts.add("u_wrapped", wrapped != cur)
                cur = wrapped
            self.u = cur
        for term in (self.u, self.bias):
            if term is not None:
                volt = term.expand_as(self.v).clone() if volt is None else volt + term
        if volt is None:
            volt = torch.zeros_like(self.v)
        if self.check_v and self._may_leave(volt, -self.v_max, self.v_max):
            counts.add("v_clipped", volt > self.v_max)
            counts.add("v_clipped_low", volt < -self.v_max)
            volt = volt.clamp_(-self.v_max, self.v_max)
        spikes = volt > self.vth
        counts.add("readout_spikes" if self.op.readout else "spikes", spikes)
        if self.op.reset is Reset.ZERO:
            self.v = volt.masked_fill_(spikes, 0)
        else:
            self.v = volt.sub_(spikes * self.vth)
        return spikes


class _Recorder:
    """Every layer's spikes and v, every step, in host buffers filled without synchronising.

    On the CPU each step is written straight into its (N, steps, *shape) slot. From CUDA each
    step is copied asynchronously into pinned time-major buffers (a step is one contiguous
    block, as an asynchronous copy needs), transposed on the host at the end.
    """

    def __init__(self, neurons: dict[str, _Neuron], steps: int, dev: torch.device):
        self.time_major = not _on_host(dev)
        self.dev = dev

        def buffer(nr: _Neuron, dtype: torch.dtype) -> torch.Tensor:
            n, *shape = nr.v.shape
            if self.time_major:
                return torch.empty((steps, n, *shape), dtype=dtype, pin_memory=dev.type == "cuda")
            return torch.empty((n, steps, *shape), dtype=dtype)

        self.spikes = {k: buffer(nr, torch.int8) for k, nr in neurons.items()}
        self.v = {k: buffer(nr, torch.int64) for k, nr in neurons.items()}

    def record(self, t: int, name: str, spikes: torch.Tensor, v: torch.Tensor) -> None:
        if self.time_major:
            self.spikes[name][t].copy_(spikes.to(torch.int8), non_blocking=True)
            self.v[name][t].copy_(v, non_blocking=True)
        else:
            self.spikes[name][:, t] = spikes
            self.v[name][:, t] = v

    def fill(self, trace: Trace) -> None:
        if self.time_major:
            if self.dev.type == "cuda":
                torch.cuda.synchronize(self.dev)
            trace.spikes = {k: np.ascontiguousarray(b.numpy().swapaxes(0, 1)) for k, b in self.spikes.items()}
            trace.v = {k: np.ascontiguousarray(b.numpy().swapaxes(0, 1)) for k, b in self.v.items()}
        else:
            trace.spikes = {k: b.numpy() for k, b in self.spikes.items()}
            trace.v = {k: b.numpy() for k, b in self.v.items()}


def simulate(
    graph: Graph,
    x: np.ndarray,
    steps: int,
    *,
    target=None,
    device: str | None = None,
    record: bool = True,
    encoded: dict | None = None,
    count_spikes: bool = False,
) -> FixedResult:
    """Run a fixed-point graph for ``steps`` steps on a batch ``x`` (N, *input shape).

    ``record`` keeps every neuron's spikes and v at every step (memory: N·steps·neurons·9 bytes);
    without it only the outputs and the statistics are kept. ``encoded`` is the host-side input
    encoding (computed with ``encode_inputs`` when not given). ``count_spikes`` keeps each
    neuron's spike count per sample (what calibration needs, at a fraction of ``record``'s memory).
    """
    if target is None:
        from snncompile.targets.loihi2 import LOIHI2 as target
    dev = torch.device(device or default_device())
    n = len(x)
    if encoded is None:
        encoded = encode_inputs(graph, x)
    stats: dict[str, LayerStats] = {}
    counts: dict[str, _Counts] = {}
    neurons: dict[str, _Neuron] = {}
    feeds: dict[str, list[str]] = {}
    synapses: dict[str, _Synapse] = {}
    with torch.inference_mode():
        for name, op in graph.nodes():
            if isinstance(op, (FixedDense, FixedConv2d)):
                synapses[name] = _Synapse(graph, name, dev)
        for name, op in graph.nodes():
            if not isinstance(op, LoihiNeuron):
                continue
            stats[name] = LayerStats()
            counts[name] = _Counts()
            bias = None
            feeds[name] = []
            for src in graph.inputs(name):
                if isinstance(graph.op(src), BiasEncoder):
                    mant, exp, sat = encoded[src]
                    stats[name].bias_saturated += sat
                    bias = np.left_shift(np.asarray(mant, dtype=np.int64), np.asarray(exp, dtype=np.int64))
                else:
                    feeds[name].append(src)
            fan_in = sum(synapses[s].bound for s in feeds[name]) if feeds[name] else None
            neurons[name] = _Neuron(op, n, dev, bias, fan_in, steps, target)
        # Each synapse delivers at step t what its source sent at step t − 1: zero at step 0.
        buffers = {s: torch.zeros((n,) + graph.shape(s), dtype=torch.int64, device=dev) for s in synapses}
        recorder = _Recorder(neurons, steps, dev) if record else None
        tally = {k: torch.zeros(nr.v.shape, dtype=torch.int64, device=dev) for k, nr in neurons.items()} \
            if count_spikes else {}
        delivered = {}
        for t in range(steps):
            spikes = {}
            for name, neuron in neurons.items():
                a_in = None
                for src in feeds[name]:
                    a_in = buffers[src] if a_in is None else a_in + buffers[src]
                spikes[name] = neuron.step(a_in, counts[name])
                if recorder is not None:
                    recorder.record(t, name, spikes[name], neuron.v)
                if count_spikes:
                    if t == steps - 1:
                        delivered[name] = tally[name].clone()
                    tally[name] += spikes[name]
            for s, synapse in synapses.items():
                buffers[s] = synapse(spikes[synapse.pre], counts[synapse.consumer])
        trace = Trace(steps=steps)
        for out in graph.find(Output):
            (src,) = graph.inputs(out)
            trace.outputs[out] = neurons[src].v.cpu().numpy()
        _read_counts(counts, stats)
        if recorder is not None:
            recorder.fill(trace)
    result = FixedResult(trace=trace, stats=stats)
    if count_spikes:
        result.counts = {k: v.cpu().numpy() for k, v in tally.items()}
        result.counts_delivered = {k: v.cpu().numpy() for k, v in delivered.items()}
    return result


def output_values(graph: Graph, result: FixedResult) -> np.ndarray:
    """The (single) output in float units: the readout's v divided by its v_scale."""
    (out,) = graph.output_names()
    (src,) = graph.inputs(out)
    return result.trace.outputs[out] / graph.op(src).v_scale
