"""ONNX frontend: lower an ONNX model (default domain, opset 13 and up) to a float IR graph.

``load_model`` reads a file: ``onnx.load`` without external data, a check that every external
tensor lies inside the model's folder, then that data, ``onnx.checker.check_model``,
``onnx.shape_inference.infer_shapes``, and ``from_onnx``, which walks the nodes in their
(topological) order. Each op type has one small lowering in ``LOWERINGS`` (``frontends/onnx_rules.py``):

    Conv (2-D, pads symmetric or equivalent to it)      -> Conv2d
    Gemm (transA=0), MatMul with a constant weight      -> Dense, weight (out, in) = alpha·B(ᵀ)
    Add / Sub of a constant after Dense or Conv2d       -> folded into that layer's bias
    Add of two activations of equal shape               -> Add
    BatchNormalization (inference)                      -> BatchNorm
    Relu; Clip(min=0, no max)                           -> ReLU
    AveragePool (count_include_pad where pads count)    -> AvgPool2d
    GlobalAveragePool; ReduceMean over (H, W)           -> AvgPool2d (+ Flatten when H, W go)
    Flatten(axis=1); Reshape, Squeeze to (N, C·H·W)     -> Flatten; nothing when the shape stays
    Identity, Dropout (inference), Cast(Like) to float  -> nothing: the input passes through

A node whose inputs are all constants (initializers, Constant nodes, or values folded from them)
is evaluated ahead of time by ``onnx.reference``, whatever its type. Shapes read at run time
(``Shape`` of an activation, as the TorchScript exporter writes ``x.view(x.size(0), -1)``) are
evaluated for two trial batch sizes, so a Reshape is judged by what it does to both.

Activation shapes are computed by the IR ops themselves and checked against ONNX shape
inference where the model carries it. Every unsupported node becomes a Problem named by its
ONNX node name (op type and index when unnamed); all are raised together as one
UnsupportedModelError. IR names are the ONNX names made identifier-like
(``/layer1/conv/Conv`` -> ``layer1_conv_Conv``), or op type and index for unnamed nodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from snncompile.errors import ModelLoadError, Problem, UnsupportedModelError
from snncompile.frontends.names import sanitize, unique
from snncompile.frontends.lowering import Entry, Reject
from snncompile.frontends.onnx_limits import check_limits
from snncompile.frontends.onnx_rules import HINTS, LOWERINGS, NOT_FOLDED
from snncompile.frontends.onnx_values import BROKEN, FLOAT_TYPES, Act, Const, Node, Sized
from snncompile.ir import ops as ir
from snncompile.ir.graph import Graph, GraphBuilder

MIN_OPSET = 13
TRIAL_BATCHES = (5, 7)  # batch sizes tried on shapes read at run time from a symbolic batch

EXPORT_HINT = "export it with torch.onnx.export(model.eval(), (example,), path)"
DEFAULT_HINT = (
    "no Loihi 2 mapping; supported are Conv, Gemm, MatMul, BatchNormalization, Relu, "
    "AveragePool, GlobalAveragePool, Flatten, Reshape and a residual Add"
)


def load_model(path: str | Path) -> Graph:
    """The float IR graph of an ONNX file; ModelLoadError when it cannot be read or checked."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file not found; pass an .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf and onnx raise several types for a damaged file
        reason = f"{type(exc).__name__}: {_one_line(exc)}"
        message = f"{path}: not a readable ONNX model ({reason}); {EXPORT_HINT}"
        raise ModelLoadError(message) from None
    _load_external_data(model, path)
    check_limits(model, path)  # loops and sizes that would never end or fit: frontends/onnx_limits.py
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError, or a C++ error for malformed protos
        hint = f"repair or re-export the model; {EXPORT_HINT}"
        raise ModelLoadError(f"{path}: fails onnx.checker ({_one_line(exc)}); {hint}") from None
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise ModelLoadError(f"{path}: ONNX shape inference failed ({_one_line(exc)})") from None
    return from_onnx(model, source=path.name)


def from_onnx(model: onnx.ModelProto, source: str | None = None) -> Graph:
    """Lower an in-memory ModelProto to a verified float Graph.

    ``source`` names the model in errors and metadata; by default its graph's name. The model
    is not checked here (``load_model`` does that); local functions are inlined first, and
    shapes are inferred when the model carries none, so that the users of an unsupported node
    can still be checked.
    """
    source = source or model.graph.name or "ModelProto"
    for tensor in _all_tensors(model):
        if uses_external_data(tensor):
            hint = "load the model with load_model(path), which reads it from the model's folder"
            raise ModelLoadError(f"{source}: tensor '{tensor.name}' holds external data; {hint}")
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    if not model.graph.value_info:
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # inferred shapes only let more problems be listed; lowering needs none
            pass
    return _Lowering(model, source).run()


# ---------------------------------------------------------------------------------------------
# Reading the file.


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Read external tensors, refusing any whose file is not a plain file in the model's folder."""
    folder = path.parent.resolve()
    external = [t for t in _all_tensors(model) if uses_external_data(t)]
    for tensor in external:
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            where = f"'{location}', which resolves outside the model's folder"
            where = where if location else "no location"
            hint = "keep the data file next to the model (torch.onnx.export does)"
            raise ModelLoadError(f"{path}: tensor '{tensor.name}' has its data at {where}; {hint}")
        if not target.is_file():
            hint = "copy the data file next to the model"
            raise ModelLoadError(f"{path}: external data file '{location}' not found; {hint}")
    if external:
        try:
            load_external_data_for_model(model, str(folder))
        except Exception as exc:  # a short or unreadable data file
            raise ModelLoadError(f"{path}: cannot read external data ({_one_line(exc)})") from None


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor the model holds: initializers and node attributes, subgraphs and functions."""

    def from_graph(graph: onnx.GraphProto):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            yield from from_node(node)

    def from_node(node: onnx.NodeProto):
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            if attr.HasField("g"):
                yield from from_graph(attr.g)
            for graph in attr.graphs:
                yield from from_graph(graph)

    yield from from_graph(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from from_node(node)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# ---------------------------------------------------------------------------------------------
# The walk.


class _Lowering:
    """One pass over the ONNX graph's nodes, collecting IR entries and problems."""

    def __init__(self, model: onnx.ModelProto, source: str):
        self.graph = model.graph
        self.source = source
        self.opset = _default_opset(model)
        self.entries: list[Entry] = []
        self.values: dict[str, object] = {}
        self.problems: list[Problem] = []
        self.trials: tuple[int, ...] = TRIAL_BATCHES
        self.consumers = Counter(name for n in self.graph.node for name in n.input if name)
        self.consumers.update(o.name for o in self.graph.output)
        self.inferred = _inferred_dims(self.graph)

    def run(self) -> Graph:
        if self.opset is None or self.opset < MIN_OPSET:
            found = "no default-domain opset" if self.opset is None else f"opset {self.opset}"
            hint = f"{found}; re-export with opset_version>={MIN_OPSET}"
            raise UnsupportedModelError(self.source, [Problem("<model>", "opset_import", hint)])
        for tensor in self.graph.initializer:
            self.values[tensor.name] = Const(numpy_helper.to_array(tensor))
        for sparse in self.graph.sparse_initializer:
            self._graph_problem(sparse.values.name, "sparse_initializer", "use dense initializers")
            self.values[sparse.values.name] = self._broken(sparse.values.name)
        self._input()
        for index, proto in enumerate(self.graph.node):
            self._node(index, proto)
        output_key = self._output()
        if self.problems:
            raise UnsupportedModelError(self.source, self.problems)
        return self._build(output_key)

    # -- graph input and output ----------------------------------------------------------------
    def _input(self) -> None:
        inputs = [i for i in self.graph.input if i.name not in self.values]
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs) or "none"
            hint = f"{len(inputs)} inputs ({names}); take exactly one"
            self._graph_problem("input", "graph input", hint)
            for value in inputs:
                self.values[value.name] = self._broken(value.name)
            return
        (value,) = inputs
        self.values[value.name] = self._broken(value.name)
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor_type.elem_type not in FLOAT_TYPES:
            self._graph_problem(value.name, "graph input", "the input must be a float tensor")
            return
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        if len(dims) < 2 or any(d is None or d <= 0 for d in dims[1:]):
            shape = tuple("?" if d is None else d for d in dims)
            hint = f"input shape {shape} needs a batch dim first and static other dims"
            self._graph_problem(value.name, "graph input", hint)
            return
        if dims[0]:
            self.trials = (dims[0],)  # a fixed batch: run-time shapes are constants
        self.entries.append(Entry(None, ir.Input(shape=tuple(dims[1:])), []))
        self.values[value.name] = Act(0, tuple(dims[1:]))

    def _output(self) -> int | None:
        outputs = list(self.graph.output)
        if len(outputs) != 1:
            names = ", ".join(o.name for o in outputs)
            hint = f"{len(outputs)} outputs ({names}); return exactly one"
            self._graph_problem("output", "graph output", hint)
            return None
        value = self._value(outputs[0].name)
        if isinstance(value, Act):
            if value.key == BROKEN:
                return None
            key = len(self.entries)
            self.entries.append(Entry(None, ir.Output(), [value.key]))
            return key
        hint = "the output does not depend on the input"
        self._graph_problem(outputs[0].name, "graph output", hint)
        return None

    # -- nodes ---------------------------------------------------------------------------------
    def _node(self, index: int, proto: onnx.NodeProto) -> None:
        node = Node(proto, index, [self._value(name) for name in proto.input], _attrs(proto))
        present = [a for name, a in zip(proto.input, node.args) if name]
        op_type = proto.op_type
        if proto.domain not in ("", "ai.onnx"):
            hint = "custom-domain ops have no Loihi 2 mapping"
            self._reject(node, f"{proto.domain}::{op_type}", hint)
            return
        if all(isinstance(a, (Const, Sized)) for a in present) and op_type not in NOT_FOLDED:
            self._fold(node)
            return
        lowering = LOWERINGS.get(op_type)
        if lowering is None:
            self._reject(node, op_type, HINTS.get(op_type, DEFAULT_HINT))
            return
        if any(isinstance(a, Act) and a.key == BROKEN and a.dims is None for a in present):
            self._store(node, [self._broken(name) for name in proto.output])  # reported already
            return
        try:
            value = lowering(self, node)
            self._check_extra_outputs(node)
        except Reject as reject:
            self._reject(node, op_type, reject.hint)
            return
        self._store(node, [value] + [self._broken(name) for name in proto.output[1:]])

    def _fold(self, node: Node) -> None:
        """Evaluate a node on constants (once, or per trial batch size when one depends on it)."""
        from onnx.reference import ReferenceEvaluator  # slow to import; most models never fold

        proto = node.proto
        sized = any(isinstance(a, Sized) for a in node.args)
        runs = len(self.trials) if sized else 1
        try:
            evaluator = ReferenceEvaluator(proto, opsets={"": self.opset})
            results = []
            for trial in range(runs):
                feeds = {
                    name: a.arrays[trial] if isinstance(a, Sized) else a.array
                    for name, a in zip(proto.input, node.args)
                    if name
                }
                results.append(evaluator.run(None, feeds))
        except Exception as exc:  # the reference runtime lacks the op or rejects its inputs
            reason = f"{type(exc).__name__}: {_one_line(exc)}"
            hint = f"its constant inputs could not be evaluated ({reason})"
            self._reject(node, proto.op_type, hint)
            return
        values = []
        for outputs in zip(*results):
            arrays = tuple(np.asarray(o) for o in outputs)
            same = all(a.shape == arrays[0].shape and np.array_equal(a, arrays[0]) for a in arrays)
            values.append(Const(arrays[0]) if same else Sized(arrays))
        self._store(node, values)

    def _store(self, node: Node, values: list) -> None:
        for name, value in zip(node.proto.output, values):
            if not name:
                continue
            self.values[name] = value
            want = self.inferred.get(name)
            lowered = isinstance(value, Act) and value.key != BROKEN
            if lowered and want is not None and want != value.dims:
                hint = f"lowered to shape {value.dims}, but ONNX shape inference gives {want}"
                self.problems.append(Problem(node.problem_name, node.proto.op_type, hint))

    def _reject(self, node: Node, op: str, hint: str) -> None:
        self.problems.append(Problem(node.problem_name, op, hint))
        self._store(node, [self._broken(name) for name in node.proto.output])

    def _graph_problem(self, where: str, what: str, hint: str) -> None:
        self.problems.append(Problem(where, what, hint))

    def _value(self, name: str):
        if not name:
            return None  # an omitted optional input
        if name not in self.values:
            self._graph_problem(name, "tensor", "read before any node writes it; run onnx.checker")
            self.values[name] = Act(BROKEN, None)
        return self.values[name]

    def _broken(self, name: str) -> Act:
        """The value of a tensor from an unsupported node; known dims let its users be checked."""
        return Act(BROKEN, self.inferred.get(name))

    def _check_extra_outputs(self, node: Node) -> None:
        extra = [name for name in node.proto.output[1:] if name and self.consumers[name]]
        if extra:
            raise Reject(f"uses secondary output(s) {extra} (training statistics or a mask)")

    # -- helpers for the lowerings -------------------------------------------------------------
    def emit(self, node: Node, op: ir.Op, inputs: list[Act], suffix: str = "") -> Act:
        """Add an IR entry for ``node``; its value's shape comes from the op itself.

        An input may be BROKEN (from a rejected node, with dims from shape inference): the entry
        is checked like any other, and never built, since the model is refused anyway.
        """
        try:
            dims = tuple(op.infer_shape([i.dims for i in inputs]))
        except ir.ShapeError as exc:
            raise Reject(str(exc)) from None
        problems = op.check()
        if problems:
            raise Reject("; ".join(problems))
        self.entries.append(Entry(node, op, [i.key for i in inputs], suffix))
        return Act(len(self.entries) - 1, dims)

    def sole_user(self, key: int) -> bool:
        """Whether exactly one use is made of IR entry ``key`` in the whole ONNX graph."""
        names = [n for n, v in self.values.items() if isinstance(v, Act) and v.key == key]
        return sum(self.consumers[n] for n in names) == 1

    # -- the graph -----------------------------------------------------------------------------
    def _build(self, output_key: int) -> Graph:
        keep, todo = set(), [output_key]
        while todo:
            key = todo.pop()
            if key not in keep:
                keep.add(key)
                todo.extend(self.entries[key].inputs)
        names = self._names()
        builder = GraphBuilder({"source": self.source, "frontend": "onnx"})
        for key, entry in enumerate(self.entries):
            if key in keep:
                builder.add(names[key], entry.op, [names[k] for k in entry.inputs])
        return builder.build()

    def _names(self) -> dict[int, str]:
        used = {"input", "output"}
        names = {}
        for key, entry in enumerate(self.entries):
            if entry.node is None:
                names[key] = entry.op.kind.value.lower()
                continue
            proto = entry.node.proto
            base = sanitize(proto.name) if proto.name else f"{proto.op_type}_{entry.node.index}"
            names[key] = unique(base + entry.suffix, used)
        return names


# ---------------------------------------------------------------------------------------------
# Small helpers.


def _default_opset(model: onnx.ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def _inferred_dims(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    """Non-batch dims that shape inference (or the exporter) recorded, where all are static."""
    dims = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        shape = value.type.tensor_type.shape.dim
        rest = [d.dim_value if d.HasField("dim_value") else None for d in shape[1:]]
        if len(shape) >= 1 and all(d is not None for d in rest):
            dims[value.name] = tuple(rest)
    return dims


def _attrs(proto: onnx.NodeProto) -> dict:
    attrs = {}
    for attr in proto.attribute:
        value = onnx.helper.get_attribute_value(attr)
        attrs[attr.name] = value.decode() if isinstance(value, bytes) else value
    return attrs
