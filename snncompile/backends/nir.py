"""NIR backend: write a float SNN graph (after conversion) as a NIR file with ``nir.write``.

Mapping (NIR is continuous-time; we write the discrete graph we simulate, with step dt; the
inverse rules are in ``snncompile.frontends.nir``):
  Input/Output -> Input/Output;  Dense -> Affine (after a Flatten marked ``implicit`` when it
  reads an image);  Conv2d -> Conv2d;  AvgPool2d/SumPool2d -> in the ``nir`` and ``snntorch``
  flavours a Conv2d with a per-channel kernel of 1/k² (1 for a sum), stride and padding of the
  pool (exact: torch's AvgPool2d counts zero padding); in ``snncompile`` AvgPool2d/SumPool2d.
  No pool node is portable: sinabs' and norse's importers read SumPool2d only, snnTorch's and
  SpikingJelly's AvgPool2d only, and every one reads Conv2d; the kernel is written
  dense (C, C, kh, kw) with zeros off the diagonal, as grouped convs are (see below);
  Flatten -> Flatten (start_dim 0: NIR types have no batch dimension);
  IF -> IF with r = 1/dt, v_threshold = θ, v_reset = 0;
  LIF (alpha = 0) -> LIF with tau = dt/(1 − beta), r = tau/dt;  LIF (alpha > 0) -> CubaLIF with
  tau_syn = dt/(1 − alpha), w_in = tau_syn/dt, tau_mem = dt/(1 − beta), r = tau_mem/dt;
  Integrator -> I with r = 1/dt.
  Every neuron node carries metadata ``reset`` = "zero" or "subtract" (NIR has no reset-mode
  field; a reader that ignores it resets to v_reset = 0), and ``v_init`` when the neuron starts
  away from 0 (the θ/2 of conversion; NIR has no initial-potential field: other readers start
  at 0, snncompile reads it back).
Graph metadata: producer, ``dt``, ``input_encoding`` = "constant current every step", ``reset``
(the modes used), and that synaptic ops between neurons delay by one step on Loihi (outside
NIR's semantics).

Flavours (``--nir-flavor``; no one file runs in every tool, shared DESIGN §8):
  ``nir`` (default): dt = 1e-4, IF with r = 1/dt (SpikingJelly's importer needs it; sinabs and
  norse ignore r), no readout node (the reader sums the last Affine's output over the steps,
  metadata ``readout``), Flatten with negative dims (batched readers all agree on those).
  Runs in sinabs, norse and SpikingJelly; snnTorch imports nir.IF as Leaky(beta=0.9) and Rockpool
  has no IF: they get their own flavours.
  ``rockpool``: MLPs only (its importer has no Conv2d); every neuron a CubaLIF in Rockpool's
  conventions (r = tau·e^(−dt/tau)/dt, dt = 1e-3, current decay 1e-7 for none, weights divided
  by it because Rockpool decays the input with the current), reset by subtraction only.
  ``snncompile``: lossless for our own reader (dt = 1, I readout, Flatten start_dim 0).
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

from snncompile.errors import BackendError, Problem, UnsupportedModelError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import ungrouped
from snncompile.ir.ops import IF, LIF, AvgPool2d, Conv2d, Dense, Flatten, Input, Integrator, Output, Reset, SumPool2d
from snncompile.runtime.version import __version__


def _ones(shape) -> np.ndarray:
    return np.ones(shape, dtype=np.float64)


SNNTORCH_DT = 1e-4
PORTABLE_DT = 1e-4  # SpikingJelly's importer needs IF r = 1/dt at its default dt; sinabs and norse ignore r
ROCKPOOL_DT = 1e-3
ROCKPOOL_EPS = 1e-7  # Rockpool decays its current after adding the input: a current memory of 1e-7, not 0
FLAVORS = ("nir", "snntorch", "rockpool", "snncompile")
SUM_READOUT = "sum the output over the steps"
SNNTORCH_IF_TAU = 1e4  # dt/tau = 1e-8: snnTorch's beta = 1 − dt/tau rounds to 1 in float32


def _pool_as_conv(op: AvgPool2d, in_shape) -> nir.Conv2d:
    """A k×k pool as the Conv2d every importer reads: a per-channel kernel of 1/(kh·kw) (AvgPool2d,
    zero padding counted, torch's default) or 1 (SumPool2d), written with groups=1 (see Conv2d)."""
    c = int(in_shape[0])
    kh, kw = op.kernel
    value = 1.0 if isinstance(op, SumPool2d) else 1.0 / (kh * kw)
    weight = np.zeros((c, c, kh, kw))
    weight[np.arange(c), np.arange(c)] = value
    return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=weight, stride=op.stride, padding=op.padding,
                      dilation=(1, 1), groups=1, bias=np.zeros(c))


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)  # float64: the round trip through NIR is exact


def _tau(dt: float, decay) -> np.ndarray:
    """tau with 1 − dt/tau = decay (∞ for decay 1)."""
    with np.errstate(divide="ignore"):
        return dt / (1.0 - np.asarray(decay, dtype=np.float64))


def _rockpool_alpha(op) -> float:
    alpha = float(np.max(getattr(op, "alpha", 0.0)))
    return alpha if alpha > 0 else ROCKPOOL_EPS


def _rockpool_neuron(op, shape, dt: float, meta: dict, theta, zeros):
    """Rockpool's LIFTorch as CubaLIF: i = e^(−dt/tau_syn)·(i + x), v = e^(−dt/tau_mem)·v + i,
    reset by subtraction; its importer takes dt = tau_mem/(1 + r)."""
    if op.reset is not Reset.SUBTRACT:
        raise KeyError("Rockpool's LIFTorch resets by subtraction only; convert with reset by subtraction")
    beta = float(np.max(getattr(op, "beta", 1.0)))
    tau_mem = np.full(shape, 1e12 * dt if beta >= 1 else -dt / np.log(beta))
    tau_syn = np.full(shape, -dt / np.log(_rockpool_alpha(op)))
    return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem * np.exp(-dt / tau_mem) / dt, v_leak=zeros,
                       v_threshold=theta, v_reset=zeros, w_in=np.ones(shape), metadata=meta)


def _neuron(op, shape, dt: float, flavor: str):
    meta = {"reset": op.reset.value}
    v_init = np.unique(np.asarray(op.v_init, dtype=np.float64))
    if v_init.size == 1 and v_init[0] != 0:  # NIR has no initial potential: ours reads it back
        meta["v_init"] = float(v_init[0])
    theta = _f64(np.broadcast_to(op.threshold, shape))
    zeros = np.zeros(shape, np.float64)
    if flavor == "rockpool":
        return _rockpool_neuron(op, shape, dt, meta, theta, zeros)
    if isinstance(op, IF):
        if flavor == "snntorch":
            if op.reset is not Reset.ZERO:
                raise KeyError("snnTorch imports nir.IF as Leaky(beta=0.9) and LIF with reset to zero: "
                               f"an IF with reset '{op.reset.value}' cannot be expressed; convert with reset to zero")
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
    start = 0 if flavor == "snncompile" else -len(in_shapes[0]) if in_shapes else 0  # batched readers
    if flavor == "rockpool" and not isinstance(op, (Input, Output, Dense, IF, LIF, Integrator)):
        raise KeyError("Rockpool's NIR import reads Linear/Affine and LIF neurons only (no Conv2d, "
                       "pooling or Flatten): an MLP only")
    if isinstance(op, Dense):
        bias = np.zeros(op.weight.shape[0]) if op.bias is None else op.bias
        weight = op.weight
        users = [graph.op(u) for u in graph.users(name)]
        if flavor == "rockpool" and users and isinstance(users[0], (IF, LIF)):
            gain = 1.0 / _rockpool_alpha(users[0])  # Rockpool decays the input with the current
            weight, bias = weight * gain, bias * gain
        nodes = []
        if len(in_shapes[0]) > 1:
            flat = nir.Flatten(input_type={"input": np.array(in_shapes[0])}, start_dim=start,
                               metadata={"implicit": 1})
            nodes.append((f"{name}_flatten", flat))
        return nodes + [(name, nir.Affine(weight=_f64(weight), bias=_f64(bias)))]
    if isinstance(op, Conv2d):
        bias = np.zeros(op.weight.shape[0]) if op.bias is None else op.bias
        # nir 1.0.8 types a Conv2d's input as weight.shape[1] channels whatever its groups, so a
        # grouped conv is written with its kernel expanded to groups=1 (zeros between groups):
        # the same map, which every importer reads
        return [(name, nir.Conv2d(
            input_shape=tuple(in_shapes[0][1:]), weight=_f64(ungrouped(op.weight, op.groups)), stride=op.stride,
            padding=op.padding, dilation=op.dilation, groups=1, bias=_f64(bias),
        ))]
    if isinstance(op, AvgPool2d):
        if flavor in ("nir", "snntorch"):
            return [(name, _pool_as_conv(op, in_shapes[0]))]
        kind = nir.SumPool2d if isinstance(op, SumPool2d) else nir.AvgPool2d
        return [(name, kind(kernel_size=np.array(op.kernel), stride=np.array(op.stride),
                            padding=np.array(op.padding)))]
    if isinstance(op, Flatten):
        return [(name, nir.Flatten(input_type={"input": np.array(in_shapes[0])}, start_dim=start))]
    if isinstance(op, (IF, LIF)):
        return [(name, _neuron(op, shape, dt, flavor))]
    if isinstance(op, Integrator):
        if flavor != "snncompile":
            if any(not isinstance(graph.op(u), Output) for u in graph.users(name)):
                raise KeyError("an integrator that feeds more than the output has no portable NIR form")
            return []  # the reader sums the last layer's output over the steps (metadata readout)
        return [(name, nir.I(r=_ones(shape) / dt))]
    raise KeyError(f"{op.kind.value} has no NIR equivalent here; export the float SNN "
                   "(after conversion, before quantization)")


def to_nir(graph: Graph, flavor: str = "nir") -> nir.NIRGraph:
    """The NIRGraph of a float (SNN or linear) IR graph; fixed-point ops are refused."""
    if flavor not in FLAVORS:
        raise BackendError(f"--nir-flavor must be one of {', '.join(FLAVORS)}, not '{flavor}'")
    dt = {"snntorch": SNNTORCH_DT, "nir": PORTABLE_DT, "rockpool": ROCKPOOL_DT}.get(flavor, 1.0)
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
        "producer": f"snncompile {__version__}",
        "dt": dt,
        "input_encoding": "constant current every step",
        "reset_modes": ",".join(resets) or "none",  # each neuron's own mode is in its metadata
        "synaptic_delay_steps_on_loihi": 1,
        "flavor": flavor,
    }
    if len(resets) == 1:
        metadata["reset"] = resets[0]
    if "signed" in resets:
        metadata["signed_spikes"] = ("neurons whose metadata says reset 'signed' also send -1 (v <= 0 while their "
                                     "spikes so far sum above 0; v += threshold): NIR's IF has no such spike, so "
                                     "other libraries run them as binary IF; snncompile reads them back as signed")
    if flavor != "snncompile" and graph.find(Integrator):
        metadata["readout"] = SUM_READOUT
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
