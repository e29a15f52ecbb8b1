"""ONNX frontend: lower an ONNX model (default domain, opset 13 and up) to a float IR graph.

``load_model`` reads a file: ``onnx.load`` without external data, a check that every external
tensor lies inside the model's folder, then that data, ``onnx.checker.check_model``,
``onnx.shape_inference.infer_shapes``, and ``from_onnx``, which walks the nodes in their
(topological) order. Each op type has one small lowering in ``LOWERINGS``:

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

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from snncompile.ir import ops as ir
from snncompile.ir.graph import Graph, GraphBuilder

MIN_OPSET = 13
BROKEN = -1  # the key of an activation produced by an unsupported node
TRIAL_BATCHES = (5, 7)  # batch sizes tried on shapes read at run time from a symbolic batch

EXPORT_HINT = "export it with torch.onnx.export(model.eval(), (example,), path)"
DEFAULT_HINT = (
    "no Loihi 2 mapping; supported are Conv, Gemm, MatMul, BatchNormalization, Relu, "
    "AveragePool, GlobalAveragePool, Flatten, Reshape and a residual Add"
)
FLOAT_TYPES = frozenset({
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
})


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
# Values flowing along the ONNX graph during the walk.


@dataclass(frozen=True, eq=False)
class _Act:
    """An activation: the output of IR entry ``key``; ``dims`` excludes the batch dim."""

    key: int
    dims: tuple[int, ...] | None


@dataclass(frozen=True, eq=False)
class _Const:
    """A tensor known ahead of time (an initializer, a Constant, or folded from them)."""

    array: np.ndarray


@dataclass(frozen=True, eq=False)
class _Sized:
    """A small tensor that depends on the batch size: one array per trial batch size."""

    arrays: tuple[np.ndarray, ...]


@dataclass
class _Node:
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
            self.values[tensor.name] = _Const(numpy_helper.to_array(tensor))
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
        self.values[value.name] = _Act(0, tuple(dims[1:]))

    def _output(self) -> int | None:
        outputs = list(self.graph.output)
        if len(outputs) != 1:
            names = ", ".join(o.name for o in outputs)
            hint = f"{len(outputs)} outputs ({names}); return exactly one"
            self._graph_problem("output", "graph output", hint)
            return None
        value = self._value(outputs[0].name)
        if isinstance(value, _Act):
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
        node = _Node(proto, index, [self._value(name) for name in proto.input], _attrs(proto))
        present = [a for name, a in zip(proto.input, node.args) if name]
        op_type = proto.op_type
        if proto.domain not in ("", "ai.onnx"):
            hint = "custom-domain ops have no Loihi 2 mapping"
            self._reject(node, f"{proto.domain}::{op_type}", hint)
            return
        if all(isinstance(a, (_Const, _Sized)) for a in present) and op_type not in NOT_FOLDED:
            self._fold(node)
            return
        lowering = LOWERINGS.get(op_type)
        if lowering is None:
            self._reject(node, op_type, HINTS.get(op_type, DEFAULT_HINT))
            return
        if any(isinstance(a, _Act) and a.key == BROKEN and a.dims is None for a in present):
            self._store(node, [self._broken(name) for name in proto.output])  # reported already
            return
        try:
            value = lowering(self, node)
            self._check_extra_outputs(node)
        except Reject as reject:
            self._reject(node, op_type, reject.hint)
            return
        self._store(node, [value] + [self._broken(name) for name in proto.output[1:]])

    def _fold(self, node: _Node) -> None:
        """Evaluate a node on constants (once, or per trial batch size when one depends on it)."""
        from onnx.reference import ReferenceEvaluator  # slow to import; most models never fold

        proto = node.proto
        sized = any(isinstance(a, _Sized) for a in node.args)
        runs = len(self.trials) if sized else 1
        try:
            evaluator = ReferenceEvaluator(proto, opsets={"": self.opset})
            results = []
            for trial in range(runs):
                feeds = {
                    name: a.arrays[trial] if isinstance(a, _Sized) else a.array
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
            values.append(_Const(arrays[0]) if same else _Sized(arrays))
        self._store(node, values)

    def _store(self, node: _Node, values: list) -> None:
        for name, value in zip(node.proto.output, values):
            if not name:
                continue
            self.values[name] = value
            want = self.inferred.get(name)
            lowered = isinstance(value, _Act) and value.key != BROKEN
            if lowered and want is not None and want != value.dims:
                hint = f"lowered to shape {value.dims}, but ONNX shape inference gives {want}"
                self.problems.append(Problem(node.problem_name, node.proto.op_type, hint))

    def _reject(self, node: _Node, op: str, hint: str) -> None:
        self.problems.append(Problem(node.problem_name, op, hint))
        self._store(node, [self._broken(name) for name in node.proto.output])

    def _graph_problem(self, where: str, what: str, hint: str) -> None:
        self.problems.append(Problem(where, what, hint))

    def _value(self, name: str):
        if not name:
            return None  # an omitted optional input
        if name not in self.values:
            self._graph_problem(name, "tensor", "read before any node writes it; run onnx.checker")
            self.values[name] = _Act(BROKEN, None)
        return self.values[name]

    def _broken(self, name: str) -> _Act:
        """The value of a tensor from an unsupported node; known dims let its users be checked."""
        return _Act(BROKEN, self.inferred.get(name))

    def _check_extra_outputs(self, node: _Node) -> None:
        extra = [name for name in node.proto.output[1:] if name and self.consumers[name]]
        if extra:
            raise Reject(f"uses secondary output(s) {extra} (training statistics or a mask)")

    # -- helpers for the lowerings -------------------------------------------------------------
    def emit(self, node: _Node, op: ir.Op, inputs: list[_Act], suffix: str = "") -> _Act:
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
        return _Act(len(self.entries) - 1, dims)

    def sole_user(self, key: int) -> bool:
        """Whether exactly one use is made of IR entry ``key`` in the whole ONNX graph."""
        names = [n for n, v in self.values.items() if isinstance(v, _Act) and v.key == key]
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


def _act(value, what: str = "input") -> _Act:
    if isinstance(value, _Act):
        return value
    raise Reject(f"its {what} must be computed from the model's input, not a constant")


def _const(value, what: str, optional: bool = False) -> np.ndarray | None:
    if isinstance(value, _Const):
        return value.array
    if value is None and optional:
        return None
    if isinstance(value, _Sized):
        raise Reject(f"its {what} depends on the batch size")
    if isinstance(value, _Act):
        raise Reject(f"its {what} must be an initializer or constant, not computed from the input")
    raise Reject(f"its {what} is missing")


def _image(x: _Act) -> tuple[int, int, int]:
    if len(x.dims) != 3:
        raise Reject(f"expects an input of shape (C, H, W) per sample, got {x.dims}")
    return x.dims


def _vector(x: _Act) -> int:
    if len(x.dims) != 1:
        raise Reject(f"expects an input of shape (features,) per sample, got {x.dims}")
    return x.dims[0]


def _ints(attrs: dict, name: str, default: list[int]) -> list[int]:
    value = attrs.get(name)
    return [int(v) for v in value] if value else list(default)


def _window_count(size: int, begin: int, end: int, kernel: int, stride: int, dilation: int,
                  ceil: bool = False) -> int:
    span = size + begin + end - dilation * (kernel - 1) - 1
    count = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (count - 1) * stride >= size + begin:
        count -= 1  # the last window would start in the end padding; ONNX and torch drop it
    return count


def _auto_pads(attrs: dict, hw, kernel, stride, dilation) -> tuple[list[int], list[int]]:
    """(begins, ends) per spatial axis from ``auto_pad`` and ``pads``."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return [0, 0], [0, 0]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(hw, kernel, stride, dilation):
            total = max(0, (-(-size // s) - 1) * s + d * (k - 1) + 1 - size)
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        return begins, ends
    if auto_pad != "NOTSET":
        raise Reject(f"auto_pad={auto_pad} is not supported")
    pads = _ints(attrs, "pads", [0, 0, 0, 0])
    return pads[:2], pads[2:]


def _symmetric_padding(begins, ends, hw, kernel, stride, dilation) -> tuple[int, int]:
    """IR padding equal to ONNX's (begin, end) pads: the windows start at the same places, so
    asymmetric pads are exact when the (begin, begin) padding gives as many windows."""
    padding = []
    for size, b, e, k, s, d in zip(hw, begins, ends, kernel, stride, dilation):
        if b != e and _window_count(size, b, e, k, s, d) != _window_count(size, b, b, k, s, d):
            raise Reject(
                f"asymmetric pads (begin {list(begins)}, end {list(ends)}) change the output "
                "shape; use symmetric padding"
            )
        padding.append(b)
    return tuple(padding)


def _bias_vector(const: np.ndarray, dims: tuple[int, ...], per_channel: bool) -> np.ndarray:
    """A constant added to activations of shape (N, *dims) as one bias per output channel."""
    full_shape = (1,) + tuple(dims)
    try:
        if np.broadcast_shapes(const.shape, full_shape) != full_shape:
            raise ValueError
    except ValueError:
        hint = f"a constant of shape {const.shape} does not broadcast to {full_shape}"
        raise Reject(hint) from None
    full = np.broadcast_to(const.astype(np.float64), full_shape)[0]
    if not per_channel:
        return full.reshape(-1)
    rows = full.reshape(dims[0], -1)
    if not np.all(rows == rows[:, :1]):
        raise Reject("the constant varies within a channel; only a per-channel bias folds")
    return rows[:, 0].copy()


def _reshape_to(low: _Lowering, node: _Node, x: _Act, out: tuple[int, ...], what: str) -> _Act:
    """A reshape of ``x`` to non-batch dims ``out``: nothing, a Flatten, or a Problem."""
    if out == x.dims:
        return x
    if out == (math.prod(x.dims),):
        return low.emit(node, ir.Flatten(), [x])
    raise Reject(
        f"{what} {x.dims} -> {out} per sample: only flattening every non-batch dim "
        "(x.flatten(1), x.view(x.size(0), -1)) is supported"
    )


def _reshape_result(in_shape: tuple[int, ...], target: np.ndarray,
                    allowzero: bool) -> tuple[int, ...]:
    """ONNX Reshape's output shape: 0 copies the input dim (unless allowzero), -1 is inferred."""
    shape = [int(t) for t in np.asarray(target).reshape(-1)]
    if not allowzero:
        shape = [in_shape[i] if t == 0 and i < len(in_shape) else t for i, t in enumerate(shape)]
    total = math.prod(in_shape)
    if shape.count(-1) > 1 or any(t < -1 for t in shape):
        raise Reject(f"invalid reshape target {shape}")
    if -1 in shape:
        known = math.prod(t for t in shape if t != -1)
        if known == 0 or total % known:
            raise Reject(f"cannot reshape {in_shape} to {shape}")
        shape[shape.index(-1)] = total // known
    if math.prod(shape) != total:
        raise Reject(f"cannot reshape {in_shape} to {shape}")
    return tuple(shape)


# ---------------------------------------------------------------------------------------------
# Lowerings: one small function per ONNX op type. Each returns the value of output 0.


def _conv(low: _Lowering, n: _Node) -> _Act:
    x = _act(n.arg(0))
    weight = _const(n.arg(1), "weight")
    if weight.ndim != 4:
        raise Reject(f"only 2-D convolution is supported (weight of rank {weight.ndim})")
    _c, *hw = _image(x)
    kernel = tuple(weight.shape[2:])
    if "kernel_shape" in n.attrs and tuple(n.attrs["kernel_shape"]) != kernel:
        raise Reject(f"kernel_shape {n.attrs['kernel_shape']} differs from the weight's {kernel}")
    stride = _ints(n.attrs, "strides", [1, 1])
    dilation = _ints(n.attrs, "dilations", [1, 1])
    begins, ends = _auto_pads(n.attrs, hw, kernel, stride, dilation)
    op = ir.Conv2d(
        weight=weight,
        bias=_const(n.arg(2), "bias", optional=True),
        stride=tuple(stride),
        padding=_symmetric_padding(begins, ends, hw, kernel, stride, dilation),
        dilation=tuple(dilation),
        groups=int(n.attrs.get("group", 1)),
    )
    return low.emit(n, op, [x])


def _gemm(low: _Lowering, n: _Node) -> _Act:
    x = _act(n.arg(0))
    if n.attrs.get("transA", 0):
        raise Reject("transA=1 transposes the activation; only transA=0 is supported")
    b = _const(n.arg(1), "weight (B)")
    weight = b.T if not n.attrs.get("transB", 0) else b  # IR layout: (out, in)
    weight = float(n.attrs.get("alpha", 1.0)) * weight.astype(np.float64)
    c = _const(n.arg(2), "bias (C)", optional=True)
    bias = None
    if c is not None:
        bias = float(n.attrs.get("beta", 1.0)) * _bias_vector(c, (weight.shape[0],), False)
    return _dense(low, n, x, weight, bias)


def _matmul(low: _Lowering, n: _Node) -> _Act:
    x = _act(n.arg(0), "left operand")
    b = _const(n.arg(1), "right operand (the weight)")
    if b.ndim != 2:
        raise Reject(f"only a product with a 2-D constant weight is supported (rank {b.ndim})")
    return _dense(low, n, x, b.T, None)


def _dense(low: _Lowering, n: _Node, x: _Act, weight: np.ndarray, bias) -> _Act:
    features = _vector(x)
    if weight.shape[1] != features:
        raise Reject(f"weight of shape {weight.shape} (out, in) for {features} input features")
    return low.emit(n, ir.Dense(weight=weight, bias=bias), [x])


def _add(low: _Lowering, n: _Node, sign: float = 1.0) -> _Act:
    a, b = n.arg(0), n.arg(1)
    if isinstance(a, _Act) and isinstance(b, _Act):
        if sign < 0:
            raise Reject("subtracting activations has no spiking mapping; only a residual add")
        if a.dims != b.dims:
            raise Reject(f"add of shapes {a.dims} and {b.dims}: broadcasting is not supported")
        if a.key == b.key != BROKEN:
            raise Reject("x + x: the IR cannot take one input twice; double the layer's weights")
        return low.emit(n, ir.Add(), [a, b])
    if isinstance(b, _Act):
        if sign < 0:
            raise Reject("constant minus activation has no spiking mapping")
        a, b = b, a
    return _fold_constant(low, a, _const(b, "second operand"), sign)


def _fold_constant(low: _Lowering, x: _Act, const: np.ndarray, sign: float) -> _Act:
    """Fold ``x + sign·const`` into the bias of the Dense or Conv2d that computes x."""
    if not np.any(const) or x.key == BROKEN:  # BROKEN: from a rejected node, reported already
        _bias_vector(const, x.dims, False)  # the constant must still broadcast to x's shape
        return x
    entry = low.entries[x.key]
    if not isinstance(entry.op, (ir.Dense, ir.Conv2d)):
        raise Reject(
            f"adding a constant to the output of {entry.op.kind.value} has no spiking mapping; "
            "only a bias right after a Gemm, MatMul or Conv folds into that layer"
        )
    if not low.sole_user(x.key):
        raise Reject("the layer before the add has other users; its bias cannot absorb it")
    vector = _bias_vector(const, x.dims, isinstance(entry.op, ir.Conv2d))
    bias = sign * vector if entry.op.bias is None else entry.op.bias + sign * vector
    entry.op = dataclasses.replace(entry.op, bias=bias)
    return x


def _sub(low: _Lowering, n: _Node) -> _Act:
    return _add(low, n, sign=-1.0)


def _relu(low: _Lowering, n: _Node) -> _Act:
    return low.emit(n, ir.ReLU(), [_act(n.arg(0))])


def _clip(low: _Lowering, n: _Node) -> _Act:
    """Clip(0) is Relu; Clip(0, a) with a constant a > 0 a clipped ReLU (ReLU6: a = 6). Opset < 11
    carries min and max as attributes."""
    low_bound = _const(n.arg(1), "min", optional=True) if n.arg(1) is not None else n.attrs.get("min")
    high = _const(n.arg(2), "max", optional=True) if n.arg(2) is not None else n.attrs.get("max")
    if low_bound is None or np.any(np.asarray(low_bound) != 0):
        raise Reject("only Clip(min=0), Relu, or Clip(0, a), a clipped ReLU, is supported")
    if high is not None and (np.size(high) != 1 or not float(np.asarray(high).reshape(-1)[0]) > 0):
        raise Reject("Clip(0, a) needs one constant a > 0")
    upper = None if high is None else float(np.asarray(high).reshape(-1)[0])
    return low.emit(n, ir.ReLU(upper=upper), [_act(n.arg(0))])


def _max_pool(low: _Lowering, n: _Node) -> _Act:
    """MaxPool -> MaxPool2d (passes.maxpool refuses it or, with --maxpool avg, averages)."""
    x = _act(n.arg(0))
    _c, *hw = _image(x)
    if len(n.proto.output) > 1 and n.proto.output[1]:
        raise Reject("uses MaxPool's indices output")
    kernel = _ints(n.attrs, "kernel_shape", [])
    if len(kernel) != 2:
        raise Reject(f"only 2-D pooling is supported (kernel_shape {kernel})")
    stride = _ints(n.attrs, "strides", [1, 1])
    dilation = _ints(n.attrs, "dilations", [1, 1])
    begins, ends = _auto_pads(n.attrs, hw, kernel, stride, dilation)
    if n.attrs.get("ceil_mode", 0):
        axes = list(zip(hw, begins, ends, kernel, stride))
        if [_window_count(*a, d) for a, d in zip(axes, dilation)] != [
                _window_count(*a, d, ceil=True) for a, d in zip(axes, dilation)]:
            raise Reject("ceil_mode=1 adds partial windows; use ceil_mode=0")
    padding = _symmetric_padding(begins, ends, hw, kernel, stride, dilation)
    op = ir.MaxPool2d(kernel=tuple(kernel), stride=tuple(stride), padding=padding, dilation=tuple(dilation))
    return low.emit(n, op, [x])


def _concat(low: _Lowering, n: _Node) -> _Act:
    xs = [_act(a, "inputs") for a in n.args]
    axis = int(n.attrs.get("axis", 1))
    rank = len(xs[0].dims) + 1
    if axis % rank != 1:
        raise Reject(f"Concat along axis {axis}; only along channels (axis=1) is supported")
    if len({x.key for x in xs}) != len(xs):
        raise Reject("concatenates one activation twice; the IR takes each input once")
    return low.emit(n, ir.Concat(), xs)


def _batch_norm(low: _Lowering, n: _Node) -> _Act:
    x = _act(n.arg(0))
    if n.attrs.get("training_mode", 0):
        raise Reject("BatchNormalization in training mode; export after model.eval()")
    if not x.dims:
        raise Reject("BatchNormalization needs a channel dim")
    op = ir.BatchNorm(
        gamma=_const(n.arg(1), "scale"),
        beta=_const(n.arg(2), "B"),
        mean=_const(n.arg(3), "mean"),
        var=_const(n.arg(4), "var"),
        eps=float(n.attrs.get("epsilon", 1e-5)),
    )
    channels = x.dims[0]
    for name in ("gamma", "beta", "mean", "var"):
        if getattr(op, name).shape != (channels,):
            raise Reject(f"{name} of shape {getattr(op, name).shape} for {channels} channels")
    return low.emit(n, op, [x])


def _average_pool(low: _Lowering, n: _Node) -> _Act:
    x = _act(n.arg(0))
    _c, *hw = _image(x)
    kernel = _ints(n.attrs, "kernel_shape", [])
    if len(kernel) != 2:
        raise Reject(f"only 2-D pooling is supported (kernel_shape {kernel})")
    stride = _ints(n.attrs, "strides", [1, 1])
    if _ints(n.attrs, "dilations", [1, 1]) != [1, 1]:
        raise Reject("dilated pooling is not supported")
    begins, ends = _auto_pads(n.attrs, hw, kernel, stride, [1, 1])
    reasons = []
    # each option is refused only where it changes the result
    if n.attrs.get("ceil_mode", 0):
        axes = list(zip(hw, begins, ends, kernel, stride))
        floor = [_window_count(*axis, 1) for axis in axes]
        ceil = [_window_count(*axis, 1, ceil=True) for axis in axes]
        if floor != ceil:
            reasons.append("ceil_mode=1 adds partial windows; use ceil_mode=0")
    if not n.attrs.get("count_include_pad", 0) and any(begins + ends):
        reasons.append("count_include_pad=0 with padding; use count_include_pad=1")
    if reasons:
        raise Reject("; ".join(reasons))
    padding = _symmetric_padding(begins, ends, hw, kernel, stride, [1, 1])
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        # torch's avg_pool2d, which evaluates the IR op, refuses such windows of padding only
        raise Reject(f"pads {padding} exceed half the kernel {tuple(kernel)}; pad less")
    op = ir.AvgPool2d(kernel=tuple(kernel), stride=tuple(stride), padding=padding)
    return low.emit(n, op, [x])


def _global_average_pool(low: _Lowering, n: _Node) -> _Act:
    x = _act(n.arg(0))
    _c, h, w = _image(x)
    return low.emit(n, ir.AvgPool2d(kernel=(h, w), stride=(h, w)), [x])


def _reduce_mean(low: _Lowering, n: _Node) -> _Act:
    x = _act(n.arg(0))
    axes_value = n.arg(1)
    axes = _const(axes_value, "axes") if axes_value is not None else n.attrs.get("axes")
    rank = len(x.dims) + 1
    if axes is None or len(axes) == 0:
        if n.attrs.get("noop_with_empty_axes", 0):
            return x
        raise Reject("ReduceMean over every axis, the batch included, is not supported")
    if {int(a) % rank for a in np.asarray(axes).reshape(-1)} != {2, 3} or rank != 4:
        raise Reject("only the mean over H and W (global average pooling) is supported")
    _c, h, w = x.dims
    pooled = low.emit(n, ir.AvgPool2d(kernel=(h, w), stride=(h, w)), [x])
    if n.attrs.get("keepdims", 1):
        return pooled
    return low.emit(n, ir.Flatten(), [pooled], suffix="_flatten")


def _flatten(low: _Lowering, n: _Node) -> _Act:
    x = _act(n.arg(0))
    axis = int(n.attrs.get("axis", 1))
    if axis % (len(x.dims) + 1) != 1:
        raise Reject(f"Flatten(axis={axis}); only axis=1 (keeping the batch dim) is supported")
    return _reshape_to(low, n, x, (math.prod(x.dims),), "flatten")


def _reshape(low: _Lowering, n: _Node) -> _Act:
    x = _act(n.arg(0), "data")
    target = n.arg(1)
    if isinstance(target, _Sized):
        targets = target.arrays
    else:
        targets = (_const(target, "shape"),) * len(low.trials)
    allowzero = bool(n.attrs.get("allowzero", 0))
    results = [
        _reshape_result((batch,) + x.dims, shape, allowzero)
        for batch, shape in zip(low.trials, targets)
    ]
    if any(out[:1] != (batch,) for batch, out in zip(low.trials, results)):
        shown = ", ".join(f"batch {b}: {out}" for b, out in zip(low.trials, results))
        raise Reject(f"the reshape does not keep the batch dim first ({shown})")
    if len({out[1:] for out in results}) != 1:
        raise Reject(f"the reshape's per-sample shape depends on the batch size: {results}")
    return _reshape_to(low, n, x, results[0][1:], "reshape")


def _squeeze(low: _Lowering, n: _Node) -> _Act:
    x = _act(n.arg(0))
    axes_value = n.arg(1)
    axes = _const(axes_value, "axes") if axes_value is not None else n.attrs.get("axes")
    rank = len(x.dims) + 1
    if axes is None:
        if low.trials == (1,):
            raise Reject("Squeeze without axes would drop the batch dim of size 1; give axes")
        drop = {i + 1 for i, d in enumerate(x.dims) if d == 1}
    else:
        drop = {int(a) % rank for a in np.asarray(axes).reshape(-1)}
    if 0 in drop:
        raise Reject("squeezing the batch dim is not supported")
    if any(x.dims[a - 1] != 1 for a in drop):
        raise Reject(f"squeeze of axes {sorted(drop)} that are not of size 1 in {x.dims}")
    out = tuple(d for i, d in enumerate(x.dims) if i + 1 not in drop)
    return _reshape_to(low, n, x, out, "squeeze")


def _shape(low: _Lowering, n: _Node) -> _Const | _Sized:
    x = _act(n.arg(0), "data")
    start, end = n.attrs.get("start", 0), n.attrs.get("end")
    arrays = tuple(np.array(((batch,) + x.dims)[start:end], dtype=np.int64) for batch in low.trials)
    if all(np.array_equal(a, arrays[0]) for a in arrays):
        return _Const(arrays[0])
    return _Sized(arrays)


def _dropout(low: _Lowering, n: _Node) -> _Act:
    training = _const(n.arg(2), "training_mode", optional=True)
    if training is not None and bool(np.asarray(training).reshape(-1)[0]):
        raise Reject("Dropout in training mode; export after model.eval()")
    return _act(n.arg(0))


def _identity(low: _Lowering, n: _Node) -> _Act:
    return _act(n.arg(0))


def _cast(low: _Lowering, n: _Node) -> _Act:
    if n.attrs.get("to") not in FLOAT_TYPES:
        name = onnx.TensorProto.DataType.Name(n.attrs.get("to", 0))
        raise Reject(f"conversion of an activation to {name}; keep the model in float")
    return _act(n.arg(0))


def _cast_like(low: _Lowering, n: _Node) -> _Act | _Const:
    """CastLike(value, like): activations are float, so only a constant's dtype can change.

    The dynamo exporter without its optimizer writes CastLike(0.0, activation) for the zero
    bias of a bias-free Conv; the constant becomes float64, the IR's precision.
    """
    value, like = n.arg(0), n.arg(1)
    if isinstance(like, _Const) and not np.issubdtype(like.array.dtype, np.floating):
        raise Reject(f"conversion to {like.array.dtype}; keep the model in float")
    if isinstance(value, _Const):
        return _Const(value.array.astype(np.float64))
    return _act(value)


LOWERINGS: dict[str, Callable[[_Lowering, _Node], object]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _add,
    "Sub": _sub,
    "Relu": _relu,
    "Clip": _clip,
    "MaxPool": _max_pool,
    "Concat": _concat,
    "BatchNormalization": _batch_norm,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_average_pool,
    "ReduceMean": _reduce_mean,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Shape": _shape,
    "Dropout": _dropout,
    "Identity": _identity,
    "Cast": _cast,
    "CastLike": _cast_like,
}

# Never evaluated ahead of time, even on constant inputs: their values differ run to run.
NOT_FOLDED = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
    "Multinomial",
})

HINTS: dict[str, str] = {
    **dict.fromkeys(
        ("GlobalMaxPool", "MaxRoiPool", "MaxUnpool", "LpPool", "GlobalLpPool"),
        "use AveragePool (nn.AvgPool2d) instead of max pooling",
    ),
    **dict.fromkeys(
        ("Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Celu", "Gelu", "HardSigmoid",
         "HardSwish", "Softplus", "Softsign", "Mish", "PRelu", "ThresholdedRelu", "Swish"),
        "use Relu",
    ),
    **dict.fromkeys(
        ("Softmax", "LogSoftmax", "Hardmax"),
        "remove the softmax; the predicted class is the argmax of the logits",
    ),
    "ConvTranspose": "transposed convolution has no Loihi 2 mapping",
    "ConvInteger": "export the float model; snncompile quantizes for Loihi 2 itself",
    **dict.fromkeys(
        ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
         "DynamicQuantizeLinear"),
        "export the float model; snncompile quantizes for Loihi 2 itself",
    ),
    **dict.fromkeys(
        ("LayerNormalization", "GroupNormalization", "InstanceNormalization", "LRN",
         "MeanVarianceNormalization", "RMSNormalization"),
        "use BatchNorm, which folds into the preceding layer",
    ),
    **dict.fromkeys(
        ("Mul", "Div", "Pow", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Abs", "Max", "Min",
         "Sum", "Mean"),
        "arithmetic on activations has no spiking mapping; only a residual add is supported",
    ),
    **dict.fromkeys(
        ("Split", "Slice", "Gather", "GatherElements", "GatherND", "Tile", "Expand",
         "Transpose", "Unsqueeze", "Pad", "SpaceToDepth", "DepthToSpace"),
        "reshaping and slicing activations are not supported "
        "(flattening, channel Concat and a convolution's own padding are)",
    ),
    **dict.fromkeys(("Resize", "Upsample"), "resizing is not supported"),
    **dict.fromkeys(("LSTM", "GRU", "RNN"), "recurrent layers are not supported"),
    **dict.fromkeys(
        ("ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
         "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "TopK"),
        "only ReduceMean over H and W (global average pooling) is supported",
    ),
    **dict.fromkeys(("If", "Loop", "Scan"), "control flow is not supported"),
}
