"""Light calibration (bias correction, Li et al. 2021 "A Free Lunch From ANN", §4.2) in the
target's fixed point.

For each spiking layer l in topological order, the already-quantized graph is run on the
calibration samples with the exact simulator, and the layer's rate output, in the ANN's units,

    r_l = (spikes over T steps / T) · θ_l,          θ_l = vth_l · 64 / v_scale_l,

is compared with the ANN activation a_l of the ReLU the layer replaced. The mean error per
channel (per neuron for vectors), e_l = mean(r_l − a_l), is removed from the layer's bias: an IF
neuron with a constant input current I fires at rate ≈ I / θ, so lowering the current by e_l
lowers r_l by about e_l. The correction is applied in integers (v units: float · v_scale) to the
neuron's bias mantissa/exponent, or, for a layer fed by the host (BiasEncoder), to the float bias
of the host layer. Layers are corrected one at a time, each seeing the corrected layers before
it, so the correction also absorbs what quantization, clipping and the synaptic delays cost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from snncompile.ir.graph import Graph
from snncompile.ir.ops import BiasEncoder, Conv2d, Dense, LoihiNeuron
from snncompile.sim import fixed
from snncompile.sim.ann import evaluate


def channel_mean(err: np.ndarray) -> np.ndarray:
    """Mean over samples (and space, for (C, H, W) layers), broadcastable to the neuron shape."""
    if err.ndim == 4:  # (N, C, H, W)
        return err.mean(axis=(0, 2, 3))[:, None, None]
    return err.mean(axis=0)


@dataclass(frozen=True, eq=False)
class BiasCorrection:
    """Correct each spiking layer's bias by its mean rate error against the ANN (``ann``)."""

    ann: Graph
    data: np.ndarray
    steps: int
    bias_exp: int | None = None  # as in Quantize: a fixed bias exponent (netx: 6)
    progress: bool = False
    name: str = "bias_correction"

    def __call__(self, graph: Graph) -> Graph:
        layers = [n for n in graph.find(LoihiNeuron) if not graph.op(n).readout and n in self.ann]
        targets = evaluate(self.ann, self.data, upto=set(layers))
        corrections = {}
        for layer in tqdm(layers, desc="bias correction", disable=not self.progress, leave=False):
            op = graph.op(layer)
            run = fixed.simulate(graph, self.data, self.steps, device="cpu", record=True)
            theta = op.vth * 64 / op.v_scale
            rate = run.trace.spikes[layer].mean(axis=1) * theta
            err = channel_mean(rate - targets[layer].numpy())
            graph = self._apply(graph, layer, -err, self.bias_exp)
            corrections[layer] = float(np.abs(err).mean())
        builder = graph.edit()
        builder.metadata = {**builder.metadata, "bias_correction": corrections}
        return builder.build()

    @staticmethod
    def _apply(graph: Graph, layer: str, delta: np.ndarray, bias_exp: int | None) -> Graph:
        """Add ``delta`` (float current per step, per channel or neuron) to the layer's bias."""
        op = graph.op(layer)
        builder = graph.edit()
        encoders = [i for i in graph.inputs(layer) if isinstance(graph.op(i), BiasEncoder)]
        if encoders:
            (host,) = graph.inputs(encoders[0])
            host_op = graph.op(host)
            if isinstance(host_op, (Dense, Conv2d)):
                per_channel = np.broadcast_to(delta, graph.shape(layer)).reshape(host_op.weight.shape[0], -1)[:, 0]
                bias = np.zeros(host_op.weight.shape[0]) if host_op.bias is None else host_op.bias
                builder.replace(host, dataclasses.replace(host_op, bias=bias + per_channel))
            return builder.build()
        current = op.bias_format.decode(op.bias_mant, op.bias_exp)
        wanted = current + np.broadcast_to(delta, op.vth.shape) * op.v_scale
        mant, exp, _ = op.bias_format.encode(wanted, exp=bias_exp)
        builder.replace(layer, dataclasses.replace(op, bias_mant=mant, bias_exp=exp))
        return builder.build()
