"""Measurements the report's plots show: ANN activation vs SNN rate per layer, weight errors.

(Accuracy vs steps reruns the compile stages: ``snncompile.compiler.sweep_steps``.)

The SNN's rate output of a spiking layer, in the ANN's units, is the calibration pass's
(``passes/calibrate.py``)

    r_l = (spikes / steps of input) · θ_l,          θ_l = vth_l · 64 / v_scale_l,

compared with the activation a_l of the ReLU the layer replaced (same node name in the ANN). The
readout layer is compared through the output: its membrane after T steps / (v_scale · T) against
the ANN's logits. Both run on a few test samples only (``samples``), so the compile stays fast.

``steps`` is the run's length (T + L, the latency contract): a layer at depth d has T + L − d steps
of input in it, and its rate is its spikes over those steps (``passes.calibrate.evidence``); the
readout's, T.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snncompile.ir.graph import Graph
from snncompile.ir.ops import LoihiNeuron

SCATTER_POINTS = 600  # points per layer kept for the scatter plot (a fixed-seed subsample)


@dataclass
class LayerActivation:
    """One layer's ANN activations and SNN rates (ANN units), flattened, and their error."""

    ann: np.ndarray
    snn: np.ndarray
    mean_abs: float
    rmse: float
    samples: int

    def error(self) -> dict:
        """report.json's ``layers[].activation_error``."""
        return {"mean_abs": self.mean_abs, "rmse": self.rmse, "samples": self.samples,
                "units": "ANN activation units (rate · vth · 64 / v_scale)"}


def _measured(ann: np.ndarray, snn: np.ndarray, samples: int) -> LayerActivation:
    ann, snn = np.asarray(ann, dtype=np.float64).ravel(), np.asarray(snn, dtype=np.float64).ravel()
    diff = snn - ann
    keep = np.arange(ann.size)
    if ann.size > SCATTER_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(ann.size, SCATTER_POINTS, replace=False))
    return LayerActivation(ann=ann[keep], snn=snn[keep], mean_abs=float(np.abs(diff).mean()),
                           rmse=float(np.sqrt(np.mean(diff ** 2))), samples=samples)


def activation_comparison(ann_graph: Graph, fixed_graph: Graph, x: np.ndarray, steps: int,
                          device: str | None = None) -> dict[str, LayerActivation]:
    """Per LoihiNeuron layer of ``fixed_graph`` with an ANN counterpart: activations vs rates on ``x``."""
    from snncompile.passes.calibrate import calibratable, evidence, rates
    from snncompile.sim import ann as ann_sim
    from snncompile.sim import fixed

    layers = calibratable(fixed_graph, ann_graph)
    (out,) = ann_graph.output_names()
    targets = ann_sim.evaluate(ann_graph, x, upto=set(layers) | {out})
    run = fixed.simulate(fixed_graph, x, steps, device=device, record=False, count_spikes=True)
    result = {}
    for name in fixed_graph.find(LoihiNeuron):
        if fixed_graph.op(name).readout:
            snn = fixed.output_values(fixed_graph, run) / evidence(fixed_graph, name, run, steps)
            result[name] = _measured(targets[out].cpu().numpy(), snn, len(x))
        elif name in layers:
            result[name] = _measured(targets[name].cpu().numpy(), rates(fixed_graph, name, run, steps), len(x))
    return result


def weight_error(snn_graph: Graph, fixed_graph: Graph) -> dict[str, float]:
    """Per neuron layer: the RMS quantization error of the weights feeding it, relative to the RMS
    of the float weights (integer weights / the layer's scale against the float SNN's). After
    calibration it includes what calibration moved: little for the spiking layers (about 1 % on
    the digits MLP), far more for a readout advanced refitted to the ANN's logits (36 % there)."""
    from snncompile.ir.ops import FixedConv2d, FixedDense, effective_weight

    quant = fixed_graph.metadata.get("quantization", {})
    out = {}
    for name in fixed_graph.find(LoihiNeuron):
        scale = quant.get(name, {}).get("scale")
        num = den = 0.0
        for src in fixed_graph.inputs(name):
            op = fixed_graph.op(src)
            if not isinstance(op, (FixedDense, FixedConv2d)) or src not in snn_graph or not scale:
                continue
            w = np.asarray(snn_graph.op(src).weight, dtype=np.float64)
            q = effective_weight(op)
            if q.shape != w.shape:
                continue
            num += float(np.sum((q / scale - w) ** 2))
            den += float(np.sum(w ** 2))
        if den > 0:
            out[name] = float(np.sqrt(num / den))
    return out
