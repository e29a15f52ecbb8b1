"""Torch frontend: lower a torch.export program (a saved file or a module) to a float IR graph.

The walk follows ``ep.graph_module.graph`` node by node; each aten op has one small lowering in
``LOWERINGS`` (``frontends/torch_rules.py``). Exported graphs hold the high-level ops (left column); decomposed graphs (after
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

import operator
import re
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from torch import fx
from torch._ops import OpOverload
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from snncompile.errors import ModelLoadError, Problem, UnsupportedModelError
from snncompile.frontends.names import sanitize, unique
from snncompile.frontends.lowering import Entry, Reject
from snncompile.frontends.pt2_archive import read_exported_program
from snncompile.frontends.torch_rules import FOLDABLE, HINTS, LOWERINGS, SKIPPED, _getitem
from snncompile.frontends.torch_values import Act, Const, _broken, _dims
from snncompile.ir import ops as ir
from snncompile.ir.graph import Graph, GraphBuilder
from snncompile.sim.ann import one_thread

DEFAULT_HINT = (
    "no Loihi 2 mapping; supported are Conv2d, Linear, BatchNorm, ReLU, AvgPool2d, "
    "Flatten and a residual add"
)


def load_model(path: str | Path) -> Graph:
    """The float IR graph of a file written by ``torch.export.save`` (any name or suffix)."""
    # on one torch thread: two made loading ResNet-18 0.25 -> 0.38 s on a busy 2-core machine
    # (its float32 -> float64 weight copies 0.04 -> 0.15 s)
    with one_thread():
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
    if _has_inplace_ops(program) and not _inplace_in_walk_order(program):
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
        self.aliases: dict[fx.Node, fx.Node] = {}  # in-place result -> the tensor it mutated

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
        if isinstance(target, OpOverload) and target._schema.is_mutable:
            # relu_(x) and the like (_inplace_in_walk_order): from here on x *is* the result;
            # every alias of x reads the new value, as in eager mode
            root = self.aliases.get(node.args[0], node.args[0])
            self.aliases[node] = root
            for member in [root] + [n for n, r in self.aliases.items() if r is root]:
                self.values[member] = self.values[node]

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


def _has_inplace_ops(program: ExportedProgram) -> bool:
    return any(
        isinstance(n.target, OpOverload) and n.target._schema.is_mutable
        for n in program.graph_module.graph.nodes
    )


# Elementwise in-place ops that the walk lowers as their out-of-place twin, the mutated tensor then
# reading the result (torchvision's ReLU(inplace=True), `out += identity`), instead of paying for
# torch.export's run_decompositions (about 6 s of a ResNet-18's load).
INPLACE_ELEMENTWISE = {"relu_", "hardtanh_", "add_", "clamp_", "clamp_min_", "mul_", "sub_", "div_"}
VIEW_OPS = {"view", "_unsafe_view", "reshape", "flatten", "transpose", "t", "permute", "squeeze", "unsqueeze",
            "expand", "slice", "select", "as_strided", "alias", "detach", "split", "chunk", "unbind",
            "narrow", "unflatten", "view_as", "expand_as", "split_with_sizes", "diagonal", "movedim"}


def _inplace_in_walk_order(program: ExportedProgram) -> bool:
    """True when every in-place op is an elementwise one on a tensor that no view aliases, so that
    walking the graph in order (each in-place result replacing the tensor it mutated) is exactly
    eager mode; else the program is functionalized first."""
    nodes = program.graph_module.graph.nodes
    user_names = {spec.arg.name for spec in program.graph_signature.input_specs
                  if spec.kind != InputKind.USER_INPUT and hasattr(spec.arg, "name")}
    for node in nodes:
        if not (isinstance(node.target, OpOverload) and node.target._schema.is_mutable):
            continue
        if _op_key(node.target) not in INPLACE_ELEMENTWISE or not node.args or not isinstance(node.args[0], fx.Node):
            return False
        base, seen = node.args[0], set()
        while True:  # up the chain of in-place results to the tensor first mutated
            if base.op == "placeholder" or base.name in user_names:
                return False  # a mutated model input or parameter
            if isinstance(base.target, OpOverload) and _op_key(base.target) in VIEW_OPS:
                return False
            seen.add(base)
            if isinstance(base.target, OpOverload) and base.target._schema.is_mutable and base.args \
                    and isinstance(base.args[0], fx.Node):
                base = base.args[0]
                continue
            break
        for member in seen | {node}:
            if any(isinstance(u.target, OpOverload) and _op_key(u.target) in VIEW_OPS for u in member.users):
                return False
    return True


def _root_class(program: ExportedProgram) -> str | None:
    for node in program.graph_module.graph.nodes:
        for path, cls in (node.meta.get("nn_module_stack") or {}).values():
            if path == "":
                return str(cls).rsplit(".", 1)[-1]
    return None
