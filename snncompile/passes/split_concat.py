"""Push per-channel ops through a channel Concat: ReLU(BN(Concat(x₁ … xₙ))) = Concat(ReLU(BN₁(x₁)) … ).

DenseNet's layers read the concatenation of every earlier feature map through BatchNorm and ReLU
(pre-activation). Left as it is, that ReLU is one population over the whole concatenation, and each
earlier layer's conv reaches it through a synapse whose kernel is zero-padded to the full concatenated
width: DenseNet-121 at 224×224 would build ~300 such kernels, most of them zeros (9 GB, out of memory).

ReLU and BatchNorm act per channel, so splitting them along the Concat is exact in the ANN: each
input xⱼ gets its own slice of the BatchNorm and its own ReLU (after conversion its own IF population
with its own balanced threshold), and the Concat moves after the ReLUs, where it is wiring only (each
consumer synapse reads its slice, ``passes.linear_regions``). Neurons are unchanged in number; synapses
lose the zero padding. Recorded in ``graph.metadata["split_concat"]``.

Applies to ANN graphs (before conversion), to a (clipped) ReLU whose input is a chain of BatchNorms
(each read only by the next) on a channel Concat of (C, H, W) maps with two or more inputs.
"""

from __future__ import annotations

from snncompile.ir.graph import Graph
from snncompile.ir.ops import BatchNorm, Concat, ReLU


def _bn_slice(op: BatchNorm, start: int, stop: int) -> BatchNorm:
    return BatchNorm(mean=op.mean[start:stop], var=op.var[start:stop], gamma=op.gamma[start:stop],
                     beta=op.beta[start:stop], eps=op.eps)


def split_concat(graph: Graph) -> Graph:
    """Apply the module docstring to every matching ReLU of ``graph``."""
    if any(op.neuron for _, op in graph.nodes()):
        return graph  # a spiking graph: its populations are the model's own
    builder = graph.edit()
    splits: list[dict] = []
    for relu in graph.order():
        op = graph.op(relu)
        if not isinstance(op, ReLU):
            continue
        chain: list[str] = []
        (node,) = graph.inputs(relu)
        while isinstance(graph.op(node), BatchNorm) and len(graph.users(node)) == 1:
            chain.append(node)
            (node,) = graph.inputs(node)
        concat = node
        if not isinstance(graph.op(concat), Concat) or len(graph.shape(concat)) != 3 or len(graph.inputs(concat)) < 2:
            continue
        parts: list[str] = []
        offset = 0
        for j, src in enumerate(graph.inputs(concat)):
            channels = graph.shape(src)[0]
            x = src
            for bn in reversed(chain):
                x = builder.add(builder.unique_name(f"{bn}_{j}"), _bn_slice(graph.op(bn), offset, offset + channels),
                                [x])
            parts.append(builder.add(builder.unique_name(f"{relu}_{j}"), ReLU(upper=op.upper), [x]))
            offset += channels
        builder.replace(relu, Concat(), parts)  # the name stays: its users read the same values
        for bn in chain:
            builder.remove(bn)
        if not builder.users(concat):
            builder.remove(concat)
        splits.append({"relu": relu, "concat": concat, "parts": parts, "batchnorm": chain})
    if not splits:
        return graph
    builder.metadata = {**builder.metadata, "split_concat": splits}
    return builder.build()


split_concat.name = "split_concat"
