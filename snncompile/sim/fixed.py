"""The exact fixed-point simulator: Loihi 2 integer arithmetic as Lava 0.10 computes it, batched.

Bit-exactness rules (shared DESIGN §5): neuron state holds integers, in int64 tensors (float32
where a bound proves it exact, below), updated with the shifts, wraps and clips of Lava's
PyLifModelBitAcc; synaptic sums run as float matmul or convolution on integer values, so
neither the summation order, the batch size nor the device changes a bit. Which float, per
synapse, a static bound decides (``sum_dtypes``): a sum of 0/1 spikes times integer weights has
every partial sum, in any order, at most the synapse's largest absolute row sum of weights
(``sum_bound``). Below 2**24 every such partial sum is an integer float32 holds exactly, so
float32 is exact there (oneDNN's and BLAS's fast paths); from 2**24 on, float64 (exact below
2**53). TF32 and bfloat16 are switched off for the simulator's own ops (``_ieee_float32``) and
the caller's settings restored after. On CUDA a float32 convolution runs without cuDNN (im2col
and a cuBLAS GEMM): cuDNN may pick a Winograd or FFT kernel, whose transformed-domain sums are
not integers and whose float32 error no bound here limits. Float rather than int64 kernels on
every device: torch has no int64 matmul or convolution on CUDA, and on the CPU its int64
kernels are slower than float64 BLAS (measured: int64 matmul about 6x, int64 conv2d about 3x
slower).

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
- An IF neuron layer (du = 4095 and dv = 0: no decay product) fed only by float32
  sums without a wrap, whose |v| + |u| + |bias| stays below 2**24 by the bounds above (no u
  wrap), holds v in float32: every value it forms is then an integer float32 holds exactly, so
  its adds, threshold test and reset are exact, and its synapses hand it their float32 sums and
  read its float32 0/1 spikes without a conversion (float32 elementwise work is several times
  cheaper than int64 on the CPU). Traces, counts and outputs are int64 as before.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.errors import SnnCompileError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import (BiasEncoder, FixedConv2d, FixedDense, Flatten, LoihiNeuron, Output, Reset,
                               effective_weight)
from snncompile.sim.ann import encode_inputs
from snncompile.sim.snn import signed_spikes
from snncompile.sim.trace import Trace

DECAY_SHIFT = 12
DECAY_UNITY = 1 << DECAY_SHIFT
ACT_SHIFT = 6
VTH_SHIFT = 6


# float32 holds every integer of magnitude up to 2**24 exactly; a sum whose partial sums all
# stay below it is exact in float32.
FLOAT32_EXACT = 2**24


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


def _layout(dev: torch.device, ndim: int) -> torch.memory_format:
    """The memory layout of a (N, C, H, W) tensor in the simulator: channels-last on the CPU,
    where oneDNN's convolutions run 1.5-3x faster in it (ResNet-20's 3x3 and strided 1x1 convs
    on 256 samples, 2 threads; the sums are the same integers, exact in any order); torch's own
    layout elsewhere and for other ranks. Only strides change: every value is where it was."""
    return torch.channels_last if ndim == 4 and _on_host(dev) else torch.contiguous_format


def _dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` with its dimensions in memory order (a view): for whole-tensor reductions, whose
    result does not depend on the order, without copying a channels-last tensor first."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1)
    return x


def _host(x: torch.Tensor) -> np.ndarray:
    """An int64 numpy array of ``x`` in C order, whatever its device and layout."""
    return x.to("cpu", torch.int64, memory_format=torch.contiguous_format).numpy()


def _train(steps: int, n: int, shape: tuple, dev: torch.device, dtype=torch.bool) -> torch.Tensor:
    """A host buffer for a neuron's spikes at every step, (steps, N, *shape) bool (int8 for
    ``Reset.SIGNED``'s −1 / 0 / +1: ``dtype``), each step in the layout the simulator keeps the
    neuron in on ``dev`` (``_layout``), so that writing a step and replaying it copy without
    reordering."""
    if _layout(dev, 1 + len(shape)) == torch.channels_last:
        c, h, w = shape
        return torch.empty((steps, n, h, w, c), dtype=dtype).permute(0, 1, 4, 2, 3)
    return torch.empty((steps, n) + tuple(shape), dtype=dtype)


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
    spikes: int = 0  # spikes sent (+1 and, Reset.SIGNED, −1)
    negative_spikes: int = 0  # of those, −1 spikes (Reset.SIGNED)

    @property
    def saturations(self) -> int:
        return (
            self.v_clipped + self.v_clipped_low + self.u_wrapped + self.a_in_overflow + self.conv_wrapped
            + self.bias_saturated + self.readout_spikes
        )

    def as_dict(self) -> dict:
        # (the −1 spikes are reported beside the overflow counters, not among them)
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "negative_spikes"} \
            | {"saturations": self.saturations}


@dataclass
class FixedResult:
    trace: Trace
    stats: dict[str, LayerStats] = field(default_factory=dict)
    # with ``count_spikes``: per layer, spikes per neuron over all steps, and over the steps whose
    # spikes reach the next layer within the run (0 .. T−2: a synapse delays by one step)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    counts_delivered: dict[str, np.ndarray] = field(default_factory=dict)
    steps: int = 0  # how many steps the run lasted
    # with ``keep``: per kept layer, its spikes at every step, (steps, N, *shape) bool (int8
    # for Reset.SIGNED), on the CPU
    trains: dict[str, torch.Tensor] = field(default_factory=dict)


class _Counts:
    """Per-step counts of one layer as device tensors: read once, after the last step."""

    def __init__(self):
        self.parts: dict[str, list[torch.Tensor]] = {}

    def add(self, key: str, flags: torch.Tensor) -> None:
        if flags.dtype == torch.float32 and flags.numel() < FLOAT32_EXACT:
            # float32 0/1 spikes: every partial sum is an integer below 2**24, so the sum is
            # exact in any order (and several times faster than count_nonzero on floats)
            count = _dense(flags).sum().to(torch.int64)
        else:
            count = torch.count_nonzero(_dense(flags))
        self.parts.setdefault(key, []).append(count)


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


def sum_bound(op: FixedDense | FixedConv2d) -> int:
    """The largest |partial sum| the float kernel of a synaptic op can form, in any order.

    Its inputs are 0/1 spikes (a synapse reads a LoihiNeuron: ``_spike_source``), so a partial
    sum over any subset of a fan-in is at most the largest absolute row sum of the weights the
    kernel holds (a Dense's left shift folded into them). Graded inputs would multiply this by
    their largest |value|.
    """
    peak = _abs_row_sum(op.weight)
    if int(op.weight_exp) > 0:
        return peak << int(op.weight_exp)
    return peak


def sum_dtype(op: FixedDense | FixedConv2d) -> torch.dtype:
    """float32 where ``sum_bound`` proves it exact, else float64."""
    return torch.float32 if sum_bound(op) < FLOAT32_EXACT else torch.float64


def sum_dtypes(graph: Graph) -> dict[str, str]:
    """Per synaptic op of a fixed-point graph, the float type its exact sum runs in."""
    return {name: "float32" if sum_dtype(graph.op(name)) == torch.float32 else "float64"
            for name in graph.find((FixedDense, FixedConv2d))}


@contextmanager
def _ieee_float32():
    """float32 matmul and convolution at full precision (no TF32, no bfloat16) inside the
    simulator, whatever the caller chose; the caller's settings are restored after."""
    backends = torch.backends
    precision = torch._C._get_fp32_precision_getter
    ops = (("mkldnn", "matmul"), ("mkldnn", "conv"), ("cuda", "matmul"), ("cuda", "conv"))
    saved = (torch.get_float32_matmul_precision(), backends.cudnn.allow_tf32,
             [precision(*op) for op in ops])
    torch.set_float32_matmul_precision("highest")  # cuBLAS without TF32, oneDNN without bf16
    backends.cudnn.allow_tf32 = False
    torch._C._set_fp32_precision_setter("mkldnn", "conv", "ieee")
    try:
        yield
    finally:
        # legacy flags first: setting them rewrites the newer per-backend ones
        torch.set_float32_matmul_precision(saved[0])
        backends.cudnn.allow_tf32 = saved[1]
        for op, value in zip(ops, saved[2]):
            torch._C._set_fp32_precision_setter(*op, value)


class _Synapse:
    """A FixedDense or FixedConv2d on a device: integer synaptic input from 0/1 spikes."""

    def __init__(self, graph: Graph, name: str, dev: torch.device):
        op = graph.op(name)
        self.op = op
        # Off the CPU a library may pick a float64 kernel that sums in a transformed domain (an
        # FFT convolution, say): its error is far below 0.5, and rounding restores the integer.
        self.round = not _on_host(dev)
        self.pre = _spike_source(graph, name)
        self.consumer = graph.users(name)[0]
        self.dtype = sum_dtype(op)
        # cuDNN's float32 Winograd and FFT kernels are not exact; torch's own CUDA convolution
        # (im2col and a GEMM) sums products directly.
        self.no_cudnn = self.dtype == torch.float32 and dev.type == "cuda"
        peak = sum_bound(op)  # the weights' largest row sum, a left shift applied
        if isinstance(op, FixedDense):
            exp = int(op.weight_exp)
            # A left shift folds into the weights (exact: peak << exp is sum_bound, below 2**24
            # in float32, else far below 2**53); a right shift must floor the integer sum, so it
            # stays after the sum.
            weight = np.asarray(op.weight, dtype=np.float64) * 2.0 ** max(exp, 0)
            self.weight = torch.tensor(weight, dtype=self.dtype, device=dev)
            self.right_shift = max(-exp, 0)
            self.bound = peak
            self.half = None
            self.wraps = False
        elif isinstance(op, FixedConv2d):
            # a non-negative exponent, folded into the weights (Lava's conv gets them so)
            self.layout = _layout(dev, 4)
            self.weight = torch.tensor(effective_weight(op), dtype=self.dtype,
                                       device=dev).contiguous(memory_format=self.layout)
            self.half = 2 ** (op.output_format.bits - 1)
            self.right_shift = 0
            self.wraps = peak >= self.half
            self.bound = self.half if self.wraps else peak
        else:
            raise SnnCompileError(f"{op.kind.value} is not a fixed-point synapse")
        # what the consumer's state holds (simulate sets float32 for an exact-float32 neuron,
        # which only a float32 sum without a wrap feeds)
        self.out_dtype = torch.int64

    @property
    def float_output(self) -> bool:
        """Whether its integer input can stay a float32 tensor (exact, no wrap to apply)."""
        return self.dtype == torch.float32 and not self.wraps

    def _conv(self, s: torch.Tensor) -> torch.Tensor:
        op = self.op
        if not self.no_cudnn:
            return F.conv2d(s, self.weight, None, op.stride, op.padding, op.dilation, op.groups)
        with torch.backends.cudnn.flags(enabled=False, allow_tf32=False):
            return F.conv2d(s, self.weight, None, op.stride, op.padding, op.dilation, op.groups)

    def __call__(self, spikes: torch.Tensor, counts: _Counts) -> torch.Tensor:
        """Integer synaptic input caused by ``spikes`` (N, *in shape) -> (N, *out shape)."""
        if self.half is None:
            s = spikes.to(self.dtype)
            acc = F.linear(s.reshape(s.shape[0], -1), self.weight)
        else:
            acc = self._conv(spikes.to(self.dtype, memory_format=self.layout))
        if self.round:
            acc = acc.round_()
        if self.out_dtype == torch.float32:
            # floor(acc / 2**k) exactly: scaling by a power of two keeps the integer's bits
            return acc.mul_(2.0 ** -self.right_shift).floor_() if self.right_shift else acc
        acc = acc.to(torch.int64)
        if self.half is None:
            return acc >> self.right_shift if self.right_shift else acc
        if not self.wraps:
            return acc
        wrapped = torch.remainder(acc + self.half, 2 * self.half) - self.half
        counts.add("conv_wrapped", wrapped != acc)
        return wrapped


def _spike_dtype(op) -> torch.dtype:
    """How a neuron's spikes are kept on the host: bool, int8 for ``Reset.SIGNED``'s −1 / 0 / +1."""
    return torch.int8 if getattr(op, "reset", None) is Reset.SIGNED else torch.bool


def _spike_source(graph: Graph, name: str) -> str:
    """The LoihiNeuron whose spikes a synapse reads (Flattens in between are views)."""
    (src,) = graph.inputs(name)
    while isinstance(graph.op(src), Flatten):
        (src,) = graph.inputs(src)
    if not isinstance(graph.op(src), LoihiNeuron):
        raise SnnCompileError(f"node '{name}': a fixed-point synapse must read a LoihiNeuron's spikes")
    return src


class _Neuron:
    """State and constants of one LoihiNeuron layer on a device.

    The state is int64, or float32 where a static bound proves every value the step forms is
    an integer of magnitude below 2**24 (``exact_float32``): then all its additions, the
    threshold test and the resets are exact in float32, at a fraction of int64's cost. Its
    spikes are then float32 0/1 (what a float32 synapse consumes), else bool.
    """

    def __init__(self, op: LoihiNeuron, n: int, dev: torch.device, bias: np.ndarray | None,
                 fan_in: int | None, steps: int, target, float_inputs: bool = False):
        """``bias``: the encoded per-sample bias (N, *shape), else the op's own; ``fan_in``:
        the largest |a_in| its synapses can deliver, None when no synapse feeds it;
        ``float_inputs``: every synapse feeding it can deliver its a_in as exact float32."""
        shape = (n,) + op.vth.shape
        layout = _layout(dev, len(shape))
        self.op = op
        # On the CPU reading a min/max costs no stall, so overflow tests and clips run only in
        # the steps that need them; on CUDA that read would block the queue: they always run.
        self.lazy = _on_host(dev)
        if bias is None:
            bias = np.left_shift(np.asarray(op.bias_mant, dtype=np.int64), np.asarray(op.bias_exp, dtype=np.int64))
        bias_bound = int(np.abs(bias).max()) if bias.size else 0
        self.keep_u = DECAY_UNITY - (op.du + 1)
        self.keep_v = DECAY_UNITY - op.dv
        self.u_max = 2 ** (target.state.bits - 1)
        self.v_max = self.u_max - 1
        self.a_fmt = target.a_in
        # Without a synapse u stays 0 (it starts at 0 and decays toward 0): no u at all.
        self.fed = fan_in is not None
        fan_in = fan_in or 0
        self.check_a_in = fan_in > self.a_fmt.max or -fan_in < self.a_fmt.min
        # |u| <= 64·fan_in·sum_k (keep_u/4096)**k < 64·fan_in·4096/(du + 1), rounding toward 0.
        u_bound = -(-(fan_in << ACT_SHIFT) * DECAY_UNITY // (op.du + 1))
        self.check_u = u_bound >= self.u_max
        v0 = int(np.abs(op.v_init).max()) if op.v_init.size else 0
        # Decays and resets only shrink |v|, so |v[t]| <= |v_init| + t·(max|u| + max|bias|);
        # after a u wrap (not a modulo) no bound is kept.
        self.check_v = self.check_u or v0 + steps * (u_bound + bias_bound) > self.v_max
        vth_bound = int(np.max(op.vth, initial=0)) << VTH_SHIFT
        # float32: no decay product (du = 4095, and dv = 0: decays by their shortcuts), no u
        # wrap, and |v| + |u| + |bias| below 2**24, |v| being at most max(|v_init|, v_max).
        self.dtype = torch.float32 if (
            (float_inputs or not self.fed) and (self.keep_u == 0 or not self.fed)
            and self.keep_v in (0, DECAY_UNITY) and not self.check_u
            and max(v0, self.v_max) + u_bound + bias_bound < FLOAT32_EXACT and vth_bound < FLOAT32_EXACT
        ) else torch.int64
        self.bias = None
        if bias_bound:  # (N, *shape) per sample, else (*shape): as (1, *shape), in v's layout
            bias = torch.tensor(bias, dtype=self.dtype, device=dev)
            self.bias = bias.reshape((-1,) + shape[1:]).contiguous(memory_format=layout)
        self.v = torch.tensor(op.v_init, dtype=self.dtype, device=dev).expand(shape).clone(memory_format=layout)
        # Full-size, same dtype: torch's bool-by-int64 broadcast multiply is ~10x slower.
        vth = torch.tensor(op.vth, dtype=torch.int64, device=dev) << VTH_SHIFT
        self.vth = vth.to(self.dtype).expand(shape).contiguous(memory_format=layout)
        # u is state only where it decays or may wrap; with du = 4095 and no wrap it is
        # a_in·64 each step, added to v directly.
        self.u = torch.zeros_like(self.v) if self.fed and (self.keep_u or self.check_u) else None
        # float32 spikes are written into one buffer, reused: a step's spikes are read (by the
        # synapses, the recorder, the counts) before the next step writes it.
        self.spikes = torch.empty_like(self.v) if self.exact_float32 else None
        # Reset.SIGNED: the sum of the spikes sent so far (at most ``steps`` in magnitude)
        self.sent = torch.zeros_like(self.v) if op.reset is Reset.SIGNED else None

    @property
    def exact_float32(self) -> bool:
        return self.dtype == torch.float32

    def _may_leave(self, x: torch.Tensor, low: int, high: int) -> bool:
        """False when ``x`` is known to lie in [low, high]."""
        if not self.lazy:
            return True
        if x.numel() == 0:
            return False
        least, most = torch.aminmax(_dense(x))
        return bool(least < low) or bool(most > high)

    def step(self, a_in: torch.Tensor | None, counts: _Counts) -> torch.Tensor:
        # v is replaced at the end of the step, so v (or its decayed copy) is updated in place.
        volt = _decayed(self.v, self.keep_v)
        if self.fed:
            if self.check_a_in and self._may_leave(a_in, self.a_fmt.min, self.a_fmt.max):
                counts.add("a_in_overflow", (a_in > self.a_fmt.max) | (a_in < self.a_fmt.min))
            if self.u is None:  # u = a_in << 6, needed in this step only
                volt = a_in * (1 << ACT_SHIFT) if volt is None else volt.add_(a_in, alpha=1 << ACT_SHIFT)
            else:
                cur = a_in << ACT_SHIFT
                decayed = _decayed(self.u, self.keep_u)
                if decayed is not None:
                    cur = cur.add_(decayed)
                if self.check_u and self._may_leave(cur, 1 - self.u_max, self.u_max):
                    wrapped = torch.where(cur > self.u_max, cur - 2 * self.u_max, cur)
                    wrapped = torch.where(wrapped <= -self.u_max, cur + 2 * self.u_max, wrapped)
                    counts.add("u_wrapped", wrapped != cur)
                    cur = wrapped
                self.u = cur
                volt = cur.clone() if volt is None else volt.add_(cur)
        if self.bias is not None:
            volt = self.bias.expand_as(self.v).clone() if volt is None else volt.add_(self.bias)
        if volt is None:
            volt = torch.zeros_like(self.v)
        if self.check_v and self._may_leave(volt, -self.v_max, self.v_max):
            counts.add("v_clipped", volt > self.v_max)
            counts.add("v_clipped_low", volt < -self.v_max)
            volt = volt.clamp_(-self.v_max, self.v_max)
        if self.sent is not None:  # Reset.SIGNED: −1 / 0 / +1 in v's dtype, exact
            spikes = signed_spikes(volt, self.vth, self.sent)
            counts.add("readout_spikes" if self.op.readout else "spikes", spikes != 0)
            counts.add("negative_spikes", spikes < 0)
            self.v = volt.sub_(spikes * self.vth)
            self.sent += spikes
            return spikes
        if self.exact_float32:
            spikes = torch.gt(volt, self.vth, out=self.spikes)
            counts.add("readout_spikes" if self.op.readout else "spikes", spikes)
            # v − s·vth (subtract) or v − s·v (zero): exact, one pass
            self.v = volt.addcmul_(spikes, volt if self.op.reset is Reset.ZERO else self.vth, value=-1)
            return spikes
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
    replay: dict[str, torch.Tensor] | None = None,
    keep: set[str] | frozenset = frozenset(),
) -> FixedResult:
    """Run a fixed-point graph for ``steps`` steps on a batch ``x`` (N, *input shape).

    ``record`` keeps every neuron's spikes and v at every step (memory: N·steps·neurons·9 bytes);
    without it only the outputs and the statistics are kept. ``encoded`` is the host-side input
    encoding (computed with ``encode_inputs`` when not given). ``count_spikes`` keeps each
    neuron's spike count per sample (what calibration needs, at a fraction of ``record``'s memory).
    ``replay``: neuron -> spikes (≥ steps, N, *shape) it sends instead of computing them (a
    layer's recorded sources, so that one layer is simulated alone: passes.calibrate.Layerwise);
    a replayed neuron has no statistics but is counted. ``keep``: neurons whose spikes at every
    step ``FixedResult.trains`` returns (bool, host memory N·steps·neurons bytes).
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
    with torch.inference_mode(), _ieee_float32():
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
            float_inputs = all(synapses[s].float_output for s in feeds[name])
            neurons[name] = _Neuron(op, n, dev, bias, fan_in, steps, target, float_inputs)
        for synapse in synapses.values():
            synapse.out_dtype = neurons[synapse.consumer].dtype
        # Each synapse delivers at step t what its source sent at step t − 1: zero at step 0.
        buffers = {s: torch.zeros((n,) + graph.shape(s), dtype=syn.out_dtype, device=dev)
                   for s, syn in synapses.items()}
        recorder = _Recorder(neurons, steps, dev) if record else None
        # float32 counts of float32 spikes: exact (at most ``steps``), int64 once read
        tally = {k: torch.zeros_like(nr.v, dtype=nr.dtype if steps < FLOAT32_EXACT else torch.int64)
                 for k, nr in neurons.items()} \
            if count_spikes else {}
        delivered = {}
        replay = replay or {}
        trains = {k: _train(steps, n, graph.shape(k), dev, _spike_dtype(graph.op(k))) for k in keep}
        for t in range(steps):
            spikes = {}
            for name, neuron in neurons.items():
                if name in replay:
                    # (a step of a kept train is in the neuron's layout already: ``_train``)
                    spikes[name] = replay[name][t].to(device=dev, dtype=neuron.dtype)
                    if count_spikes:
                        if t == steps - 1:
                            delivered[name] = tally[name].clone()
                        tally[name] += spikes[name]
                    continue
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
                if name in trains:
                    trains[name][t] = spikes[name].to("cpu", trains[name].dtype)
            for s, synapse in synapses.items():
                buffers[s] = synapse(spikes[synapse.pre], counts[synapse.consumer])
        trace = Trace(steps=steps)
        for out in graph.find(Output):
            (src,) = graph.inputs(out)
            trace.outputs[out] = _host(neurons[src].v)
        _read_counts(counts, stats)
        if recorder is not None:
            recorder.fill(trace)
    for name in replay:
        stats.pop(name, None)
    result = FixedResult(trace=trace, stats=stats, steps=steps, trains=trains)
    if count_spikes:
        result.counts = {k: _host(v) for k, v in tally.items()}
        result.counts_delivered = {k: _host(v) for k, v in delivered.items()}
    return result


def output_values(graph: Graph, result: FixedResult) -> np.ndarray:
    """The (single) output in float units: the readout's v divided by its v_scale."""
    (out,) = graph.output_names()
    (src,) = graph.inputs(out)
    return result.trace.outputs[out] / graph.op(src).v_scale
