"""Quantize a converted SNN to Loihi 2 fixed point (shared DESIGN §2).

Per neuron layer with float threshold θ, bias b (summed over its synaptic inputs) and input
weights W, one scale s (integer units per float unit of synaptic input) sets every integer:

    w = round(W·s)  (weight format)      vth = round(θ·s)        bias = round(b·s·64) as mant<<exp
    v_int = v_float·s·64                 (a_in enters u shifted by 6, v is compared with vth<<6)

A spiking neuron's initial potential is scaled by the rounded threshold instead (v_float·64·vth/θ),
so that the default θ/2 (passes.convert) is exactly vth·32 on the chip.

s is the largest value for which nothing overflows: max|w| within the weight format, vth within
17 bits, the bias within its mantissa/exponent; then, for a spiking layer, the largest s at or below
it at which θ·s is a whole number (⌊θ·s⌋/θ), so that vth = θ·s exactly. Rounding vth instead scales
every input of the layer, relative to its threshold, by the same factor for every neuron, up to
1 + 1/(2·vth): MobileNetV2's depthwise layers have vth 17-20 at T=16, where that is 3 %, a
systematic error; lowering s by less than 1/vth only makes each weight's own rounding (random in
sign) as much coarser. Measured with exact bias gating (passes.latency), fixed point − float SNN
over 1,541 samples, MobileNetV2 at T=16: −0.65 pp with vth rounded, −0.26 pp with vth exact.

A layer fed by the graph input (host-side W·x + b) gets a BiasEncoder instead, sized so that ``headroom`` × the largest input current seen in the
calibration data fits the bias format. The readout (an integrator, vth at its maximum, never
meant to fire) is sized so that T steps of ``headroom`` × the ANN's largest output on the
calibration data fit v (or, without that record, the hard bound T·(Σ|w| + |bias|)·64 of every
input spiking at once); saturation beyond that is counted by the simulator. Every value clipped
here is counted per layer in ``graph.metadata["quantization"]``: weights (``weight_saturated``),
biases (``bias_saturated``), thresholds (``threshold_clipped``, counted per neuron) and initial
potentials (``v_init_saturated``). The decays of IF and integrator neurons are constants of the
format (du = 4095, dv = 0) and never clip.

A LIF (float: i[t] = alpha·i[t−1] + x[t], v[t] = beta·v[t−1] + i[t]) maps to Loihi's CUBA decays,
whose factors are (4096 − (du + 1))/4096 for u and (4096 − dv)/4096 for v (Lava's
PyLifModelBitAcc, truncating toward zero): du = 4095 − round(4096·alpha), dv = round(4096·(1 −
beta)), both clipped to 0..4095; so a current-free LIF (alpha = 0, snnTorch's Leaky) gets
du = 4095 (u = a_in << 6 each step) and beta = 0 gets dv = 4095 (factor 1/4096: v forgets
everything below 4096 integer units). The rounding of the factor and the truncation of each
decayed v are the LIF's quantization error on top of the weights'. alpha and beta must be
uniform over the layer (one du, dv per population); alpha > 0 with a bias or host input is
refused (the float current filters the bias, Loihi adds it to v unfiltered).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from snncompile.errors import Problem, UnsupportedModelError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import (
    IF,
    LIF,
    MAX_WEIGHT_EXP,
    BiasEncoder,
    Conv2d,
    Dense,
    FixedConv2d,
    FixedDense,
    Input,
    Integrator,
    LoihiNeuron,
    Reset,
    owned,
)
from snncompile.sim.ann import evaluate, one_thread
from snncompile.targets.loihi2 import LOIHI2, Loihi2


def _host_fed(graph: Graph) -> set[str]:
    """The ops whose value is computed from the graph input (on the host): reached from an Input
    and from no neuron (``Graph.descendants``: one walk each, linear in the graph)."""
    return graph.descendants(graph.find(Input)) - graph.descendants([n for n, op in graph.nodes() if op.neuron])


def _decays(op, target: Loihi2) -> tuple[int, int, str | None]:
    """(du, dv, why not) of a neuron: IF and Integrator (4095, 0); a LIF from its alpha, beta."""
    top = int(target.decay.max)
    if not isinstance(op, LIF):
        return top, 0, None
    alpha, beta = np.unique(op.alpha), np.unique(op.beta)
    if alpha.size != 1 or beta.size != 1:
        return top, 0, "alpha and beta must be uniform over the layer (one du, dv per population)"
    du = int(np.clip(top - round(4096 * float(alpha[0])), 0, top))
    dv = int(np.clip(round(4096 * (1 - float(beta[0]))), 0, top))
    return du, dv, None


def _row_l1(op: Dense | Conv2d) -> float:
    """Largest sum of |w| into one neuron (spikes are 0/1, so the largest input per step)."""
    w = np.abs(op.weight)
    return float(w.reshape(w.shape[0], -1).sum(axis=1).max()) if w.size else 0.0


# Exponents are used where they buy at least 2 bits: a synapse op whose weights would span a quarter
# of the mantissas or less (ResNet-20's second convs beside an identity shortcut: 1/18 to 1/2;
# its readout: 1/25). A one-bit gain changed nothing measurable on the digits models and moved a
# trained dense-add LIF SNN by -1.4 pp (5 of 360 test samples), so it is not taken.
EXPONENT_GAIN = 4


@dataclass(frozen=True, eq=False)
class Quantize:
    """Fixed-point lowering for ``target``; ``data`` (calibration inputs) sizes the host input."""

    data: np.ndarray
    steps: int
    target: Loihi2 = LOIHI2
    headroom: float = 2.0
    bias_exp: int | None = None  # fixed exponent for static biases (netx: 6), else per neuron
    exponents: bool = True  # per-synapse weight exponents (netx's writer stores none)
    name: str = "quantize"

    def __call__(self, graph: Graph) -> Graph:
        t = self.target
        builder = graph.edit()
        problems: list[Problem] = []
        report: dict[str, dict] = {}
        host_fed = _host_fed(graph)
        host_sources = [s for n in graph.find((IF, LIF, Integrator)) for s in graph.inputs(n) if s in host_fed]
        with one_thread():  # (as passes.convert's ANN evaluation)
            host_values = evaluate(graph, self.data, upto=set(host_sources)) if host_sources else {}
        for name in graph.find((IF, LIF, Integrator)):
            op = graph.op(name)
            sources = graph.inputs(name)
            host = [s for s in sources if s in host_values]
            spiking = [s for s in sources if s not in host_values]
            bad = [s for s in spiking if not isinstance(graph.op(s), (Dense, Conv2d))
                   or not all(graph.op(p).neuron for p in graph.inputs(s))]
            if bad or len(host) > 1 or (host and spiking):
                why = bad[0] if bad else name
                problems.append(Problem(why, graph.op(why).kind.value,
                                        "a neuron must be fed by Linear/Conv2d ops reading spikes, "
                                        "or by one host-side input layer"))
                continue
            du, dv, why = _decays(op, t)
            if why is None and isinstance(op, LIF) and np.any(op.alpha) and (
                    host or np.any(sum(self._bias(graph, s) for s in spiking))):
                why = "a LIF with a current decay (alpha > 0) cannot take a bias or host input"
            if why is not None:
                problems.append(Problem(name, op.kind.value, why))
                continue
            readout = isinstance(op, Integrator)
            theta = None if readout else float(np.max(op.threshold))
            limits = []  # upper bounds on the scale s
            if theta is not None:
                limits.append(t.vth.max / theta)
            if host:
                peak = float(host_values[host[0]].abs().max()) or 1.0
                limits.append(t.bias.max_value / (64 * self.headroom * peak))
                if readout:
                    limits.append(t.v_max / (64 * self.headroom * peak * self.steps))
            else:
                # max |w| without a new array of |w|: max(max w, −min w), the same number
                peaks = {s: max(float(w.max()), -float(w.min())) for s, w in ((s, graph.op(s).weight) for s in spiking)}
                wmax = max(peaks.values()) or 1.0
                smallest = min((p for p in peaks.values() if p > 0), default=1.0)
                if self.exponents and smallest * EXPONENT_GAIN <= wmax:
                    # several synapse ops (membrane-add, concat): each has its own exponent, so the
                    # one with the smallest weights sets the scale and spans the 8-bit mantissas;
                    # the others shift theirs left (a ResNet's identity shortcut left the block's
                    # second conv 4-7 bits otherwise); v must still hold θ plus a step's largest input
                    limits.append(t.weight.max / smallest)
                    limits.append(t.weight.max * 2.0**MAX_WEIGHT_EXP / wmax)
                    if theta is not None:
                        limits.append(t.v_max / 64 / (theta + sum(_row_l1(graph.op(s)) for s in spiking)))
                else:
                    limits.append(t.weight.max / wmax)
                bias = self._channel_bias(graph, spiking, graph.shape(name))
                bmax = float(np.abs(bias).max()) if np.size(bias) else 0.0
                if bmax > 0:
                    top = t.bias.max_value if self.bias_exp is None else t.bias.mant.max << self.bias_exp
                    limits.append(top / (64 * bmax))
                if readout:
                    peak = self._readout_peak(graph, spiking, bmax)
                    limits.append(t.v_max / (64 * peak * self.steps) if peak else np.inf)
            scale = float(min(limits))
            if theta is not None and theta * scale >= 1:  # vth = θ·s exactly (module docstring)
                scale = math.floor(theta * scale * (1 + 1e-12)) / theta
            shape = graph.shape(name)
            info = {"scale": scale, "weight_saturated": 0, "bias_saturated": 0, "threshold_clipped": 0,
                    "v_init_saturated": 0}
            zeros = owned(np.zeros(shape, dtype=np.int64))
            bias_mant, bias_exp = zeros, zeros
            if host:
                enc = builder.unique_name(f"{name}_input")
                builder.add(enc, BiasEncoder(scale=scale * 64, bias_format=t.bias), host)
                builder.set_inputs(name, [enc])
            else:
                for s in spiking:
                    shift = self._weight_exp(graph.op(s), peaks[s] * scale, readout)
                    w, sat = t.weight.quantize_scaled(graph.op(s).weight, scale * 2.0**-shift)
                    info["weight_saturated"] += sat
                    builder.replace(s, self._fixed_synapse(graph.op(s), owned(w), shift))
                    if shift:
                        info.setdefault("weight_exp", {})[s] = shift
                # encoded once per channel (a conv's bias is one value per channel), then spread
                bias = self._channel_bias(graph, spiking, shape)
                mant, exp, sat = t.bias.encode(bias * scale * 64, exp=self.bias_exp)
                bias_mant, bias_exp = (owned(np.ascontiguousarray(np.broadcast_to(a, shape))) for a in (mant, exp))
                info["bias_saturated"] = sat * (int(np.prod(shape)) // max(bias.size, 1))
            vth = t.vth.max if readout else int(np.clip(round(theta * scale), 1, t.vth.max))
            if not readout and vth != round(theta * scale):
                # every neuron of the layer shares the clipped threshold
                info["threshold_clipped"] = int(np.prod(shape))
            # relative to the rounded threshold, so that θ/2 is exactly vth·32 (half of vth << 6)
            v_unit = 64 * scale if readout else 64 * vth / theta
            v_init, sat = t.state.quantize_scaled(np.broadcast_to(op.v_init, shape), v_unit)
            v_init = owned(v_init)
            info["v_init_saturated"] = sat
            info["vth"] = vth
            report[name] = info
            builder.replace(name, LoihiNeuron(
                vth=owned(np.full(shape, vth, dtype=np.int64)), bias_mant=bias_mant, bias_exp=bias_exp,
                du=du, dv=dv,
                reset=Reset.ZERO if readout else op.reset, v_init=v_init, readout=readout,
                v_scale=scale * 64, vth_format=t.vth, bias_format=t.bias, decay_format=t.decay,
            ))
        if problems:
            raise UnsupportedModelError("quantize", problems)
        builder.metadata = {**builder.metadata, "quantization": report, "steps": self.steps,
                            "target": t.name}
        return builder.build()

    def _readout_peak(self, graph: Graph, spiking: list[str], bmax: float) -> float:
        """Largest input per step the readout must hold for ``steps`` steps without saturating.

        From the data when conversion recorded the ANN's range (× headroom), else the hard bound
        of every input neuron spiking at once.
        """
        peaks = graph.metadata.get("readout_input_peaks", {})
        if all(s in peaks for s in spiking):
            return self.headroom * sum(peaks[s] for s in spiking)
        return sum(_row_l1(graph.op(s)) for s in spiking) + bmax

    @staticmethod
    def _channel_bias(graph: Graph, spiking: list[str], shape: tuple[int, ...]) -> np.ndarray:
        """``sum(_bias(s) for s in spiking)`` before its broadcast over ``shape``: per channel
        (C, 1, 1) for an image, the full vector otherwise; the same numbers, element by element."""
        compact = (shape[0],) + (1,) * (len(shape) - 1)
        return sum(np.zeros(compact) if graph.op(s).bias is None else graph.op(s).bias.reshape(compact)
                   for s in spiking)

    @staticmethod
    def _bias(graph: Graph, synapse: str) -> np.ndarray:
        """The synaptic op's bias broadcast over its output (per channel for Conv2d)."""
        op = graph.op(synapse)
        shape = graph.shape(synapse)
        if op.bias is None:
            return np.zeros(shape)
        b = op.bias.reshape((-1,) + (1,) * (len(shape) - 1))
        return np.broadcast_to(b, shape)

    def _weight_exp(self, op: Dense | Conv2d, peak: float, readout: bool) -> int:
        """The synapse's weight exponent for the largest scaled |weight| ``peak``: the smallest
        left shift that brings it within the 8-bit mantissas; for a Dense into the readout, whose
        scale v's range over T steps holds down (ResNet-20: |w| <= 10), a right shift of up to
        8 bits that spends the mantissas (the sum is floored once per step, as on the chip)."""
        if not self.exponents or peak <= 0:
            return 0
        top = float(self.target.weight.max)
        if peak > top * (1 + 1e-12):
            return min(MAX_WEIGHT_EXP, math.ceil(math.log2(peak / top) - 1e-12))
        if readout and isinstance(op, Dense) and peak * EXPONENT_GAIN <= top:
            return -min(MAX_WEIGHT_EXP + 1, math.floor(math.log2(top / peak) + 1e-12))
        return 0

    def _fixed_synapse(self, op: Dense | Conv2d, weight: np.ndarray, exp: int = 0):
        if isinstance(op, Dense):
            return FixedDense(weight=weight, weight_format=self.target.weight, weight_exp=exp)
        return FixedConv2d(
            weight=weight, weight_format=self.target.weight, output_format=self.target.conv_out,
            stride=op.stride, padding=op.padding, dilation=op.dilation, groups=op.groups, weight_exp=exp,
        )
