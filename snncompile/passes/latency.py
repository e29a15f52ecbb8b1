"""Latency as part of the contract: each synaptic layer delays by one step; the run lasts T + L.

On Loihi (and in Lava and the reference simulator) a synapse delivers at step t what its source
sent at step t − 1, so a neuron ``d`` synaptic layers from the host hears its first input at step d
(its *depth*; the host-fed first layer has depth 0). With L the depth of the readout along its
longest path, ``--steps T`` means T steps of evidence at the readout: every simulation (float SNN,
reference, Lava, the run bundle) lasts T + L steps (``total_steps``).

A neuron's own bias (Loihi adds ``bias_mant << bias_exp`` to v every step) would integrate during
the d steps before its input arrives, which the delay-free model never does. ``CompensateDelay``
starts such a neuron d·bias lower: v_init' = v_init − d·bias, so that v equals v_init exactly when
its input arrives and, from there on, the neuron runs the delay-free model's trajectory shifted by
d steps. Exact for neurons without leak (IF, the integrator readout) whenever no spike can occur
before the input arrives: v only moves from v_init' towards v_init, so the condition is
max(v_init', v_init) ≤ vth (always true for bias ≥ 0, where v_init ≤ vth). For a leaky neuron
(dv > 0) v_init' is the exact integer preimage of v_init under d steps of Lava's decay-and-add
(searched; monotone), or the nearest when none exists.

A negative bias over many steps would need v_init' above the threshold (d·|bias| > vth − v_init),
so the neuron would fire before its input. Such an IF layer's bias is *gated* instead: it moves
onto synapses from a clock, a chain of neuron layers (one neuron per pixel, so a 1×1 convolution
reaches every channel; level 0 has no input and fires every step from step 0, level j fires from
step j), and the layer's synapses from level d − 1 deliver the bias from step d, exactly when the
float model starts it. The synapses carry the bias rounded down to a multiple of 128 (weight << 6,
even weights; several synapses where one weight is too small, with an exponent for Dense), the
neuron keeps the remainder 0 ≤ r < 128 and v_init' = v_init − d·r − (later synapses' terms): the
remainder only lowers v_init, so it never brings it to the threshold. (Rounded to the nearest
multiple, r could be −64, and d·64 exceeds vth·32 where vth is small and the layer deep:
MobileNetV2's depthwise layers at T=16, vth 17-20 at depths near 30, left 322 neurons inexact,
each below θ/2 when its input arrived; fixed point − float SNN −0.84 → −0.65 pp over 1,541
samples with r ≥ 0, and no neuron inexact.) Measured on
ResNet-20 at T=8 and 16 (120 test samples): fixed point 40.0 → 58.3 % and 89.2 → 95.0 % against a
float SNN of 59.2 and 98.3 %; 2,112 clock neurons, no extra core. Neurons where it still cannot be
exact keep the nearest safe v_init' and are counted (``latency.inexact``). The float simulator
delays a synapse's bias with its output, so it needs no compensation; netx files cannot hold an
initial potential, so there the biases integrate early and the report says so.

``graph.metadata["latency"]``: ``steps`` (L), ``first_arrival`` (the readout's shortest path),
per-neuron-layer depths, and the compensation's counts (``compensated``, ``inexact``, ``gated``
neurons, ``gate_synapses``, ``clock_neurons``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from snncompile.ir.graph import Graph
from snncompile.ir.ops import FixedConv2d, FixedDense, LoihiNeuron, Reset
from snncompile.ir.timing import arrivals, depths, latency_steps  # noqa: F401 (re-exported)
from snncompile.passes.quantize import Quantize
from snncompile.sim.fixed import DECAY_UNITY
from snncompile.targets.loihi2 import LOIHI2


def _forward(v: np.ndarray, bias: np.ndarray, keep: int, steps: int) -> np.ndarray:
    """v after ``steps`` steps of Lava's v = decay(v) + bias with no input (u stays 0), unclipped."""
    for _ in range(steps):
        v = np.trunc(v * keep / DECAY_UNITY).astype(np.int64) + bias if keep != DECAY_UNITY else v + bias
    return v


def _leaky_preimage(target: np.ndarray, bias: np.ndarray, keep: int, steps: int, bound: int) -> np.ndarray:
    """The smallest integer v0 in [−bound, bound] with forward(v0) ≥ target (forward is monotone)."""
    lo = np.full(target.shape, -bound, dtype=np.int64)
    hi = np.full(target.shape, bound, dtype=np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        reach = _forward(mid, bias, keep, steps) >= target
        hi = np.where(reach, mid, hi)
        lo = np.where(reach, lo, mid + 1)
    return lo


@dataclass(frozen=True)
class CompensateDelay:
    """Apply the module docstring's v_init shift to every LoihiNeuron of a fixed-point graph."""

    enabled: bool = True  # False: record the latency only (netx: no initial potential)
    target: object = LOIHI2
    # the float SNN the graph was quantized from: where a neuron's synapses arrive at different
    # depths (a residual block's shortcut and main branch), each synapse's own bias waits for its
    # own input, as the float simulator delivers it (measured on ResNet-20 at T=16: 98 % float,
    # 91 % when every bias of a neuron waited only for the shortest path)
    float_graph: Graph | None = None
    # IF layers whose start potential would have to exceed the threshold (a negative bias over
    # many steps): their bias arrives through synapses from a clock that starts at their depth
    gate: bool = True
    name: str = "compensate_delay"

    def __call__(self, graph: Graph) -> Graph:
        times = arrivals(graph)
        outs = [graph.inputs(o)[0] for o in graph.output_names()]
        info = {"steps": max((times[o][1] for o in outs), default=0),  # L, as ir.timing.latency_steps
                "first_arrival": min((times[o][0] for o in outs), default=0), "depths": {},
                "compensated": 0, "inexact": 0, "gated": 0, "gate_synapses": 0,
                "rule": "v_init -= depth * bias" if self.enabled else
                "none: the format holds no initial potential; biases integrate from step 0"}
        builder = graph.edit()
        clocks: dict[tuple, list[str]] = {}  # clock chains by shape, level j fires from step j
        for name, op in graph.nodes():
            if not isinstance(op, LoihiNeuron):
                continue
            depth = times[name][0]
            info["depths"][name] = depth
            bias = np.left_shift(op.bias_mant.astype(np.int64), op.bias_exp.astype(np.int64))
            if not self.enabled or depth == 0 or not np.any(bias):
                continue
            v_max = 2 ** (self.target.state.bits - 1) - 1  # v clips at ±(2**23 − 1)
            vth = op.vth.astype(np.int64) << 6
            v0 = op.v_init.astype(np.int64)
            keep = DECAY_UNITY - op.dv
            later = self._later(graph, name, times, depth, op) if op.dv == 0 else 0
            if op.dv == 0:
                wanted = v0 - depth * bias - later
            else:
                wanted = _leaky_preimage(v0, bias, keep, depth, v_max)
            if op.readout:
                safe = np.clip(wanted, -v_max, v_max)
            else:  # no spike before the input arrives: v stays ≤ vth on the way
                safe = np.clip(wanted, -v_max, np.minimum(vth, v_max))
            inputs = graph.inputs(name)
            if self.gate and op.dv == 0 and not op.readout and np.any(safe != wanted):
                gated = self._gate(builder, graph, name, op, depth, bias, clocks)
                if gated is not None:  # the bias now arrives through synapses, from step depth
                    kicks, op, bias = gated
                    inputs = inputs + kicks
                    wanted = v0 - depth * bias - later
                    safe = np.clip(wanted, -v_max, np.minimum(vth, v_max))
                    info["gated"] += int(np.prod(graph.shape(name)))
                    info["gate_synapses"] += len(kicks)
            exact = (safe == wanted) & (_forward(safe, bias, keep, depth) == v0) if op.dv else (safe == wanted)
            info["compensated"] += int(np.count_nonzero(exact & (bias != 0)))
            info["inexact"] += int(np.count_nonzero(~exact & (bias != 0)))
            builder.replace(name, dataclasses.replace(op, v_init=safe), inputs)
        info["clock_neurons"] = sum(int(np.prod(builder.op(c).vth.shape)) for chain in clocks.values() for c in chain)
        if self.float_graph is not None and self.enabled:
            info["rule"] += "; a synapse arriving later than the first adds (its depth − depth)·its bias"
        builder.metadata = {**builder.metadata, "latency": info}
        return builder.build()

    def _gate(self, builder, graph: Graph, name: str, op: LoihiNeuron, depth: int, bias: np.ndarray,
              clocks: dict) -> tuple[list[str], LoihiNeuron, np.ndarray] | None:
        """Move the layer's bias onto synapses from the clock of level depth − 1 (it fires every
        step from depth − 1, so they deliver from step ``depth``, when the input arrives, as the
        float model starts the bias): (the new synapses, the neuron with the residual bias, that
        residual in v units). A synapse adds weight << 6 to v and weights are even, so the synapses
        carry the bias rounded down to a multiple of 128 and the neuron keeps the rest (0 ≤ r < 128:
        v_init compensates it by starting lower, never nearer vth). None when the bias varies within
        a channel."""
        shape = graph.shape(name)
        if len(shape) == 3:
            per_channel = bias[:, :1, :1]
            if np.any(bias != per_channel):
                return None
            amount = per_channel.reshape(-1)
        else:
            amount = bias.reshape(-1)
        units = 2 * np.floor(amount / 128).astype(np.int64)  # a_in units, even; rounded down: r ≥ 0
        residual = bias - (units.reshape((-1,) + (1,) * (len(shape) - 1)) << 6)
        mant, bexp, saturated = op.bias_format.encode(residual)
        mant, bexp = (np.broadcast_to(a, shape).astype(np.int64) for a in (mant, bexp))
        if saturated or np.any(np.left_shift(mant, bexp) != residual):
            return None
        top = self.target.weight.max  # 254: Lava's 8-bit mixed-sign weights, even
        parts = []  # (weights, exponent): Lava's Conv has no weight exponent, Dense has
        rest = units.copy()
        while np.any(rest):
            exp = 0
            if len(shape) != 3:  # the largest power of two that keeps the weights in range
                exp = max(0, int(np.ceil(np.log2(np.abs(rest).max() / top))))
            w = np.clip(np.trunc(rest / 2.0 ** (exp + 1)).astype(np.int64) * 2, -top, top)
            if not np.any(w):
                exp, w = 0, np.clip(rest, -top, top)
            parts.append((w, exp))
            rest = rest - (w << exp)
        clock = self._clock(builder, op, shape, depth - 1, clocks)
        kicks = []
        for k, (w, exp) in enumerate(parts):
            if len(shape) == 3:
                syn = FixedConv2d(weight=w.reshape(-1, 1, 1, 1), weight_format=self.target.weight,
                                  output_format=self.target.conv_out)
            else:
                syn = FixedDense(weight=w.reshape(-1, 1), weight_exp=exp, weight_format=self.target.weight)
            kicks.append(builder.add(builder.unique_name(f"{name}_bias_gate_{k}"), syn, [clock]))
        return kicks, dataclasses.replace(op, bias_mant=mant, bias_exp=bexp), residual

    def _clock(self, builder, op: LoihiNeuron, shape: tuple, level: int, clocks: dict) -> str:
        """The clock neuron layer of ``level`` for targets of ``shape``: one neuron per pixel
        ((1, H, W), or (1,) for vector layers) that fires at every step from step ``level`` on
        (level 0: v starts at 0, bias 65 > vth·64 = 64, reset to zero: a spike every step; level j:
        the one before through a weight of 2, i.e. 128 > 64)."""
        cshape = (1, *shape[1:]) if len(shape) == 3 else (1,)
        chain = clocks.setdefault(cshape, [])
        tag = "x".join(str(s) for s in shape[1:]) if len(shape) == 3 else "vector"
        while len(chain) <= level:
            j = len(chain)
            neuron = LoihiNeuron(
                vth=np.ones(cshape, np.int64), bias_mant=np.full(cshape, 65 if j == 0 else 0, np.int64),
                bias_exp=np.zeros(cshape, np.int64), reset=Reset.ZERO, v_init=np.zeros(cshape, np.int64),
                vth_format=op.vth_format, bias_format=op.bias_format, decay_format=op.decay_format)
            inputs = []
            if j > 0:
                link = (FixedConv2d(weight=np.full((1, 1, 1, 1), 2), weight_format=self.target.weight,
                                    output_format=self.target.conv_out) if len(shape) == 3 else
                        FixedDense(weight=np.full((1, 1), 2), weight_format=self.target.weight))
                inputs = [builder.add(builder.unique_name(f"bias_clock_{tag}_{j}_in"), link, [chain[-1]])]
            chain.append(builder.add(builder.unique_name(f"bias_clock_{tag}_{j}"), neuron, inputs))
        return chain[level]

    def _later(self, graph: Graph, name: str, times: dict, depth: int, op: LoihiNeuron) -> np.ndarray:
        """Σ over the neuron's synapses arriving after ``depth`` of (their depth − depth) · their
        float bias, in the neuron's integer units (0 without a float graph or such synapses)."""
        fg = self.float_graph
        if fg is None or name not in fg:
            return np.zeros((), dtype=np.int64)
        extra = 0.0
        for s in graph.inputs(name):
            later = times[s][0] - depth
            if later > 0 and s in fg:
                extra = extra + later * Quantize._bias(fg, s)
        return np.rint(np.asarray(extra) * op.v_scale).astype(np.int64)
