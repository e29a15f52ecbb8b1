"""NIR frontend: read a NIR graph (``nir.read`` file or a NIRGraph) into the float IR.

NIR is continuous-time; the IR is discrete with one step of length ``dt``. Forward-Euler rules:

    IF       dv/dt = R·I                    -> IF: v += (dt·R)·x
    LIF      tau·dv/dt = (v_leak − v) + R·I -> LIF(alpha=0, beta=1 − dt/tau): v = beta·v + (dt·R/tau)·x
    CubaLIF  tau_syn·di/dt = −i + w_in·S,
             tau_mem·dv/dt = (v_leak − v) + R·i
                                            -> LIF(alpha=1 − dt/tau_syn, beta=1 − dt/tau_mem) with
                                               input gain (dt·w_in/tau_syn)·(dt·R/tau_mem)
    I        dv/dt = R·I                    -> Integrator: v += (dt·R)·x
    tau = ∞ with R = ∞ (snnTorch's beta = 1 export, R = tau/dt) gives beta = 1 and gain 1.

Every SNN library writes these files with its own conventions, most of which the file does not
record (shared DESIGN §8). ``dt`` and the default reset come, in this order, from the caller
(``--nir-dt``, ``--nir-reset``), the file's metadata (``dt``, ``reset``, as our NIR backend
writes), or the producer recognised by its marks (``recognise``; each rule says which marks):

    producer      marks                                        dt              reset
    snncompile    metadata producer "snncompile ..."           metadata        node metadata
    rockpool      node names "<i>_LIFTorch"/"_LinearTorch"     solved from R = tau·e^(−dt/tau)/dt   subtract
    norse         0-d neuron parameters (scalars)              IF: 1 (v += x); LIF: 1e-6 = (norse dt 1e-3)²
    spikingjelly  names "_<i>"/"input_<i>"; IF R = 1/dt         1/R (its default 1e-4)   zero (v_reset)
    snntorch      LIF only, R = tau/1e-4 (or ∞/∞)              1e-4            zero, as snnTorch reads it
    sinabs        IF with R = 1, no metadata                   1 (per step)    subtract (IAF default)
    other         IF nodes with one R                          1/R             zero

Rockpool's LIFTorch (exported as CubaLIF) adds its input to the current and then decays it, and
decays by e^(−dt/tau): alpha = e^(−dt/tau_syn), beta = e^(−dt/tau_mem), input gain alpha.
Input gains other than 1 are folded into the weights and biases of the synaptic ops (Affine,
Linear, Conv2d) that feed the neuron, which must feed nothing else. v_leak must be 0 and v_reset
0. Batch dimensions of 1 in front of the Input type (norse, Rockpool) are dropped; an empty node
(norse writes None for Flatten and AvgPool2d) becomes a Flatten in front of an Affine and is
refused elsewhere. Scale with a per-channel or per-element factor becomes a Dense (1-D) or a
diagonal 1×1 Conv2d (3-D, per channel). The graph's metadata records ``nir_producer``, ``dt``
and ``dt_source`` so that later checks (``snncompile.sim.activity``) can name the assumption.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np

from snncompile.errors import ModelLoadError, Problem, SnnCompileError, UnsupportedModelError
from snncompile.frontends.names import sanitize
from snncompile.frontends import nir_file
from snncompile.ir import ops as ir
from snncompile.ir.graph import Graph, GraphBuilder

SNNTORCH_DT = 1e-4
NORSE_DT = 1e-3  # norse's to_nir default; it writes tau = dt·tau_mem, so the file's step is dt²
SYNAPTIC = (ir.Dense, ir.Conv2d)
RESETS = {"zero": ir.Reset.ZERO, "subtract": ir.Reset.SUBTRACT, "signed": ir.Reset.SIGNED}
SUM_READOUT = "sum the output over the steps"


def load_model(path: str | Path, dt: float | None = None, reset: str | None = None) -> Graph:
    path = Path(path)
    nir_file.check_file(path)  # plain data only: no links or storage outside the file, no bombs
    try:
        try:
            graph = nir.read(path)
        except ValueError as exc:  # types with a batch dimension (Rockpool): the IR infers shapes itself
            if "type" not in str(exc).lower():
                raise
            graph = nir.read(path, type_check=False)
    except Exception as exc:  # h5py/nir raise many types for foreign or damaged files
        raise ModelLoadError(f"{path}: not a readable NIR file ({type(exc).__name__}: {exc}); "
                             "write it with nir.write") from None
    return from_nir(graph, dt=dt, source=path.name, reset=reset)


def _text(v):
    v = v.decode() if isinstance(v, bytes) else v
    return str(v.item() if hasattr(v, "item") else v)


def _meta(node) -> dict:
    meta = getattr(node, "metadata", None) or {}
    return {k: _text(v) if isinstance(v, (bytes, str, np.str_)) or np.ndim(v) == 0 else v
            for k, v in meta.items()}


def _ratio(num, den, inf_ratio: float = 1.0) -> np.ndarray:
    """num/den with ∞/∞ taken as ``inf_ratio``."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    return np.where(np.isinf(num) & np.isinf(den), inf_ratio, out)


def _decay(dt: float, tau) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 1.0 - dt / np.asarray(tau, dtype=np.float64)


def _pair(v) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(v)).astype(int).ravel()
    return (int(arr[0]), int(arr[-1]))


# --- who wrote the file ----------------------------------------------------------------------

@dataclass(frozen=True)
class Convention:
    """How a producer's file reads: its step, where that came from, the default reset."""

    producer: str
    dt: float
    dt_source: str
    reset: ir.Reset = ir.Reset.ZERO
    notes: tuple[str, ...] = ()


def _neurons(g, kinds=(nir.IF, nir.LIF, nir.CubaLIF, nir.I, nir.LI)):
    return [n for n in g.nodes.values() if isinstance(n, kinds)]


def _one(values) -> float | None:
    vals = np.unique(np.concatenate([np.atleast_1d(np.asarray(v, np.float64)).ravel() for v in values]))
    return float(vals[0]) if vals.size == 1 else None


def _snncompile(g, meta):
    if not str(meta.get("producer", "")).startswith("snncompile") or "dt" not in meta:
        return None
    producer = "rockpool" if meta.get("flavor") == "rockpool" else "snncompile"  # our Rockpool flavour
    return Convention(producer, float(meta["dt"]), "the file's metadata (dt)",
                      RESETS.get(str(meta.get("reset")), ir.Reset.ZERO))


def _metadata_dt(g, meta):
    if "dt" not in meta:
        return None
    return Convention("unknown (dt in metadata)", float(meta["dt"]), "the file's metadata (dt)",
                      RESETS.get(str(meta.get("reset")), ir.Reset.ZERO))


def _rockpool_dt(tau: float, r: float) -> float:
    """The dt with r = tau·e^(−dt/tau)/dt (Rockpool's export), by bisection (f falls in dt)."""
    lo, hi = 1e-12 * tau, 10.0 * tau
    for _ in range(200):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if tau * np.exp(-mid / tau) / mid > r else (lo, mid)
    return float(f"{np.sqrt(lo * hi):.6g}")  # Rockpool stores float32: keep 6 digits


def _rockpool(g, meta):
    if not any(re.fullmatch(r"\d+_(LIFTorch|LinearTorch|LIFNeuronTorch|ExpSynTorch)", k) for k in g.nodes):
        return None
    dt = 1e-3  # Rockpool's default
    source = "Rockpool's default step (no LIF node to read it from)"
    for n in _neurons(g, (nir.CubaLIF, nir.LIF)):
        tau = n.tau_mem if isinstance(n, nir.CubaLIF) else n.tau
        tau, r = float(np.ravel(tau)[0]), float(np.ravel(n.r)[0])
        dt, source = _rockpool_dt(tau, r), "Rockpool's export (r = tau·exp(−dt/tau)/dt solved for dt)"
        break
    return Convention("rockpool", dt, source, ir.Reset.SUBTRACT, (
        "Rockpool's neurons emit floor(v/threshold) spikes per step (here at most one) and do not "
        "export a LIFTorch bias",))


def _norse(g, meta):
    neurons = _neurons(g)
    if not neurons or not all(np.ndim(getattr(n, "v_threshold", getattr(n, "r", 0))) == 0 for n in neurons):
        return None
    return Convention("norse", 1.0, "norse's IAF, which adds its input each step (dt = 1)", ir.Reset.ZERO, (
        f"norse writes a LIF's tau as its dt times tau: read with dt = {NORSE_DT}² (norse's default dt)",))


def _spikingjelly(g, meta):
    if not any(re.fullmatch(r"_\d+|input_\d+", k) for k in g.nodes):
        return None
    ifs = _neurons(g, (nir.IF,))
    r = _one(n.r for n in ifs) if ifs else None
    if r:
        return Convention("spikingjelly", 1.0 / r, "SpikingJelly's IF (r = 1/dt)")
    return Convention("spikingjelly", SNNTORCH_DT, "SpikingJelly's default dt (1e-4)")


def _snntorch(g, meta):
    lifs = _neurons(g)
    if not lifs or not all(isinstance(n, (nir.LIF, nir.CubaLIF)) for n in lifs):
        return None
    for n in lifs:
        tau = n.tau if isinstance(n, nir.LIF) else n.tau_mem
        if not np.allclose(_ratio(tau, n.r, SNNTORCH_DT), SNNTORCH_DT, rtol=1e-3):
            return None
    return Convention("snntorch", SNNTORCH_DT, "snnTorch's export (r = tau/dt with dt = 1e-4)", ir.Reset.ZERO, (
        "snnTorch's exporter drops reset_mechanism: read as reset to zero, as snnTorch's "
        "import_from_nir does; a Leaky with reset_mechanism='subtract' needs --nir-reset subtract",))


def _sinabs(g, meta):
    ifs = _neurons(g)
    if not ifs or not all(isinstance(n, nir.IF) for n in ifs) or _one(n.r for n in ifs) != 1.0:
        return None
    return Convention("sinabs", 1.0, "sinabs' IAF (r = 1: one step per input, dt = 1)", ir.Reset.SUBTRACT, (
        "sinabs' IAF emits floor(v/threshold) spikes per step by default (here at most one)",))


def _generic(g, meta):
    ifs = _neurons(g, (nir.IF,))
    r = _one(n.r for n in ifs) if ifs else None
    if r:
        return Convention("unknown", 1.0 / r, f"the IF nodes' r = {r:g} read as 1/dt")
    return Convention("unknown", SNNTORCH_DT, "no dt in the file: snnTorch's 1e-4 assumed; give --nir-dt")


RECOGNISERS = (_snncompile, _metadata_dt, _rockpool, _norse, _spikingjelly, _snntorch, _sinabs, _generic)


def recognise(graph: nir.NIRGraph) -> Convention:
    """The conventions of the file's producer (see the module docstring's table)."""
    meta = _meta(graph)
    for rule in RECOGNISERS:
        found = rule(graph, meta)
        if found is not None:
            return found
    raise AssertionError("_generic always answers")


# --- lowering --------------------------------------------------------------------------------

class _Lowering:
    def __init__(self, graph: nir.NIRGraph, conv: Convention, source: str):
        self.g = graph
        self.conv = conv
        self.dt = conv.dt
        self.source = source
        self.meta = _meta(graph)
        self.problems: list[Problem] = []
        self.gains: dict[str, np.ndarray] = {}

    def bad(self, name, node, hint):
        self.problems.append(Problem(name, type(node).__name__, hint))

    def reset(self, node) -> ir.Reset:
        mode = _meta(node).get("reset")
        return RESETS.get(str(mode), self.conv.reset) if mode is not None else self.conv.reset

    def op(self, name: str, node) -> ir.Op | None:
        if node is None:
            return ir.Flatten()  # norse's empty node: checked in from_nir
        if isinstance(node, nir.Input):
            return ir.Input(shape=tuple(int(s) for s in np.asarray(node.input_type["input"]).ravel()))
        if isinstance(node, nir.Output):
            return ir.Output()
        if isinstance(node, nir.Affine):
            return ir.Dense(weight=node.weight, bias=node.bias)
        if isinstance(node, nir.Linear):
            return ir.Dense(weight=node.weight)
        if isinstance(node, nir.Conv2d):
            if isinstance(node.padding, str):
                self.bad(name, node, f"string padding '{node.padding}' is not supported; give numbers")
                return None
            return ir.Conv2d(weight=node.weight, bias=node.bias, stride=_pair(node.stride),
                             padding=_pair(node.padding), dilation=_pair(node.dilation), groups=int(node.groups))
        if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            kind = ir.SumPool2d if isinstance(node, nir.SumPool2d) else ir.AvgPool2d
            return kind(kernel=_pair(node.kernel_size), stride=_pair(node.stride), padding=_pair(node.padding))
        if isinstance(node, nir.Flatten):
            return ir.Flatten()
        if isinstance(node, nir.Scale):
            return self._scale(name, node)
        if isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF)):
            if np.any(np.asarray(node.v_reset) != 0):
                self.bad(name, node, "v_reset must be 0")
            if not isinstance(node, nir.IF) and np.any(np.asarray(node.v_leak) != 0):
                self.bad(name, node, "v_leak must be 0")
            op = NEURONS.get(self.conv.producer, _euler)(self, name, node)
            v_init = _meta(node).get("v_init")  # our writer's initial potential (NIR has no field)
            if op is not None and v_init is not None:
                op = dataclasses.replace(op, v_init=np.full(np.shape(op.threshold), float(v_init)))
            return op
        if isinstance(node, nir.I):
            self.gains[name] = self.dt * np.asarray(node.r, dtype=np.float64)
            return ir.Integrator()
        self.bad(name, node, "no IR equivalent; supported: Input, Output, Affine, Linear, Conv2d, Flatten, "
                 "SumPool2d, AvgPool2d, Scale, IF, LIF, CubaLIF, I")
        return None

    def _scale(self, name, node):
        s = np.asarray(node.scale, dtype=np.float64)
        if s.ndim <= 1:
            return ir.Dense(weight=np.diag(np.atleast_1d(s)))
        per_channel = s.reshape(s.shape[0], -1)
        if s.ndim == 3 and np.all(per_channel == per_channel[:, :1]):
            c = s.shape[0]
            return ir.Conv2d(weight=np.diag(per_channel[:, 0]).reshape(c, c, 1, 1))
        self.bad(name, node, "a 3-D Scale must be constant per channel")
        return None


def _euler(low: _Lowering, name: str, node) -> ir.Op:
    """The module docstring's forward-Euler rules at the convention's dt."""
    dt = low.dt
    if isinstance(node, nir.IF):
        low.gains[name] = dt * np.asarray(node.r, dtype=np.float64)
        return ir.IF(threshold=node.v_threshold, reset=low.reset(node))
    if isinstance(node, nir.LIF):
        low.gains[name] = dt * _ratio(node.r, node.tau, 1.0 / dt)
        return ir.LIF(threshold=node.v_threshold, alpha=0.0, beta=_decay(dt, node.tau), reset=low.reset(node))
    low.gains[name] = (dt * _ratio(node.w_in, node.tau_syn, 1.0 / dt)) * (dt * _ratio(node.r, node.tau_mem, 1.0 / dt))
    return ir.LIF(threshold=node.v_threshold, alpha=_decay(dt, node.tau_syn),
                  beta=_decay(dt, node.tau_mem), reset=low.reset(node))


def _rockpool_neuron(low: _Lowering, name: str, node) -> ir.Op:
    """Rockpool: i = e^(−dt/tau_syn)·(i + x); v = e^(−dt/tau_mem)·v + i (its LIFTorch.forward)."""
    dt = low.dt
    if isinstance(node, nir.CubaLIF):
        alpha = np.exp(-dt / np.asarray(node.tau_syn, np.float64))
        low.gains[name] = alpha * np.asarray(node.w_in, np.float64)
        return ir.LIF(threshold=node.v_threshold, alpha=alpha, beta=np.exp(-dt / np.asarray(node.tau_mem, np.float64)),
                      reset=low.reset(node))
    if isinstance(node, nir.LIF):
        low.gains[name] = np.ones(1)
        return ir.LIF(threshold=node.v_threshold, alpha=0.0, beta=np.exp(-dt / np.asarray(node.tau, np.float64)),
                      reset=low.reset(node))
    return _euler(low, name, node)


def _norse_neuron(low: _Lowering, name: str, node) -> ir.Op:
    """norse: IAF adds its input (v += x); LIFBox is Euler at dt_norse with tau = tau_file/dt_norse."""
    if isinstance(node, nir.IF):
        return ir.IF(threshold=node.v_threshold, reset=low.reset(node))
    if isinstance(node, nir.CubaLIF):
        low.bad(name, node, "norse's LIFCell updates v from the previous step's current (one step late); "
                "the IR's LIF cannot express that: export a LIFBoxCell or IAFCell")
        return None
    dt = NORSE_DT ** 2 if low.conv.dt_source.startswith("norse") else low.dt
    low.gains[name] = dt * _ratio(node.r, node.tau, 1.0 / dt)
    return ir.LIF(threshold=node.v_threshold, alpha=0.0, beta=_decay(dt, node.tau), reset=low.reset(node))


NEURONS = {"rockpool": _rockpool_neuron, "norse": _norse_neuron}


def _input_shape(graph: nir.NIRGraph, name: str, node) -> tuple[int, ...]:
    """The Input's type without leading batch dimensions of 1 (norse, Rockpool keep one)."""
    shape = [int(s) for s in np.asarray(node.input_type["input"]).ravel()]
    users = [graph.nodes[b] for a, b in graph.edges if a == name]
    while len(shape) > 1 and shape[0] == 1:
        user = users[0] if len(users) == 1 else None
        if isinstance(user, (nir.Affine, nir.Linear)) and int(np.prod(shape)) == user.weight.shape[1] \
                and len(shape) == 2:
            shape = shape[1:]
        elif isinstance(user, nir.Conv2d) and len(shape) == 4:
            shape = shape[1:]
        else:
            break
    return tuple(shape)


def from_nir(graph: nir.NIRGraph, dt: float | None = None, source: str = "nir",
             reset: str | None = None) -> Graph:
    """Lower a NIRGraph (see the module docstring for the time rules and producer conventions)."""
    conv = recognise(graph)
    if dt is not None:
        if not np.isfinite(dt) or dt <= 0:
            raise SnnCompileError(f"--nir-dt must be a positive number, got {dt}")
        conv = dataclasses.replace(conv, dt=float(dt), dt_source="--nir-dt")
    if reset is not None:
        if reset not in RESETS:
            raise SnnCompileError(f"--nir-reset must be zero or subtract, not '{reset}'")
        conv = dataclasses.replace(conv, reset=RESETS[reset])
    low = _Lowering(graph, conv, source)
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        preds[b].append(a)
    import networkx as nx

    order = list(nx.topological_sort(nx.DiGraph(list(graph.edges)))) + [
        n for n in graph.nodes if not any(n in e for e in graph.edges)]
    names = {}
    builder = GraphBuilder({"source": source, "frontend": "nir", "dt": conv.dt, "nir_producer": conv.producer,
                            "dt_source": conv.dt_source, "nir_notes": list(conv.notes)})
    for nir_name in order:
        node = graph.nodes[nir_name]
        op = low.op(nir_name, node)
        if op is None:
            continue
        if isinstance(node, nir.Input):
            op = ir.Input(shape=_input_shape(graph, nir_name, node))
        name = builder.unique_name(sanitize(nir_name))
        inputs = [names[p] for p in preds[nir_name] if p in names]
        if len(inputs) != len(preds[nir_name]):
            continue  # an input was unsupported (already reported): so is everything after it
        if node is None and not _flatten_fits(graph, nir_name, builder, inputs):
            low.problems.append(Problem(nir_name, "None", "an empty node (norse's to_nir writes None for "
                                        "AvgPool2d and Flatten): only a Flatten in front of an Affine can be "
                                        "told; replace the pooling by a strided Conv2d before exporting"))
            continue
        names[nir_name] = name
        if isinstance(op, ir.Flatten) and _meta(node).get("implicit"):
            names[nir_name] = inputs[0]  # written by our backend in front of an Affine: Dense reads any shape
            continue
        builder.add(name, op, inputs)
    for nir_name, gain in low.gains.items():
        if nir_name in names:
            _fold_gain(builder, names[nir_name], gain, low)
    if low.problems:
        raise UnsupportedModelError(f"{source}", low.problems)
    if low.meta.get("readout") == SUM_READOUT:
        _sum_readout(builder)
    return builder.build()


def _flatten_fits(graph, nir_name, builder, inputs) -> bool:
    users = [graph.nodes[b] for a, b in graph.edges if a == nir_name]
    if len(users) != 1 or not isinstance(users[0], (nir.Affine, nir.Linear)) or len(inputs) != 1:
        return False
    shape = builder.build(verify=False).shape(inputs[0])
    return int(np.prod(shape)) == users[0].weight.shape[1]


def _sum_readout(builder: GraphBuilder) -> None:
    """Our portable files leave the readout to the reader (it sums the last layer's output over
    the steps): put the Integrator back in front of each Output fed by a synaptic op."""
    for out, op in list(builder.build(verify=False).nodes()):
        if not isinstance(op, ir.Output):
            continue
        (src,) = builder.inputs(out)
        if isinstance(builder.op(src), SYNAPTIC):
            readout = builder.add(builder.unique_name(f"{src}_readout"), ir.Integrator(), [src])
            builder.set_inputs(out, [readout])


def _fold_gain(builder: GraphBuilder, neuron: str, gain: np.ndarray, low: _Lowering) -> None:
    """Multiply the synapses feeding ``neuron`` by its input gain (identity when gain == 1)."""
    gain = np.asarray(gain, dtype=np.float64)
    if np.allclose(gain, 1.0, rtol=1e-12, atol=0):
        return
    if gain.size > 1 and not np.all(gain == gain.flat[0]):
        low.problems.append(Problem(neuron, builder.op(neuron).kind.value, "per-neuron input gains differ"))
        return
    g = float(gain.flat[0])
    for src in builder.inputs(neuron):
        op = builder.op(src)
        if not isinstance(op, SYNAPTIC) or len(builder.users(src)) != 1:
            low.problems.append(Problem(neuron, builder.op(neuron).kind.value,
                                        f"input gain {g:g} needs a Linear/Affine/Conv2d input used only here"))
            return
        bias = None if op.bias is None else op.bias * g
        builder.replace(src, dataclasses.replace(op, weight=op.weight * g, bias=bias))
