"""Fold BatchNorm into the Dense or Conv2d that feeds it.

Maths: BN(y) = y·a + c with a = gamma / sqrt(var + eps), c = beta − mean·a (per channel).
For y = W x + b:  BN(y) = (a ⊙ W) x + (a ⊙ b + c), scaling W's output channel (row / out-channel
slice) by a. The rule applies when the BatchNorm's only input is a Dense or Conv2d with no other
user; ``check`` says why it does not apply otherwise.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from snncompile.ir.graph import Graph
from snncompile.ir.ops import BatchNorm, Conv2d, Dense, owned


def check(graph: Graph, bn: str) -> str | None:
    """None when ``bn`` can be folded, else the reason."""
    (src,) = graph.inputs(bn)
    if not isinstance(graph.op(src), (Dense, Conv2d)):
        return f"its input '{src}' is a {graph.op(src).kind.value}, not Dense or Conv2d"
    if len(graph.users(src)) != 1:
        return f"its input '{src}' has other users"
    return None


def fold(op: Dense | Conv2d, bn: BatchNorm) -> Dense | Conv2d:
    scale, shift = bn.scale_shift()
    weight = owned(op.weight * scale.reshape((-1,) + (1,) * (op.weight.ndim - 1)))
    bias = np.zeros(op.weight.shape[0]) if op.bias is None else op.bias
    return dataclasses.replace(op, weight=weight, bias=bias * scale + shift)


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold every foldable BatchNorm; others stay (and later passes report them)."""
    builder = graph.edit()
    for bn in graph.find(BatchNorm):
        if check(graph, bn) is not None:
            continue
        (src,) = graph.inputs(bn)
        builder.replace(src, fold(graph.op(src), graph.op(bn)))
        builder.bypass(bn)
    return builder.build()
