"""Queries on fixed-point graphs shared by the backends that run them (Lava, netx)."""

from __future__ import annotations

import numpy as np

from snncompile.ir.graph import Graph
from snncompile.ir.ops import BiasEncoder, Flatten, LoihiNeuron


def host_nodes(graph: Graph) -> set[str]:
    """Nodes computed on the host: the ancestors of BiasEncoders (Input included)."""
    return graph.ancestors(graph.find(BiasEncoder))


def neuron_behind(graph: Graph, node: str) -> str | None:
    """The LoihiNeuron that ``node`` is, or reaches through Flattens (views of its spikes)."""
    while isinstance(graph.op(node), Flatten):
        (node,) = graph.inputs(node)
    return node if isinstance(graph.op(node), LoihiNeuron) else None


def spike_source(graph: Graph, synapse: str) -> str | None:
    """The LoihiNeuron whose spikes a synaptic op reads (Flattens in between are views)."""
    (src,) = graph.inputs(synapse)
    return neuron_behind(graph, src)


def max_input(op) -> int:
    """The largest |sum| one output neuron of a synaptic op can receive in a step (0/1 spikes),
    its weight exponent applied (a right shift's floor rounded away from zero)."""
    w = np.abs(np.asarray(op.weight, dtype=np.int64))
    peak = int(w.reshape(w.shape[0], -1).sum(axis=1).max()) if w.size else 0
    exp = int(getattr(op, "weight_exp", 0))
    return peak << exp if exp >= 0 else -((-peak) >> -exp)
