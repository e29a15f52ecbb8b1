"""Torch frontend lowerings of the spiking custom ops of ``snncompile.nn`` (one function each).

    snncompile::lif_neuron(x, threshold, beta, subtract)
        beta = 1 -> IR IF(threshold, reset);  else IR LIF(threshold, alpha=0, beta, reset)
        (reset = subtract when ``subtract`` else zero): the same IR neuron NIR import gives for
        an IF/LIF node behind its synaptic op.
    snncompile::integrator(x) -> IR Integrator (non-spiking readout; the Output reads its v)
    snncompile::sew_iand(a, b) -> the binary relay form of (NOT a) AND b:
        identity synapse +1 from b, identity synapse −1 from a, and a relay
        LIF(threshold 0.5, beta 0, reset zero): r[t] = (b[t−1] − a[t−1] > 0.5), memoryless
        (v = x each step). The relay's IR name is listed in the graph's
        ``metadata["sew_iand_relays"]`` so the residual report can account for it.

An input of a neuron may be an ``Add`` of a synaptic output and spikes (membrane-add) or a sum
of spike trains may feed a synapse (SEW-ADD, dense-add): ``passes.residual`` lowers those.
"""

from __future__ import annotations

import numpy as np

from snncompile.frontends.lowering import Reject
from snncompile.frontends.torch_values import Act
from snncompile.ir import ops as ir
from snncompile.nn import ops as _registered  # noqa: F401  (the ops must exist to load a program)


def _identity_synapse(shape: tuple[int, ...], gain: float) -> ir.Op:
    """gain × identity: a 1×1 Conv2d for (C, H, W), else a Dense."""
    if len(shape) == 3:
        return ir.Conv2d(weight=np.eye(shape[0]).reshape(shape[0], shape[0], 1, 1) * gain)
    return ir.Dense(weight=np.eye(int(np.prod(shape))) * gain)


def _spiking_input(value, what: str):
    if not isinstance(value, Act):
        raise Reject(f"the neuron's {what} must be an activation, not a constant")
    return value


def _lif_neuron(low, node, a):
    x = _spiking_input(a["x"], "input")
    threshold, beta = float(a["threshold"]), float(a["beta"])
    reset = ir.Reset.SUBTRACT if a["subtract"] else ir.Reset.ZERO
    if threshold <= 0 or not 0.0 <= beta <= 1.0:
        raise Reject(f"threshold {threshold} must be > 0 and beta {beta} in [0, 1]")
    if beta == 1.0:
        op = ir.IF(threshold=threshold, reset=reset)
    else:
        op = ir.LIF(threshold=threshold, alpha=0.0, beta=beta, reset=reset)
    return low.emit(node, op, [x])


def _integrator(low, node, a):
    return low.emit(node, ir.Integrator(), [_spiking_input(a["x"], "input")])


def _sew_iand(low, node, a):
    spikes_a, spikes_b = _spiking_input(a["a"], "input a"), _spiking_input(a["b"], "input b")
    if spikes_a.shape != spikes_b.shape:
        raise Reject(f"sew_iand of shapes {spikes_a.shape} and {spikes_b.shape}")
    shape = tuple(spikes_b.shape[1:])
    if not all(isinstance(d, int) for d in shape):
        raise Reject(f"sew_iand needs a static shape, got {shape}")
    excite = low.emit(node, _identity_synapse(shape, 1.0), [spikes_b])
    inhibit = low.emit(node, _identity_synapse(shape, -1.0), [spikes_a], suffix="_inhibit")
    relay = low.emit(node, ir.LIF(threshold=0.5, alpha=0.0, beta=0.0, reset=ir.Reset.ZERO),
                     [excite, inhibit], suffix="_relay")
    low.__dict__.setdefault("relays", []).append(relay.key)
    return relay


LOWERINGS = {
    "snncompile::lif_neuron": _lif_neuron,
    "snncompile::integrator": _integrator,
    "snncompile::sew_iand": _sew_iand,
}
