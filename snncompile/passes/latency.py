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
(searched; monotone), or the nearest when none exists. Neurons where it cannot be exact keep the
nearest safe v_init' and are counted (``latency.inexact``). The float simulator delays a synapse's
bias with its output, so it needs no compensation; netx files cannot hold an initial potential, so
there the biases integrate early and the report says so.

``graph.metadata["latency"]``: ``steps`` (L), ``first_arrival`` (the readout's shortest path),
per-neuron-layer depths, and the compensation's counts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from snncompile.ir.graph import Graph
from snncompile.ir.ops import LoihiNeuron
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
    name: str = "compensate_delay"

    def __call__(self, graph: Graph) -> Graph:
        times = arrivals(graph)
        outs = [graph.inputs(o)[0] for o in graph.output_names()]
        info = {"steps": max((times[o][1] for o in outs), default=0),  # L, as ir.timing.latency_steps
                "first_arrival": min((times[o][0] for o in outs), default=0), "depths": {},
                "compensated": 0, "inexact": 0,
                "rule": "v_init -= depth * bias" if self.enabled else
                "none: the format holds no initial potential; biases integrate from step 0"}
        builder = graph.edit()
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
            if op.dv == 0:
                wanted = v0 - depth * bias - self._later(graph, name, times, depth, op)
            else:
                wanted = _leaky_preimage(v0, bias, keep, depth, v_max)
            if op.readout:
                safe = np.clip(wanted, -v_max, v_max)
            else:  # no spike before the input arrives: v stays ≤ vth on the way
                safe = np.clip(wanted, -v_max, np.minimum(vth, v_max))
            exact = (safe == wanted) & (_forward(safe, bias, keep, depth) == v0) if op.dv else (safe == wanted)
            info["compensated"] += int(np.count_nonzero(exact & (bias != 0)))
            info["inexact"] += int(np.count_nonzero(~exact & (bias != 0)))
            builder.replace(name, dataclasses.replace(op, v_init=safe), graph.inputs(name))
        if self.float_graph is not None and self.enabled:
            info["rule"] += "; a synapse arriving later than the first adds (its depth − depth)·its bias"
        builder.metadata = {**builder.metadata, "latency": info}
        return builder.build()

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
