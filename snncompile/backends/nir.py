"""NIR backend: write a float SNN graph (after conversion) as a NIR file with ``nir.write``.

Mapping (NIR is continuous-time; we write the discrete one we simulate, dt = 1):
  Input/Output -> Input/Output;  Dense -> Affine (a Flatten first when it reads an image);
  Conv2d -> Conv2d;  AvgPool2d -> AvgPool2d;  Flatten -> Flatten (start_dim 0: no batch);
  IF -> IF with r = 1, v_threshold = θ, v_reset = 0, and node metadata ``reset`` = "zero" or
  "subtract" (NIR has no reset-mode field; a reader that ignores it resets to v_reset);
  Integrator -> I with r = 1 (v[t] = v[t−1] + x[t] under Euler steps of dt = 1).
Graph metadata: producer, ``dt`` = 1, ``input_encoding`` = "constant current every step",
``reset`` (the reset mode of every IF), and that synaptic ops between neurons delay by one step
on Loihi (not part of NIR's semantics).
"""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np

import snncompile
from snncompile.errors import BackendError, Problem, UnsupportedModelError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import IF, AvgPool2d, Conv2d, Dense, Flatten, Input, Integrator, Output


def _ones(shape) -> np.ndarray:
    return np.ones(shape, dtype=np.float32)


def _node(graph: Graph, name: str) -> list[tuple[str, nir.NIRNode]]:
    """NIR nodes for one IR node (a Dense reading an image gets a Flatten in front)."""
    op = graph.op(name)
    shape = graph.shape(name)
    in_shapes = [graph.shape(i) for i in graph.inputs(name)]
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    if isinstance(op, Input):
        return [(name, nir.Input(input_type={"input": np.array(shape)}))]
    if isinstance(op, Output):
        return [(name, nir.Output(output_type={"output": np.array(shape)}))]
    if isinstance(op, Dense):
        bias = np.zeros(op.weight.shape[0]) if op.bias is None else op.bias
        nodes = []
        if len(in_shapes[0]) > 1:
            nodes.append((f"{name}_flatten", nir.Flatten(input_type={"input": np.array(in_shapes[0])}, start_dim=0)))
        return nodes + [(name, nir.Affine(weight=f32(op.weight), bias=f32(bias)))]
    if isinstance(op, Conv2d):
        bias = np.zeros(op.weight.shape[0]) if op.bias is None else op.bias
        return [(name, nir.Conv2d(
            input_shape=tuple(in_shapes[0][1:]), weight=f32(op.weight), stride=op.stride,
            padding=op.padding, dilation=op.dilation, groups=op.groups, bias=f32(bias),
        ))]
    if isinstance(op, AvgPool2d):
        return [(name, nir.AvgPool2d(kernel_size=np.array(op.kernel), stride=np.array(op.stride),
                                     padding=np.array(op.padding)))]
    if isinstance(op, Flatten):
        return [(name, nir.Flatten(input_type={"input": np.array(in_shapes[0])}, start_dim=0))]
    if isinstance(op, IF):
        theta = np.broadcast_to(op.threshold, shape)
        return [(name, nir.IF(r=_ones(shape), v_threshold=f32(theta), v_reset=np.zeros(shape, np.float32),
                              metadata={"reset": op.reset.value}))]
    if isinstance(op, Integrator):
        return [(name, nir.I(r=_ones(shape)))]
    raise KeyError(op.kind.value)


def to_nir(graph: Graph) -> nir.NIRGraph:
    """The NIRGraph of a float (SNN or linear) IR graph; fixed-point ops are refused."""
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    last: dict[str, str] = {}  # IR node -> NIR node that carries its output
    problems = []
    for name, op in graph.nodes():
        try:
            mapped = _node(graph, name)
        except KeyError:
            problems.append(Problem(name, op.kind.value, "has no NIR equivalent here; export the "
                                    "float SNN (before quantization, after conversion)"))
            continue
        for src in graph.inputs(name):
            if src in last:
                edges.append((last[src], mapped[0][0]))
        for (a, _), (b, _) in zip(mapped, mapped[1:]):
            edges.append((a, b))
        nodes.update(mapped)
        last[name] = mapped[-1][0]
    if problems:
        raise UnsupportedModelError("nir export", problems)
    resets = sorted({graph.op(n).reset.value for n in graph.find(IF)})
    metadata = {
        "producer": f"snncompile {snncompile.__version__}",
        "dt": 1.0,
        "input_encoding": "constant current every step",
        "reset": ",".join(resets) or "none",
        "synaptic_delay_steps_on_loihi": 1,
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write(graph: Graph, path: str | Path) -> Path:
    """Write ``graph`` to ``path`` (HDF5); a partial file is removed on failure."""
    path = Path(path)
    nir_graph = to_nir(graph)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        nir.write(tmp, nir_graph)
        tmp.replace(path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise BackendError(f"{path}: could not write NIR ({type(exc).__name__}: {exc})") from None
    return path
