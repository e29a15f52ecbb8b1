"""NIR frontend: read a NIR graph (``nir.read`` file or a NIRGraph) into the float IR.

NIR is continuous-time; the IR is discrete with one step of length ``dt``. ``dt`` comes from
the graph's metadata (our files write ``dt`` = 1) or the caller; without either it is 1e-4,
the step snnTorch's ``export_to_nir``/``import_from_nir`` assume. Forward-Euler rules:

    IF       dv/dt = R·I                    -> IF: v += (dt·R)·x
    LIF      tau·dv/dt = (v_leak − v) + R·I -> LIF(alpha=0, beta=1 − dt/tau): v = beta·v + (dt·R/tau)·x
    CubaLIF  tau_syn·di/dt = −i + w_in·S,
             tau_mem·dv/dt = (v_leak − v) + R·i
                                            -> LIF(alpha=1 − dt/tau_syn, beta=1 − dt/tau_mem) with
                                               input gain (dt·w_in/tau_syn)·(dt·R/tau_mem)
    I        dv/dt = R·I                    -> Integrator: v += (dt·R)·x
    tau = ∞ (snnTorch's beta = 1) gives beta = 1 and gain R·dt/tau taken as 1 when R is ∞ too.

Input gains other than 1 are folded into the weights and biases of the synaptic ops (Affine,
Linear, Conv2d) that feed the neuron, which must feed nothing else. v_leak must be 0 and v_reset
0. NIR has no reset-mode field: neurons reset to v_reset (zero) unless the node's (or the
graph's) metadata says ``reset: subtract``, as our NIR backend writes. Scale with a per-channel
or per-element factor becomes a Dense (1-D) or a diagonal 1×1 Conv2d (3-D, per channel).
"""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np

from snncompile.errors import ModelLoadError, Problem, UnsupportedModelError
from snncompile.frontends.names import sanitize
from snncompile.ir import ops as ir
from snncompile.ir.graph import Graph, GraphBuilder

SNNTORCH_DT = 1e-4
SYNAPTIC = (ir.Dense, ir.Conv2d)


def load_model(path: str | Path, dt: float | None = None) -> Graph:
    path = Path(path)
    try:
        graph = nir.read(path)
    except Exception as exc:  # h5py/nir raise many types for foreign or damaged files
        raise ModelLoadError(f"{path}: not a readable NIR file ({type(exc).__name__}: {exc}); "
                             "write it with nir.write") from None
    return from_nir(graph, dt=dt, source=path.name)


def _meta(node) -> dict:
    meta = getattr(node, "metadata", None) or {}
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in meta.items()}


def _reset(node, graph_meta: dict) -> ir.Reset:
    mode = _meta(node).get("reset") or graph_meta.get("reset")
    mode = str(mode.item() if hasattr(mode, "item") else mode) if mode is not None else "zero"
    return ir.Reset.SUBTRACT if mode == "subtract" else ir.Reset.ZERO


def _ratio(num, den) -> np.ndarray:
    """num/den with ∞/∞ (snnTorch's beta = 1 export) taken as 1."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    return np.where(np.isinf(num) & np.isinf(den), 1.0, out)


def _decay(dt: float, tau) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 1.0 - dt / np.asarray(tau, dtype=np.float64)


def _pair(v) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(v)).astype(int).ravel()
    return (int(arr[0]), int(arr[-1]))


class _Lowering:
    def __init__(self, graph: nir.NIRGraph, dt: float, source: str):
        self.g = graph
        self.dt = dt
        self.source = source
        self.meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (graph.metadata or {}).items()}
        self.problems: list[Problem] = []
        self.gains: dict[str, np.ndarray] = {}

    def bad(self, name, node, hint):
        self.problems.append(Problem(name, type(node).__name__, hint))

    def op(self, name: str, node) -> ir.Op | None:
        dt = self.dt
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
        if isinstance(node, nir.IF):
            if np.any(np.asarray(node.v_reset) != 0):
                self.bad(name, node, "v_reset must be 0")
            self.gains[name] = dt * np.asarray(node.r, dtype=np.float64)
            return ir.IF(threshold=node.v_threshold, reset=_reset(node, self.meta))
        if isinstance(node, nir.LIF):
            if np.any(np.asarray(node.v_leak) != 0) or np.any(np.asarray(node.v_reset) != 0):
                self.bad(name, node, "v_leak and v_reset must be 0")
            self.gains[name] = dt * _ratio(node.r, node.tau)
            return ir.LIF(threshold=node.v_threshold, alpha=0.0, beta=_decay(dt, node.tau),
                          reset=_reset(node, self.meta))
        if isinstance(node, nir.CubaLIF):
            if np.any(np.asarray(node.v_leak) != 0) or np.any(np.asarray(node.v_reset) != 0):
                self.bad(name, node, "v_leak and v_reset must be 0")
            self.gains[name] = (dt * _ratio(node.w_in, node.tau_syn)) * (dt * _ratio(node.r, node.tau_mem))
            return ir.LIF(threshold=node.v_threshold, alpha=_decay(dt, node.tau_syn),
                          beta=_decay(dt, node.tau_mem), reset=_reset(node, self.meta))
        if isinstance(node, nir.I):
            self.gains[name] = dt * np.asarray(node.r, dtype=np.float64)
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


def from_nir(graph: nir.NIRGraph, dt: float | None = None, source: str = "nir") -> Graph:
    """Lower a NIRGraph (see the module docstring for the time rules)."""
    meta_dt = (graph.metadata or {}).get("dt")
    dt = float(dt if dt is not None else (np.asarray(meta_dt).item() if meta_dt is not None else SNNTORCH_DT))
    low = _Lowering(graph, dt, source)
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        preds[b].append(a)
    import networkx as nx

    order = list(nx.topological_sort(nx.DiGraph(list(graph.edges)))) + [
        n for n in graph.nodes if not any(n in e for e in graph.edges)]
    names = {}
    builder = GraphBuilder({"source": source, "frontend": "nir", "dt": dt})
    for nir_name in order:
        node = graph.nodes[nir_name]
        op = low.op(nir_name, node)
        if op is None:
            continue
        name = builder.unique_name(sanitize(nir_name))
        names[nir_name] = name
        inputs = [names[p] for p in preds[nir_name] if p in names]
        if len(inputs) != len(preds[nir_name]):
            continue  # an input was unsupported: already reported
        if isinstance(op, ir.Flatten) and _meta(node).get("implicit"):
            names[nir_name] = inputs[0]  # written by our backend in front of an Affine: Dense reads any shape
            continue
        builder.add(name, op, inputs)
    for nir_name, gain in low.gains.items():
        if nir_name in names:
            _fold_gain(builder, names[nir_name], gain, low)
    if low.problems:
        raise UnsupportedModelError(f"{source}", low.problems)
    return builder.build()


def _fold_gain(builder: GraphBuilder, neuron: str, gain: np.ndarray, low: _Lowering) -> None:
    """Multiply the synapses feeding ``neuron`` by its input gain (identity when gain == 1)."""
    gain = np.asarray(gain, dtype=np.float64)
    if np.allclose(gain, 1.0, rtol=1e-12, atol=0):
        return
    if gain.size > 1 and not np.all(gain == gain.flat[0]):
        low.problems.append(Problem(neuron, builder.op(neuron).kind.value, "per-neuron input gains differ"))
        return
    g = float(gain.flat[0])
    import dataclasses

    for src in builder.inputs(neuron):
        op = builder.op(src)
        if not isinstance(op, SYNAPTIC) or len(builder.users(src)) != 1:
            low.problems.append(Problem(neuron, builder.op(neuron).kind.value,
                                        f"input gain {g:g} needs a Linear/Affine/Conv2d input used only here"))
            return
        bias = None if op.bias is None else op.bias * g
        builder.replace(src, dataclasses.replace(op, weight=op.weight * g, bias=bias))
