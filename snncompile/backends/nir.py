"""NIR backend: write a float SNN graph (after conversion) as a NIR file with ``nir.write``.

Mapping (NIR is continuous-time; we write the discrete graph we simulate, with step dt; the
inverse rules are in ``snncompile.frontends.nir``):
  Input/Output -> Input/Output;  Dense -> Affine (after a Flatten marked ``implicit`` when it
  reads an image);  Conv2d -> Conv2d;  AvgPool2d/SumPool2d -> AvgPool2d/SumPool2d;
  Flatten -> Flatten (start_dim 0: NIR types have no batch dimension);
  IF -> IF with r = 1/dt, v_threshold = θ, v_reset = 0;
  LIF (alpha = 0) -> LIF with tau = dt/(1 − beta), r = tau/dt;  LIF (alpha > 0) -> CubaLIF with
  tau_syn = dt/(1 − alpha), w_in = tau_syn/dt, tau_mem = dt/(1 − beta), r = tau_mem/dt;
  Integrator -> I with r = 1/dt.
  Every neuron node carries metadata ``reset`` = "zero" or "subtract" (NIR has no reset-mode
  field; a reader that ignores it resets to v_reset = 0).
Graph metadata: producer, ``dt``, ``input_encoding`` = "constant current every step", ``reset``
(the modes used), and that synaptic ops between neurons delay by one step on Loihi (outside
NIR's semantics).

``flavor="snntorch"`` writes what snnTorch 1.0's ``import_from_nir`` reads as the same network
(it assumes dt = 1e-4, maps nir.IF to ``Leaky(beta=0.9)`` and has no I node): dt = 1e-4, IF with
reset to zero as LIF with tau = 1e4 s (beta = 1 − 1e-8, which is 1 in float32) and r = tau/dt,
and no readout node: the output is the last layer's current each step, which the reader sums
over the steps. A subtractive IF cannot be expressed for snnTorch and is refused.
"""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np

import snncompile
from snncompile.errors import BackendError, Problem, UnsupportedModelError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import IF, LIF, AvgPool2d, Conv2d, Dense, Flatten, Input, Integrator, Output, Reset, SumPool2d


def _ones(shape) -> np.ndarray:
    return np.ones(shape, dtype=np.float64)


SNNTORCH_DT = 1e-4
SNNTORCH_IF_TAU = 1e4  # dt/tau = 1e-8: snnTorch's beta = 1 − dt/tau rounds to 1 in float32


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)  # float64: the round trip through NIR is exact


def _tau(dt: float, decay) -> np.ndarray:
    """tau with 1 − dt/tau = decay (∞ for decay 1)."""
    with np.errstate(divide="ignore"):
        return dt / (1.0 - np.asarray(decay, dtype=np.float64))


def _neuron(op, shape, dt: float, flavor: str):
    meta = {"reset": op.reset.value}
    theta = _f64(np.broadcast_to(op.threshold, shape))
    zeros = np.zeros(shape, np.float64)
    if isinstance(op, IF):
        if flavor == "snntorch":
            if op.reset is not Reset.ZERO:
                raise KeyError("snnTorch imports nir.IF as Leaky(beta=0.9) and LIF with reset to zero: "
                               "a subtractive IF cannot be expressed; convert with reset to zero")
            tau = np.full(shape, SNNTORCH_IF_TAU, np.float64)
            return nir.LIF(tau=tau, r=tau / dt, v_leak=zeros, v_threshold=theta, v_reset=zeros, metadata=meta)
        return nir.IF(r=_ones(shape) / dt, v_threshold=theta, v_reset=zeros, metadata=meta)
    alpha = np.broadcast_to(op.alpha, shape)
    tau_mem = _f64(_tau(dt, np.broadcast_to(op.beta, shape)))
    if not np.any(alpha):
        return nir.LIF(tau=tau_mem, r=tau_mem / dt, v_leak=zeros, v_threshold=theta, v_reset=zeros, metadata=meta)
    tau_syn = _f64(_tau(dt, alpha))
    return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=zeros, v_threshold=theta,
                       v_reset=zeros, w_in=tau_syn / dt, metadata=meta)


def _node(graph: Graph, name: str, dt: float, flavor: str) -> list[tuple[str, nir.NIRNode]]:
    """NIR nodes for one IR node (a Dense reading an image gets a Flatten in front)."""
    op = graph.op(name)
    shape = graph.shape(name)
    in_shapes = [graph.shape(i) for i in graph.inputs(name)]
    if isinstance(op, Input):
        return [(name, nir.Input(input_type={"input": np.array(shape)}))]
    if isinstance(op, Output):
        return [(name, nir.Output(output_type={"output": np.array(shape)}))]
    if isinstance(op, Dense):
        bias = np.zeros(op.weight.shape[0]) if op.bias is None else op.bias
        nodes = []
        if len(in_shapes[0]) > 1:
            flat = nir.Flatten(input_type={"input": np.array(in_shapes[0])}, start_dim=0,
                               metadata={"implicit": 1})
            nodes.append((f"{name}_flatten", flat))
        return nodes + [(name, nir.Affine(weight=_f64(op.weight), bias=_f64(bias)))]
    if isinstance(op, Conv2d):
        bias = np.zeros(op.weight.shape[0]) if op.bias is None else op.bias
        return [(name, nir.Conv2d(
            input_shape=tuple(in_shapes[0][1:]), weight=_f64(op.weight), stride=op.stride,
            padding=op.padding, dilation=op.dilation, groups=op.groups, bias=_f64(bias),
        ))]
    if isinstance(op, AvgPool2d):
        kind = nir.SumPool2d if isinstance(op, SumPool2d) else nir.AvgPool2d
        return [(name, kind(kernel_size=np.array(op.kernel), stride=np.array(op.stride),
                            padding=np.array(op.padding)))]
    if isinstance(op, Flatten):
        return [(name, nir.Flatten(input_type={"input": np.array(in_shapes[0])}, start_dim=0))]
    if isinstance(op, (IF, LIF)):
        return [(name, _neuron(op, shape, dt, flavor))]
    if isinstance(op, Integrator):
        if flavor == "snntorch":
            return []  # the reader sums the last layer's output over the steps
        return [(name, nir.I(r=_ones(shape) / dt))]
    raise KeyError(f"{op.kind.value} has no NIR equivalent here; export the float SNN "
                   "(after conversion, before quantization)")


def to_nir(graph: Graph, flavor: str = "nir") -> nir.NIRGraph:
    """The NIRGraph of a float (SNN or linear) IR graph; fixed-point ops are refused."""
    if flavor not in ("nir", "snntorch"):
        raise ValueError(f"flavor must be 'nir' or 'snntorch', not {flavor!r}")
    dt = SNNTORCH_DT if flavor == "snntorch" else 1.0
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    last: dict[str, str] = {}  # IR node -> NIR node that carries its output
    problems = []
    for name, op in graph.nodes():
        try:
            mapped = _node(graph, name, dt, flavor)
        except KeyError as exc:
            problems.append(Problem(name, op.kind.value, exc.args[0]))
            continue
        if not mapped:  # dropped: its users read its input
            (src,) = graph.inputs(name)
            last[name] = last.get(src, src)
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
    resets = sorted({graph.op(n).reset.value for n in graph.find((IF, LIF))})
    metadata = {
        "producer": f"snncompile {snncompile.__version__}",
        "dt": dt,
        "input_encoding": "constant current every step",
        "reset": ",".join(resets) or "none",
        "synaptic_delay_steps_on_loihi": 1,
    }
    if flavor == "snntorch" and graph.find(Integrator):
        metadata["readout"] = "sum the output over the steps"
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write(graph: Graph, path: str | Path, flavor: str = "nir") -> Path:
    """Write ``graph`` to ``path`` (HDF5); a partial file is removed on failure."""
    path = Path(path)
    nir_graph = to_nir(graph, flavor)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        nir.write(tmp, nir_graph)
        tmp.replace(path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise BackendError(f"{path}: could not write NIR ({type(exc).__name__}: {exc})") from None
    return path
