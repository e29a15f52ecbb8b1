"""When spikes reach each node: the synaptic delay of Loihi, as a graph analysis (passes.latency).

A synapse delivers at step t what its source sent at step t − 1. The host side (Input, BiasEncoder
and whatever only they feed) has its value from step 0; a synaptic op fed by neurons adds one step.
"""

from __future__ import annotations

from snncompile.ir.graph import Graph
from snncompile.ir.ops import IF, LIF, BiasEncoder, Conv2d, Dense, FixedConv2d, FixedDense, Input, Integrator, LoihiNeuron

NEURONS = (IF, LIF, Integrator, LoihiNeuron)


def arrivals(graph: Graph) -> dict[str, tuple[int, int]]:
    """(earliest, latest) step at which each node's value first depends on the host input, through
    the shortest and the longest path: a synaptic op fed by a neuron adds one step (Loihi's delay);
    the host side (Input, BiasEncoder and what only they feed) is at step 0."""
    spiking = {n for n, op in graph.nodes() if op.neuron}
    times: dict[str, tuple[int, int]] = {}
    dynamic: set[str] = set()
    for name in graph.order():
        op = graph.op(name)
        ins = graph.inputs(name)
        if isinstance(op, (Input, BiasEncoder)) or not ins:
            times[name] = (0, 0)
            continue
        lo = min(times[i][0] for i in ins)
        hi = max(times[i][1] for i in ins)
        fed_by_spikes = any(i in dynamic for i in ins)
        if fed_by_spikes or name in spiking:
            dynamic.add(name)
        if isinstance(op, (FixedDense, FixedConv2d)) or (isinstance(op, (Dense, Conv2d)) and fed_by_spikes):
            lo, hi = lo + 1, hi + 1
        times[name] = (lo, hi)
    return times


def depths(graph: Graph) -> dict[str, int]:
    """Each neuron layer's depth: the step at which its first synaptic input can arrive."""
    times = arrivals(graph)
    return {n: times[n][0] for n, op in graph.nodes() if isinstance(op, NEURONS)}


def latency_steps(graph: Graph) -> int:
    """L: the readout's depth along its longest path (0 for a graph without neurons)."""
    times = arrivals(graph)
    outs = [graph.inputs(o)[0] for o in graph.output_names()]
    return max((times[o][1] for o in outs), default=0)
