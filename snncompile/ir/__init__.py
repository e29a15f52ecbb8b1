"""The graph IR: typed immutable ops, a Graph with shapes, a verifier, fixed-point formats."""

from snncompile.ir.fixed_point import IntFormat, MantExpFormat
from snncompile.ir.graph import Graph, GraphBuilder, chain
from snncompile.ir.ops import (
    IF,
    LIF,
    AdaptiveAvgPool2d,
    Add,
    AvgPool2d,
    BatchNorm,
    BiasEncoder,
    Concat,
    Conv2d,
    Dense,
    FixedConv2d,
    FixedDense,
    Flatten,
    Input,
    Integrator,
    LoihiNeuron,
    MaxPool2d,
    Op,
    OpKind,
    Output,
    ReLU,
    SumPool2d,
    Reset,
)
from snncompile.ir.verify import Verifier, verify

__all__ = [
    "IF", "LIF", "SumPool2d", "AdaptiveAvgPool2d", "Add", "AvgPool2d", "BatchNorm", "BiasEncoder", "Concat", "Conv2d", "Dense", "FixedConv2d",
    "FixedDense", "Flatten", "Graph", "GraphBuilder", "Input", "IntFormat", "Integrator",
    "LoihiNeuron", "MantExpFormat", "MaxPool2d", "Op", "OpKind", "Output", "ReLU", "Reset", "Verifier",
    "chain", "verify",
]
