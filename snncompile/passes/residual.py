"""Lower residual sums of a directly trained SNN to synapses only Loihi 2 can hold.

A float SNN from the torch frontend (``snncompile.nn``) may carry ``Add`` ops in two places:

1. **A sum of spike trains read by a synapse** (SEW-ADD ``a + x``; dense-add's x + out_1 + …):
   for spikes s_1 … s_k and a synaptic op W (Dense/Conv2d, a Flatten before a Dense allowed),
   W·(s_1 + … + s_k) + b = (W·s_1 + b) + W·s_2 + … + W·s_k. Each addend population gets its own
   copy of W onto the same target neurons (the first copy keeps the bias); only 0/1 spikes
   travel, and each copy delays by one step like the original, so the float time-stepped
   semantics are unchanged. Nested sums are flattened into their leaves. This is the exact
   binary alternative to graded spikes (Lava's ``num_message_bits``), chosen here because
   Lava's fixed-point Dense/Conv models and our reference then stay on one code path; the
   price is one extra synapse set per extra addend.
2. **A sum of a synaptic output and spikes feeding a neuron** (membrane-add ``sn(W·h + x)``):
   each spike-train leaf becomes an identity synapse (1×1 Conv2d or Dense, gain 1) onto the
   same neurons; the neuron then has several synaptic inputs, which Loihi's dendrites add.
   Cost: one synapse per neuron, no neuron.

SEW-IAND relays come from the frontend already in binary form (``frontends.snn_ops``); they
are only accounted here. ``graph.metadata["residual"]`` lists every lowered connection with
its lowering, extra neurons and extra synapses (synapses = non-zero weights times the
positions they are applied at).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.errors import Problem, UnsupportedModelError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import IF, LIF, Add, Conv2d, Dense, Flatten, Integrator

NEURONS = (IF, LIF, Integrator)


def synapse_count(op, in_shape: tuple[int, ...]) -> int:
    """Connections a synaptic op (Dense, Conv2d or their fixed twins) makes: non-zero weights
    times the positions they act at."""
    nonzero = (np.asarray(op.weight) != 0).astype(np.float64)
    if nonzero.ndim == 2:
        return int(nonzero.sum())
    ones = torch.ones((1,) + tuple(in_shape), dtype=torch.float64)
    out = F.conv2d(ones, torch.tensor(nonzero), None, op.stride, op.padding, op.dilation, op.groups)
    return int(out.sum())


def identity_synapse(shape: tuple[int, ...]) -> Dense | Conv2d:
    """The identity as a 1×1 Conv2d for (C, H, W) spikes, else as a Dense."""
    if len(shape) == 3:
        return Conv2d(weight=np.eye(shape[0]).reshape(shape[0], shape[0], 1, 1))
    return Dense(weight=np.eye(math.prod(shape)))


def _leaves(graph: Graph, node: str) -> list[str]:
    """The terms of an Add tree rooted at ``node`` (the node itself when it is no Add)."""
    if not isinstance(graph.op(node), Add):
        return [node]
    return [leaf for src in graph.inputs(node) for leaf in _leaves(graph, src)]


def _without_bias(op: Dense | Conv2d) -> Dense | Conv2d:
    if isinstance(op, Dense):
        return Dense(weight=op.weight)
    return Conv2d(weight=op.weight, stride=op.stride, padding=op.padding, dilation=op.dilation, groups=op.groups)


def lower_residual(graph: Graph) -> Graph:
    """Apply rules 1 and 2 of the module docstring; UnsupportedModelError for other Adds."""
    adds = graph.find(Add)
    relays = list(graph.metadata.get("sew_iand_relays", []))
    if not adds and not relays:
        return graph
    builder = graph.edit()
    problems: list[Problem] = []
    report: list[dict] = []
    for relay in relays:
        if relay in graph:
            size = math.prod(graph.shape(relay))
            report.append({"node": relay, "connection": "sew_iand", "lowering": "relay neuron population "
                           "(+1 from b, −1 from a, threshold 0.5, no memory)", "sources": graph.inputs(relay),
                           "extra_neurons": size, "extra_synapses": 2 * size})
    # Rule 1: sums of spikes read by synapses -> one synapse copy per addend.
    for name, op in graph.nodes():
        if not isinstance(op, (Dense, Conv2d)):
            continue
        (src,) = graph.inputs(name)
        while isinstance(graph.op(src), Flatten) and isinstance(op, Dense):
            (src,) = graph.inputs(src)
        if not isinstance(graph.op(src), Add):
            continue
        terms = _leaves(graph, src)
        bad = [t for t in terms if not graph.op(t).neuron]
        if bad or len(set(terms)) != len(terms):
            why = f"sums '{bad[0]}', which is not spikes" if bad else "adds one spike train twice"
            problems.append(Problem(name, op.kind.value, f"a synapse reading a residual sum {why}"))
            continue
        copies = []
        for i, term in enumerate(terms):
            copy = builder.unique_name(f"{name}_from_{term}")
            builder.add(copy, op if i == 0 else _without_bias(op), [term])
            copies.append(copy)
        total = copies[0]
        for i, copy in enumerate(copies[1:], 1):
            last = i == len(copies) - 1
            nxt = name if last else builder.unique_name(f"{name}_sum{i}")
            if last:
                builder.replace(name, Add(), [total, copy])
            else:
                builder.add(nxt, Add(), [total, copy])
            total = nxt
        extra = sum(synapse_count(op, graph.shape(t)) for t in terms[1:])
        report.append({"node": name, "connection": "spike_sum", "lowering": "synapse fan-in: one copy of "
                       "the synapse per addend population (binary spikes, no graded messages)",
                       "sources": terms, "extra_neurons": 0, "extra_synapses": extra})
    if problems:
        raise UnsupportedModelError("lower_residual", problems)
    staged = builder.build(verify=False)
    # Rule 2: Add trees feeding neurons -> several synaptic inputs; spikes get identity synapses.
    builder = staged.edit()
    for name, op in staged.nodes():
        if not isinstance(op, NEURONS) or not any(isinstance(staged.op(s), Add) for s in staged.inputs(name)):
            continue
        inputs = []
        for leaf in (leaf for s in staged.inputs(name) for leaf in _leaves(staged, s)):
            leaf_op = staged.op(leaf)
            if isinstance(leaf_op, (Dense, Conv2d)):
                inputs.append(leaf)
            elif leaf_op.neuron:
                shortcut = builder.unique_name(f"{name}_shortcut_{leaf}")
                builder.add(shortcut, identity_synapse(staged.shape(leaf)), [leaf])
                inputs.append(shortcut)
                report.append({"node": shortcut, "connection": "membrane_add", "lowering": "identity "
                               "shortcut synapse onto the same neurons (dendritic sum)", "sources": [leaf],
                               "extra_neurons": 0, "extra_synapses": math.prod(staged.shape(leaf))})
            else:
                problems.append(Problem(name, op.kind.value, f"a residual add of '{leaf}' "
                                        f"({leaf_op.kind.value}): only synaptic outputs and spikes can be summed"))
        if len(set(inputs)) != len(inputs):
            problems.append(Problem(name, op.kind.value, "one input is added twice"))
            continue
        builder.set_inputs(name, inputs)
    if problems:
        raise UnsupportedModelError("lower_residual", problems)
    # The sums are now dead: drop every Add and Flatten without users (repeat: trees).
    changed = True
    while changed:
        changed = False
        for name in staged.order():
            if name in builder and isinstance(builder.op(name), (Add, Flatten)) and not builder.users(name):
                builder.remove(name)
                changed = True
    builder.metadata = {**builder.metadata, "residual": report}
    return builder.build()
