"""The values flowing along the ONNX graph during the ONNX frontend's walk, shared by the walk
(``frontends.onnx``) and its lowering rules (``frontends.onnx_rules``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

BROKEN = -1  # the key of an activation produced by an unsupported node
FLOAT_TYPES = frozenset({
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
})


@dataclass(frozen=True, eq=False)
class Act:
    """An activation: the output of IR entry ``key``; ``dims`` excludes the batch dim."""

    key: int
    dims: tuple[int, ...] | None


@dataclass(frozen=True, eq=False)
class Const:
    """A tensor known ahead of time (an initializer, a Constant, or folded from them)."""

    array: np.ndarray


@dataclass(frozen=True, eq=False)
class Sized:
    """A small tensor that depends on the batch size: one array per trial batch size."""

    arrays: tuple[np.ndarray, ...]


@dataclass
class Node:
    """One ONNX node during the walk: the proto, its position, resolved inputs, attributes."""

    proto: onnx.NodeProto
    index: int
    args: list
    attrs: dict

    @property
    def problem_name(self) -> str:
        return self.proto.name or f"{self.proto.op_type}_{self.index}"

    def arg(self, i: int):
        return self.args[i] if i < len(self.args) else None
