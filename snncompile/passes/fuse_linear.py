"""Fuse each chain of linear ops between two neurons into one synaptic op.

After conversion, AvgPool2d and Flatten sit between an IF layer and the next Dense/Conv2d.
On the chip only one weighted connection can join two neuron groups, so the chain's linear map
L(x) = A x + c is materialized: A's columns are L(e_i) − L(0) for the unit vectors e_i, and c =
L(0) (exact in float64: pooling weights are powers of two over small windows). A chain that
is a lone Conv2d, or a Flatten followed by a Dense, keeps its structure (Dense reads any
shape in C-order, so Flatten folds away for free). Chains fed by the graph Input run on the
host and are left alone.
"""

from __future__ import annotations

import numpy as np
import torch

from snncompile.errors import PassError
from snncompile.ir.graph import Graph, GraphBuilder
from snncompile.ir.ops import AvgPool2d, Conv2d, Dense, Flatten
from snncompile.sim.ann import UNARY

LINEAR = (AvgPool2d, Flatten, Dense, Conv2d)  # SumPool2d is an AvgPool2d
MAX_MATERIALIZED = 50_000_000  # weights; a larger fused matrix is refused rather than built


def _chain_from(graph: Graph, start: str) -> list[str]:
    """Linear single-user ops starting at ``start`` up to and including the first synaptic op."""
    chain = []
    node = start
    while True:
        op = graph.op(node)
        if not isinstance(op, LINEAR):
            return []
        chain.append(node)
        if isinstance(op, (Dense, Conv2d)):
            return chain
        users = graph.users(node)
        if len(users) != 1:
            return []
        node = users[0]


def _materialize(graph: Graph, chain: list[str]) -> Dense:
    in_shape = graph.shape(graph.inputs(chain[0])[0])
    size = int(np.prod(in_shape))
    out_size = int(np.prod(graph.shape(chain[-1])))
    if size * out_size > MAX_MATERIALIZED:
        raise PassError(f"fuse_linear: node '{chain[-1]}': fusing {chain} needs a {out_size}x{size} matrix")
    basis = torch.cat([torch.zeros(1, size, dtype=torch.float64), torch.eye(size, dtype=torch.float64)])
    x = basis.reshape((size + 1,) + in_shape)
    for node in chain:
        op = graph.op(node)
        x = UNARY[type(op)](op, x)
    x = x.reshape(size + 1, -1)
    bias = x[0]
    weight = (x[1:] - bias).T
    return Dense(weight=weight.numpy(), bias=bias.numpy())


def fuse_linear(graph: Graph) -> Graph:
    builder: GraphBuilder = graph.edit()
    for name, op in graph.nodes():
        if not isinstance(op, (AvgPool2d, Flatten)) or name not in builder:
            continue
        (src,) = graph.inputs(name)
        if not graph.op(src).neuron:
            continue  # a host-side chain, or the middle of a chain
        chain = _chain_from(graph, name)
        if not chain:
            continue
        if all(isinstance(graph.op(n), Flatten) for n in chain[:-1]) and isinstance(graph.op(chain[-1]), Dense):
            fused = graph.op(chain[-1])
        else:
            fused = _materialize(graph, chain)
        builder.replace(chain[-1], fused, [src])
        for node in chain[:-1]:
            builder.remove(node)
    return builder.build()
