"""Refuse ONNX models whose constants would make the loader loop or allocate without bound,
before anything is checked, inferred or evaluated.

The ONNX frontend folds constant subgraphs with ``onnx.reference`` (frontends/onnx.py): a 1 kB
model holding a ``Loop`` of constant trip count 10**12 keeps it busy for ever, and a
``ConstantOfShape`` or ``Range`` of constant size allocates whatever it says. What the file
declares is checked here against budgets, in every graph (subgraphs and functions included):

- a Loop's trip count, when constant, at most ``MAX_LOOP_TRIPS``; a Loop without a trip count
  whose condition is a constant (it could run for ever) is refused;
- a ConstantOfShape's constant shape, and a Range's constant (start, limit, delta), at most
  ``MAX_VALUES`` values;
- initializers and constant tensors at most ``MAX_TENSOR_BYTES`` in all, as their dims declare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from snncompile.errors import ModelLoadError

MAX_LOOP_TRIPS = 100_000
MAX_VALUES = 1 << 28  # 1 GiB of float32
MAX_TENSOR_BYTES = 4 << 30


def check_limits(model: onnx.ModelProto, path: str | Path) -> None:
    """Raise ModelLoadError naming the node when ``model`` declares work beyond the budgets."""
    problem = _problem(model)
    if problem:
        raise ModelLoadError(f"{path}: {problem}; snncompile does not run such a model")


def _problem(model: onnx.ModelProto) -> str | None:
    total = 0
    for graph in _graphs(model):
        constants = _constants(graph)
        for tensor in list(graph.initializer) + [t for n in graph.node for t in _attribute_tensors(n)]:
            total += _declared_bytes(tensor)
            if total > MAX_TENSOR_BYTES:
                return f"its tensors declare more than {MAX_TENSOR_BYTES >> 30} GiB (at '{tensor.name}')"
        for node in graph.node:
            problem = _check_node(node, constants)
            if problem:
                return f"node '{node.name or node.output[0]}' ({node.op_type}): {problem}"
    return None


def _check_node(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> str | None:
    def const(i: int):
        return constants.get(node.input[i]) if len(node.input) > i and node.input[i] else None

    if node.op_type == "Loop":
        trips, cond = const(0), const(1)
        if trips is not None and trips.size == 1 and int(trips.reshape(-1)[0]) > MAX_LOOP_TRIPS:
            return f"a loop of {int(trips.reshape(-1)[0])} iterations, more than {MAX_LOOP_TRIPS}"
        if (len(node.input) < 1 or not node.input[0]) and cond is not None:
            return "a loop without a trip count whose condition is a constant (it may never end)"
    elif node.op_type == "ConstantOfShape":
        shape = const(0)
        if shape is not None and _count(shape.reshape(-1)) > MAX_VALUES:
            return f"a constant of shape {tuple(int(d) for d in shape.reshape(-1)[:8])}, more than {MAX_VALUES} values"
    elif node.op_type == "Range":
        start, limit, delta = const(0), const(1), const(2)
        if start is not None and limit is not None and delta is not None:
            step = float(delta.reshape(-1)[0])
            count = np.inf if step == 0 else max(0.0, np.ceil((float(limit.reshape(-1)[0]) - float(start.reshape(-1)[0])) / step))
            if count > MAX_VALUES:
                return f"a range of {count:.3g} values, more than {MAX_VALUES}"
    return None


def _count(dims) -> int:
    total = 1
    for d in dims:
        total *= max(int(d), 0)
    return total


def _declared_bytes(tensor: onnx.TensorProto) -> int:
    try:
        size = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:  # an unknown or string type: count one byte per value
        size = 1
    return _count(tensor.dims) * size


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Small constant values by name: initializers and Constant nodes (the ones a trip count,
    shape or range bound is read from)."""
    found = {}
    tensors = [(t.name, t) for t in graph.initializer]
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    tensors.append((node.output[0], attr.t))
                elif attr.name in ("value_int", "value_ints"):
                    found[node.output[0]] = np.asarray(onnx.helper.get_attribute_value(attr))
    for name, tensor in tensors:
        if _count(tensor.dims) <= 64:
            try:
                found[name] = numpy_helper.to_array(tensor)
            except Exception:  # external or damaged data: not a bound read here
                pass
    return found


def _attribute_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR:
            yield attr.t
        elif attr.type == onnx.AttributeProto.TENSORS:
            yield from attr.tensors


def _graphs(model: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    """The main graph, every subgraph of a node attribute, and every local function's nodes."""
    stack = [model.graph]
    for function in model.functions:
        stack.append(onnx.helper.make_graph(list(function.node), function.name, [], []))
    while stack:
        graph = stack.pop()
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)
