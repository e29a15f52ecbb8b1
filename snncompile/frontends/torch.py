"""Torch frontend: lower a torch.export program (a saved file or a module) to a float IR graph.

The walk follows ``ep.graph_module.graph`` node by node; each aten op has one small lowering in
``LOWERINGS``. Exported graphs hold the high-level ops (left column); decomposed graphs (after
``run_decompositions``, which runs here only to make in-place ops functional) hold the others:

    conv2d, convolution (2-D, not transposed)           -> Conv2d
    linear; addmm, mm, matmul with a constant weight     -> Dense, weight (out, in)
    batch_norm, native_batch_norm,
      _native_batch_norm_legit[_no_training], eval only  -> BatchNorm (getitem 0 is its output)
    relu, relu_, clamp(min=0)                            -> ReLU
    relu6, hardtanh(0, a), clamp(0, a)                   -> ReLU(upper=a) (a clipped ReLU)
    max_pool2d                                           -> MaxPool2d (passes.maxpool decides)
    cat along channels                                   -> Concat
    avg_pool2d; adaptive_avg_pool2d, mean over (H, W)    -> AvgPool2d (+ Flatten when H, W go)
    flatten, view, reshape, squeeze to (N, C*H*W)        -> Flatten; nothing when the shape stays
    add, add_ of two activations of equal shape          -> Add
    dropout (eval), clone, detach, alias, _to_copy, ...  -> nothing: the input passes through
    t, permute, view, mul, ... on constants only         -> folded into a constant

Parameters, buffers and lifted constants come from ``ep.state_dict`` / ``ep.constants`` through
``ep.graph_signature``. Shapes come from each node's ``meta["val"]``, so reshapes are judged by
what they do, whatever the batch size of the example. Every unsupported node becomes a Problem
(IR-style name, aten op, hint); all of them are raised together as one UnsupportedModelError.

IR names come from the module that owns each node (``nn_module_stack``): ``features.0`` gives
``features_0``, a plain Sequential's ``0`` gives ``conv2d_0``; a module with submodules or ops
of several kinds adds the kind (``block_add``); ops outside any submodule keep their fx name
(``relu``, ``add_1``).
"""

from __future__ import annotations

import math
import operator
import re
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import fx
from torch._ops import OpOverload
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from snncompile.errors import ModelLoadError, Problem, UnsupportedModelError
from snncompile.frontends.names import sanitize, unique
from snncompile.frontends.lowering import Entry, Reject
from snncompile.frontends.pt2_archive import read_exported_program
from snncompile.frontends.snn_ops import LOWERINGS as SNN_LOWERINGS
from snncompile.frontends.torch_values import Act, Const, Items
from snncompile.ir import ops as ir
from snncompile.ir.graph import Graph, GraphBuilder

BROKEN = -1  # the key of an activation produced by an unsupported node

DEFAULT_HINT = (
    "no Loihi 2 mapping; supported are Conv2d, Linear, BatchNorm, ReLU, AvgPool2d, "
    "Flatten and a residual add"
)


def load_model(path: str | Path) -> Graph:
    """The float IR graph of a file written by ``torch.export.save`` (any name or suffix)."""
    program = read_exported_program(path)
    return from_exported(program, source=Path(path).name)


def from_module(module: torch.nn.Module, example_input: torch.Tensor) -> Graph:
    """Export ``module`` in eval mode on one example batch and lower it.

    The module's train/eval flags are restored afterwards.
    """
    source = type(module).__name__
    modes = {m: m.training for m in module.modules()}
    try:
        program = torch.export.export(module.eval(), (example_input,))
    except Exception as exc:  # export reports untraceable code with many exception types
        text = str(exc).strip().splitlines()
        reason = text[0] if text else type(exc).__name__
        hint = "forward() must be traceable by torch.export"
        raise ModelLoadError(f"{source}: torch.export.export failed ({reason}); {hint}") from exc
    finally:
        for m, training in modes.items():
            m.training = training
    return from_exported(program, source=source)


def from_exported(program: ExportedProgram, source: str | None = None) -> Graph:
    """Lower an ExportedProgram to a verified float Graph.

    ``source`` names the model in errors and metadata; by default its root module's class.
    """
    source = source or _root_class(program) or "ExportedProgram"
    if _has_inplace_ops(program):
        try:
            with warnings.catch_warnings():
                # torch 2.13's own pytree code trips its LeafSpec deprecation while retracing
                warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
                program = program.run_decompositions({})
        except Exception as exc:  # functionalization failed: report it as a model problem
            hint = f"in-place ops could not be made functional ({type(exc).__name__})"
            problem = Problem("<graph>", "run_decompositions", hint + "; use out-of-place ops")
            raise UnsupportedModelError(source, [problem]) from exc
    return _Lowering(program, source).run()


# ---------------------------------------------------------------------------------------------
# The walk.


class _Lowering:
    """One pass over an ExportedProgram's graph, collecting IR entries and problems."""

    def __init__(self, program: ExportedProgram, source: str):
        self.program = program
        self.source = source
        self.entries: list[Entry] = []
        self.values: dict[fx.Node, object] = {}
        # (fx node, or a name for graph-level problems; aten op; hint)
        self.problems: list[tuple[fx.Node | str, str, str]] = []
        self.input_key: int | None = None
        self.output_key: int | None = None

    def run(self) -> Graph:
        specs = {
            spec.arg.name: spec
            for spec in self.program.graph_signature.input_specs
            if hasattr(spec.arg, "name")
        }
        with torch.no_grad():
            for node in self.program.graph_module.graph.nodes:
                if node.op == "placeholder":
                    self._placeholder(node, specs.get(node.name))
                elif node.op == "call_function":
                    self._call(node)
                elif node.op == "output":
                    self._output(node)
                else:
                    self._problem(node, node.op, "get_attr and submodule calls are not supported")
        if self.input_key is None:
            self.problems.append(("input", "placeholder", "the model takes no tensor input"))
        names = _Namer(self).names()
        if self.problems:
            found = [Problem(names.get(n, n), op, hint) for n, op, hint in self.problems]
            raise UnsupportedModelError(self.source, found)
        return self._build(names)

    # -- nodes ---------------------------------------------------------------------------------
    def _placeholder(self, node: fx.Node, spec) -> None:
        if spec is None or spec.kind in (InputKind.CUSTOM_OBJ, InputKind.TOKEN):
            return
        if spec.kind != InputKind.USER_INPUT:
            tensor = self._stored_tensor(spec.target)
            if tensor is None:
                self._problem(node, "placeholder", f"no stored tensor for '{spec.target}'")
            else:
                self.values[node] = Const(tensor)
            return
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            return  # a non-tensor input (int, None) that export specialised
        shape = _dims(node)
        if self.input_key is not None:
            self._problem(node, "placeholder", "a second tensor input; models take exactly one")
        elif len(shape) < 2 or not all(isinstance(d, int) for d in shape[1:]):
            hint = f"input shape {shape} needs a batch dim and static other dims"
            self._problem(node, "placeholder", hint)
        elif not val.dtype.is_floating_point:
            self._problem(node, "placeholder", f"input dtype {val.dtype}; use a float input")
        else:
            self.input_key = len(self.entries)
            self.entries.append(Entry(node, ir.Input(shape=shape[1:]), []))
            self.values[node] = Act(self.input_key, shape)

    def _call(self, node: fx.Node) -> None:
        target = node.target
        val = node.meta.get("val")
        tensor_result = isinstance(val, (torch.Tensor, tuple, list))
        if target is operator.getitem and tensor_result:
            lowering = _getitem
            args = {"self": self._resolve(node.args[0]), "index": node.args[1]}
        elif not isinstance(target, OpOverload):
            if tensor_result:
                self._problem(node, str(target), DEFAULT_HINT)
            return  # integer maths on symbolic sizes and the like
        else:
            key = _op_key(target)
            if key in SKIPPED or not tensor_result:
                return
            if key in FOLDABLE and self._constant_args(node):
                self.values[node] = Const(self._fold(node))
                return
            args = self._bind(node)
            lowering = LOWERINGS.get(key)
            if lowering is None:
                self._problem(node, str(target), HINTS.get(key, DEFAULT_HINT))
                return
        try:
            self.values[node] = lowering(self, node, args)
        except Reject as reject:
            self._problem(node, str(target), reject.hint)

    def _output(self, node: fx.Node) -> None:
        results = node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],)
        specs = self.program.graph_signature.output_specs
        user = [r for r, s in zip(results, specs) if s.kind == OutputKind.USER_OUTPUT]
        other = [s.target for s in specs if s.kind != OutputKind.USER_OUTPUT]
        if other:
            hint = f"forward() updates {', '.join(map(str, other))}; export after model.eval()"
            self.problems.append(("output", "mutation", hint))
        if len(user) != 1:
            self.problems.append(("output", "output", f"{len(user)} outputs; return exactly one"))
            return
        value = self._resolve(user[0])
        if not isinstance(value, Act):
            self.problems.append(("output", "output", "the output does not depend on the input"))
            return
        self.output_key = len(self.entries)
        self.entries.append(Entry(node, ir.Output(), [value.key]))

    # -- helpers for the lowerings -------------------------------------------------------------
    def emit(self, node: fx.Node, op: ir.Op, inputs: list[Act], suffix: str = "",
             shape: tuple | None = None) -> Act:
        """Add an IR entry for ``node``; its value has ``shape`` or the node's own."""
        key = len(self.entries)
        self.entries.append(Entry(node, op, [i.key for i in inputs], suffix))
        return Act(key, shape if shape is not None else _dims(node))

    def _problem(self, node: fx.Node, op: str, hint: str) -> None:
        self.problems.append((node, op, hint))
        self.values[node] = _broken(node.meta.get("val"))

    def _resolve(self, value):
        if isinstance(value, fx.Node):
            return self.values.get(value)
        if isinstance(value, (list, tuple)):
            return type(value)(self._resolve(v) for v in value)
        return value

    def _bind(self, node: fx.Node) -> dict:
        """The op's arguments by schema name, defaults filled in, fx nodes resolved."""
        bound = {}
        for i, arg in enumerate(node.target._schema.arguments):
            if i < len(node.args) and not arg.kwarg_only:
                value = node.args[i]
            elif arg.name in node.kwargs:
                value = node.kwargs[arg.name]
            else:
                value = arg.default_value if arg.has_default_value() else None
            bound[arg.name] = self._resolve(value)
        return bound

    def _constant_args(self, node: fx.Node) -> bool:
        """Whether every fx node among the arguments holds a constant tensor."""
        inputs = node.all_input_nodes
        return bool(inputs) and all(isinstance(self.values.get(n), Const) for n in inputs)

    def _fold(self, node: fx.Node) -> torch.Tensor:
        """Run the op on the real constant tensors (only ops listed in FOLDABLE come here)."""
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: self.values[n].tensor)
        return node.target(*args, **kwargs)

    def _stored_tensor(self, target: str) -> torch.Tensor | None:
        for store in (self.program.state_dict, self.program.constants):
            value = store.get(target)
            if isinstance(value, torch.Tensor):
                return value
        return None

    # -- the graph -----------------------------------------------------------------------------
    def _build(self, names: dict) -> Graph:
        keep = self._reachable()
        metadata = {"source": self.source, "frontend": "torch"}
        relays = [names[("entry", k)] for k in getattr(self, "relays", []) if k in keep]
        if relays:  # SEW-IAND relay neurons made by snn_ops, for the residual report
            metadata["sew_iand_relays"] = relays
        builder = GraphBuilder(metadata)
        for key, entry in enumerate(self.entries):
            if key in keep:
                inputs = [names[("entry", k)] for k in entry.inputs]
                builder.add(names[("entry", key)], entry.op, inputs)
        return builder.build()

    def _reachable(self) -> set[int]:
        keep, todo = set(), [self.output_key]
        while todo:
            key = todo.pop()
            if key not in keep:
                keep.add(key)
                todo.extend(self.entries[key].inputs)
        return keep


# ---------------------------------------------------------------------------------------------
# Names.


class _Namer:
    """Readable, unique IR names from module paths; problems are named the same way."""

    def __init__(self, lowering: _Lowering):
        self.lowering = lowering

    def names(self) -> dict:
        """Keys ("entry", index) for IR entries and fx nodes for problem nodes."""
        items = []  # (key, fx node, kind, suffix) in graph order
        for key, entry in enumerate(self.lowering.entries):
            if isinstance(entry.op, (ir.Input, ir.Output)):
                continue
            items.append((("entry", key), entry.node, entry.op.kind.value.lower(), entry.suffix))
        for node, op, _hint in self.lowering.problems:
            if isinstance(node, fx.Node):
                items.append((node, node, op.split(".")[1] if "." in op else op, ""))
        kinds = defaultdict(set)
        for _key, node, kind, suffix in items:
            if not suffix:
                kinds[_module_path(node)].add(kind)
        for path in list(kinds):
            parts = path.split(".")
            for i in range(1, len(parts)):
                # a module that owns submodules names its own ops by kind: block_add
                kinds[".".join(parts[:i])].add("<container>")
        used = {"input", "output"}
        names = {}
        for key, entry in enumerate(self.lowering.entries):
            if isinstance(entry.op, (ir.Input, ir.Output)):
                names[("entry", key)] = entry.op.kind.value.lower()
        firsts = {}  # fx node -> the name of its first IR node, which a suffix extends
        for key, node, kind, suffix in items:
            if suffix:
                base = firsts[node] + suffix
            else:
                base = self._base(node, kind, kinds)
            names[key] = unique(base, used)
            firsts.setdefault(node, names[key])
        return names

    @staticmethod
    def _base(node: fx.Node, kind: str, kinds: dict) -> str:
        path = _module_path(node)
        if not path:
            return sanitize(node.name)
        base = sanitize(path)
        if base[0].isdigit():  # a Sequential's child: "0" reads better as "conv2d_0"
            return f"{sanitize(kind)}_{base}"
        if len(kinds[path]) == 1:
            return base
        return f"{base}_{sanitize(kind)}"


def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return re.sub(r"^L\['self'\]\.?", "", str(path))


# ---------------------------------------------------------------------------------------------
# Small helpers.


def _op_key(target: OpOverload) -> str:
    """``aten::conv2d`` -> ``conv2d``; other namespaces keep theirs (``quantized::...``)."""
    name = target._schema.name
    return name[len("aten::"):] if name.startswith("aten::") else name


def _dims(node: fx.Node) -> tuple | None:
    """The node's shape with concrete sizes as ints and symbolic ones as strings."""
    val = node.meta.get("val")
    return _shape_of(val) if isinstance(val, torch.Tensor) else None


def _shape_of(tensor: torch.Tensor) -> tuple:
    dims = []
    for d in tensor.shape:
        if isinstance(d, torch.SymInt):
            concrete = d.node.maybe_as_int()
            dims.append(concrete if concrete is not None else str(d))
        else:
            dims.append(int(d))
    return tuple(dims)


def _broken(val):
    if isinstance(val, torch.Tensor):
        return Act(BROKEN, _shape_of(val))
    if isinstance(val, (tuple, list)):
        return Items(tuple(_broken(v) for v in val))
    return None


def _has_inplace_ops(program: ExportedProgram) -> bool:
    return any(
        isinstance(n.target, OpOverload) and n.target._schema.is_mutable
        for n in program.graph_module.graph.nodes
    )


def _root_class(program: ExportedProgram) -> str | None:
    for node in program.graph_module.graph.nodes:
        for path, cls in (node.meta.get("nn_module_stack") or {}).values():
            if path == "":
                return str(cls).rsplit(".", 1)[-1]
    return None


def _np(tensor: torch.Tensor | None) -> np.ndarray | None:
    if tensor is None:
        return None
    return tensor.detach().to("cpu", torch.float64).numpy()


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        values = [int(v) for v in value]
        return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    return int(value), int(value)


def _act(value, what: str = "input") -> Act:
    if isinstance(value, Act):
        return value
    raise Reject(f"its {what} must be computed from the model's input, not a constant")


def _const(value, what: str, optional: bool = False) -> torch.Tensor | None:
    if isinstance(value, Const):
        return value.tensor
    if value is None and optional:
        return None
    if isinstance(value, Act) and value.key == BROKEN:
        raise Reject(f"its {what} comes from an unsupported node")
    if isinstance(value, Act):
        raise Reject(f"its {what} must be a parameter or constant, not computed from the input")
    raise Reject(f"its {what} is not a tensor")


def _static(act: Act, rank: int | None = None) -> tuple[int, ...]:
    """The activation's non-batch dims, all static; optionally of a given rank."""
    shape = act.shape or ()
    dims = tuple(shape[1:])
    if not all(isinstance(d, int) for d in dims):
        raise Reject(f"input shape {shape} has dynamic non-batch dims")
    if rank is not None and len(dims) != rank:
        layout = {1: "(features,)", 3: "(C, H, W)"}.get(rank, f"{rank} dims")
        raise Reject(f"expects an input of shape {layout} per sample, got {dims}")
    return dims


# ---------------------------------------------------------------------------------------------
# Lowerings: one small function per aten op family. Each returns the node's value.


def _conv(low: _Lowering, node: fx.Node, a: dict) -> Act:
    x = _act(a["input"])
    weight = _const(a["weight"], "weight")
    if a.get("transposed"):
        raise Reject("transposed convolution has no Loihi mapping")
    if weight.dim() != 4:
        raise Reject("only 2-D convolution (Conv2d) is supported")
    _static(x, 3)
    dilation = _pair(a["dilation"])
    op = ir.Conv2d(
        weight=_np(weight),
        bias=_np(_const(a["bias"], "bias", optional=True)),
        stride=_pair(a["stride"]),
        padding=_conv_padding(a["padding"], weight.shape[2:], dilation),
        dilation=dilation,
        groups=int(a["groups"]),
    )
    return low.emit(node, op, [x])


def _conv_padding(padding, kernel, dilation) -> tuple[int, int]:
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(t % 2 for t in totals):
            raise Reject("padding='same' with an even kernel pads unevenly; pad explicitly")
        return (totals[0] // 2, totals[1] // 2)
    return _pair(padding)


def _dense(low: _Lowering, node: fx.Node, x: Act, weight, bias) -> Act:
    (features,) = _static(x, 1)
    if weight.dim() != 2 or weight.shape[1] != features:
        raise Reject(f"weight of shape {tuple(weight.shape)} for {features} input features")
    if bias is not None:
        if bias.numel() != weight.shape[0]:
            raise Reject(f"bias of shape {tuple(bias.shape)} for {weight.shape[0]} outputs")
        bias = bias.reshape(-1)
    return low.emit(node, ir.Dense(weight=_np(weight), bias=_np(bias)), [x])


def _linear(low, node, a):
    weight = _const(a["weight"], "weight")
    return _dense(low, node, _act(a["input"]), weight, _const(a["bias"], "bias", True))


def _addmm(low, node, a):
    weight = a["alpha"] * _const(a["mat2"], "weight").t()
    bias = a["beta"] * _const(a["self"], "bias")
    return _dense(low, node, _act(a["mat1"]), weight, bias)


def _mm(low, node, a):
    other = _const(a.get("mat2", a.get("other")), "weight")
    if other.dim() != 2:
        raise Reject("only a product with a 2-D constant weight is supported")
    return _dense(low, node, _act(a["self"]), other.t(), None)


def _batch_norm(low, node, a):
    x = _act(a["input"])
    mean = _const(a.get("running_mean"), "running mean", optional=True)
    var = _const(a.get("running_var"), "running var", optional=True)
    if mean is None or var is None:
        raise Reject("BatchNorm without running statistics (track_running_stats=False)")
    if a.get("training"):
        raise Reject("BatchNorm in training mode; export after model.eval()")
    channels = mean.shape[0]
    _static(x)
    gamma = _const(a["weight"], "weight", optional=True)
    beta = _const(a["bias"], "bias", optional=True)
    op = ir.BatchNorm(
        mean=_np(mean),
        var=_np(var),
        gamma=np.ones(channels) if gamma is None else _np(gamma),
        beta=np.zeros(channels) if beta is None else _np(beta),
        eps=float(a["eps"]),
    )
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        out = low.emit(node, op, [x], shape=_shape_of(val[0]))
        return Items((out,) + (None,) * (len(val) - 1))
    return low.emit(node, op, [x])


def _relu(low, node, a):
    return low.emit(node, ir.ReLU(), [_act(a["self"])])


def _clamp(low, node, a):
    low_bound, high = a.get("min"), a.get("max")
    if low_bound != 0 or (high is not None and not (isinstance(high, (int, float)) and high > 0)):
        raise Reject("only clamp(min=0) or clamp(0, a) with a constant a > 0 (a clipped ReLU) is supported")
    return low.emit(node, ir.ReLU(upper=None if high is None else float(high)), [_act(a["self"])])


def _hardtanh(low, node, a):
    lo, hi = a.get("min_val", -1.0), a.get("max_val", 1.0)
    if lo != 0 or not hi > 0:
        raise Reject(f"Hardtanh({lo}, {hi}): only Hardtanh(0, a) with a > 0 (a clipped ReLU) is supported")
    return low.emit(node, ir.ReLU(upper=float(hi)), [_act(a["self"])])


def _relu6(low, node, a):
    return low.emit(node, ir.ReLU(upper=6.0), [_act(a["self"])])


def _max_pool2d(low, node, a):
    x = _act(a["self"])
    _channels, *hw = _static(x, 3)
    kernel = _pair(a["kernel_size"])
    stride = _pair(a["stride"]) if a["stride"] else kernel
    padding, dilation = _pair(a["padding"]), _pair(a["dilation"])
    floor_hw = ir.conv_output_hw(hw, kernel, stride, padding, dilation)
    val = node.meta.get("val")
    out_hw = tuple(_shape_of(val[0] if isinstance(val, (tuple, list)) else val)[2:])
    if a.get("ceil_mode") and out_hw != tuple(floor_hw):
        raise Reject("ceil_mode=True adds partial windows; use ceil_mode=False")
    op = ir.MaxPool2d(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    if isinstance(val, (tuple, list)):  # max_pool2d_with_indices: (values, indices)
        out = low.emit(node, op, [x], shape=_shape_of(val[0]))
        return Items((out, None))
    return low.emit(node, op, [x])


def _cat(low, node, a):
    tensors = a["tensors"]
    if not all(isinstance(t, Act) for t in tensors):
        raise Reject("concatenates a constant; only activations can be concatenated")
    dim = int(a.get("dim", 0))
    rank = len(tensors[0].shape)
    if dim % rank != 1:
        raise Reject(f"concatenation along dim {dim}; only along channels (dim=1) is supported")
    if len({t.key for t in tensors}) != len(tensors):
        raise Reject("concatenates one activation twice; the IR takes each input once")
    return low.emit(node, ir.Concat(), list(tensors))


def _avg_pool2d(low, node, a):
    x = _act(a["self"])
    _channels, *hw = _static(x, 3)
    kernel = _pair(a["kernel_size"])
    stride = _pair(a["stride"]) if a["stride"] else kernel
    padding = _pair(a["padding"])
    floor_hw = ir.conv_output_hw(hw, kernel, stride, padding, (1, 1))
    reasons = []
    # each option is refused only where it changes the result
    if a["ceil_mode"] and tuple(_dims(node)[2:]) != tuple(floor_hw):
        reasons.append("ceil_mode=True adds partial windows; use ceil_mode=False")
    if not a["count_include_pad"] and any(padding):
        reasons.append("count_include_pad=False with padding; use count_include_pad=True")
    if a["divisor_override"] not in (None, kernel[0] * kernel[1]):
        reasons.append("divisor_override is not supported")
    if reasons:
        raise Reject("; ".join(reasons))
    return low.emit(node, ir.AvgPool2d(kernel=kernel, stride=stride, padding=padding), [x])


def _adaptive_avg_pool2d(low, node, a):
    x = _act(a["self"])
    _channels, h, w = _static(x, 3)
    oh, ow = _pair(a["output_size"])
    if h % oh or w % ow:  # unequal (or repeating) windows: a separable linear map
        return low.emit(node, ir.AdaptiveAvgPool2d(output_size=(oh, ow)), [x])
    kernel = (h // oh, w // ow)
    return low.emit(node, ir.AvgPool2d(kernel=kernel, stride=kernel), [x])


def _mean(low, node, a):
    x = _act(a["self"])
    channels, h, w = _static(x, 3)
    dims = {int(d) % 4 for d in (a["dim"] or ())}
    if dims != {2, 3}:
        raise Reject("only the mean over H and W (global average pooling) is supported")
    pooled_shape = (x.shape[0], channels, 1, 1)
    pool = ir.AvgPool2d(kernel=(h, w), stride=(h, w))
    if a["keepdim"]:
        return low.emit(node, pool, [x])
    pooled = low.emit(node, pool, [x], shape=pooled_shape)
    return low.emit(node, ir.Flatten(), [pooled], suffix="_flatten")


def _reshape(low, node, a):
    """Any view or reshape: fine when it keeps the shape or flattens all non-batch dims."""
    x = _act(a["self"])
    before, after = x.shape, _dims(node)
    if before is None:
        return Act(BROKEN, after)
    if after == before:
        return x
    dims = _static(x)
    if len(after) == 2 and after[0] == before[0] and after[1] == math.prod(dims):
        return low.emit(node, ir.Flatten(), [x])
    raise Reject(
        f"reshape {tuple(before)} -> {tuple(after)}: only flattening every non-batch dim "
        "(x.flatten(1), x.view(x.size(0), -1)) is supported"
    )


def _add(low, node, a):
    x, y = a["self"], a["other"]
    if a.get("alpha", 1) != 1:
        raise Reject("add with alpha != 1 is not supported")
    if not (isinstance(x, Act) and isinstance(y, Act)):
        raise Reject("adding a constant is not supported; fold it into a layer's bias")
    if x.shape != y.shape:
        raise Reject(f"add of shapes {x.shape} and {y.shape}: broadcasting is not supported")
    if x.key == y.key and x.key != BROKEN:
        raise Reject("x + x: the IR cannot take one input twice; double the layer's weights")
    return low.emit(node, ir.Add(), [x, y])


def _dropout(low, node, a):
    if a.get("train"):
        raise Reject("dropout in training mode; export after model.eval()")
    x = _act(a["input"])
    val = node.meta.get("val")
    return Items((x, None)) if isinstance(val, (tuple, list)) else x


def _identity(low, node, a):
    return _act(a["self"])


def _to_copy(low, node, a):
    x = _act(a["self"])
    val, source = node.meta.get("val"), node.args[0].meta.get("val")
    if val.dtype != source.dtype:
        raise Reject(f"conversion to {val.dtype}; keep the model in float")
    return x


def _getitem(low, node, a):
    container, index = a["self"], a["index"]
    if isinstance(container, Items) and isinstance(index, int):
        item = container.items[index]
        if item is None:
            raise Reject("uses a secondary result (saved statistics, dropout mask)")
        return item
    raise Reject("indexing is not supported")


LOWERINGS: dict[str, Callable[[_Lowering, fx.Node, dict], object]] = {
    "conv2d": _conv,
    "convolution": _conv,
    "linear": _linear,
    "addmm": _addmm,
    "mm": _mm,
    "matmul": _mm,
    "batch_norm": _batch_norm,
    "native_batch_norm": _batch_norm,
    "_native_batch_norm_legit": _batch_norm,
    "_native_batch_norm_legit_no_training": _batch_norm,
    "relu": _relu,
    "relu_": _relu,
    "clamp": _clamp,
    "clamp_min": _clamp,
    "hardtanh": _hardtanh,
    "hardtanh_": _hardtanh,
    "relu6": _relu6,
    "max_pool2d": _max_pool2d,
    "max_pool2d_with_indices": _max_pool2d,
    "cat": _cat,
    "concat": _cat,
    "avg_pool2d": _avg_pool2d,
    "adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "_adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "mean": _mean,
    "add": _add,
    "add_": _add,
    "dropout": _dropout,
    "dropout_": _dropout,
    "feature_dropout": _dropout,
    "alpha_dropout": _dropout,
    "feature_alpha_dropout": _dropout,
    "native_dropout": _dropout,
    "clone": _identity,
    "detach": _identity,
    "detach_": _identity,
    "alias": _identity,
    "lift_fresh_copy": _identity,
    "contiguous": _identity,
    "_to_copy": _to_copy,
    "to": _to_copy,
    **dict.fromkeys(
        ("flatten", "view", "reshape", "_unsafe_view", "view_copy", "squeeze", "unsqueeze"),
        _reshape,
    ),
}
LOWERINGS.update(SNN_LOWERINGS)  # snncompile.nn neurons (custom ops)

# Ops without a tensor result for the model: runtime asserts and shape bookkeeping.
SKIPPED = frozenset({
    "_assert_tensor_metadata", "_assert_async", "_assert_scalar", "_functional_assert_async",
    "sym_constrain_range", "sym_constrain_range_for_size", "_functional_sym_constrain_range",
    "_functional_sym_constrain_range_for_size", "_make_dep_token",
})

# Ops evaluated ahead of time when all their tensor inputs are constants (e.g. W.t() in addmm).
FOLDABLE = frozenset({
    "t", "permute", "transpose", "numpy_T", "view", "reshape", "_unsafe_view", "flatten",
    "squeeze", "unsqueeze", "expand", "clone", "detach", "alias", "lift_fresh_copy",
    "contiguous", "_to_copy", "to", "add", "sub", "mul", "div", "neg", "sqrt", "rsqrt",
    "reciprocal", "pow",
})

HINTS: dict[str, str] = {
    **dict.fromkeys(
        ("max_pool1d", "max_pool3d", "adaptive_max_pool2d", "adaptive_max_pool1d", "max_pool1d_with_indices"),
        "use MaxPool2d (compiled with --maxpool avg) or AvgPool2d",
    ),
    **dict.fromkeys(
        ("sigmoid", "tanh", "gelu", "silu", "elu", "selu", "celu", "leaky_relu",
         "hardswish", "hardsigmoid", "softplus", "mish", "prelu", "_prelu_kernel", "rrelu",
         "log_sigmoid"),
        "use ReLU (or a clipped ReLU: ReLU6, Hardtanh(0, a))",
    ),
    **dict.fromkeys(
        ("softmax", "_softmax", "log_softmax", "_log_softmax"),
        "remove the softmax; the predicted class is the argmax of the logits",
    ),
    **dict.fromkeys(
        ("conv1d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"),
        "only Conv2d (2-D, not transposed) is supported",
    ),
    **dict.fromkeys(
        ("layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "instance_norm"),
        "use BatchNorm, which folds into the preceding layer",
    ),
    **dict.fromkeys(
        ("mul", "div", "sub", "rsub", "pow", "neg", "exp", "log", "sqrt", "rsqrt"),
        "arithmetic on activations has no spiking mapping; only a residual add is supported",
    ),
    **dict.fromkeys(
        ("stack", "split", "split_with_sizes", "chunk", "slice", "select",
         "index", "unbind", "narrow"),
        "slicing activations is not supported (channel concatenation is)",
    ),
    **dict.fromkeys(
        ("avg_pool1d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool3d"),
        "use AvgPool2d",
    ),
    **dict.fromkeys(
        ("upsample_nearest2d", "upsample_bilinear2d", "pixel_shuffle"),
        "resizing is not supported",
    ),
    **dict.fromkeys(
        ("pad", "constant_pad_nd", "reflection_pad2d", "replication_pad2d", "circular_pad2d"),
        "use the convolution's own zero padding (padding_mode='zeros') instead of a pad op",
    ),
}
