"""Float time-stepped simulation of a spiking IR graph (IF, LIF, Integrator neurons), batched.

The fast, labelled float path (not bit-exact): for checks against other float simulators
(snnTorch through NIR) and for accuracy sweeps of the float SNN. Per step, ops run in
topological order; a node fed only by the Input (the host side) is computed once. Each
synaptic op (Dense, Conv2d) whose input depends on a neuron delays its output by ``delay``
steps: 1 is what Loihi and Lava do, 0 is what snnTorch and most float frameworks do.

Biases wait for the input (the latency contract, passes.latency): with a delay, a synapse delivers
nothing, its bias included, before its source's first input can arrive (``ir.timing``), so each
layer runs the delay-free trajectory shifted by its depth. The fixed-point graph does the same once
passes.latency has started each neuron depth·bias lower (on the chip the bias is the neuron's,
added to v from step 0; uncompensated, that early bias cost up to 40 pp at T=8 against this
simulator, benchmarks/fidelity.py --gap). netx graphs cannot be compensated (no initial potential).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from snncompile.runtime import progress as report_progress
from snncompile.errors import SnnCompileError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import IF, LIF, Add, Concat, Conv2d, Dense, Integrator, Reset
from snncompile.ir.timing import arrivals
from snncompile.sim.ann import UNARY, evaluate


@dataclass
class FloatResult:
    """``outputs``: Output name -> value after the last step (a neuron's v, else the last value).
    ``spikes``/``v``: neuron name -> (N, steps, *shape) when recorded."""

    outputs: dict[str, np.ndarray]
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)
    per_step: dict[str, np.ndarray] = field(default_factory=dict)  # Output name -> (N, steps, ...)
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # Output name -> spike counts, when it spikes

    def scores(self) -> dict[str, np.ndarray]:
        """What a class is read from, per Output: the spike counts of a spiking output layer (as
        snnTorch, SpikingJelly and sinabs count them), else the readout's membrane."""
        return {k: self.counts.get(k, v) for k, v in self.outputs.items()}


def readout_kind(graph: Graph) -> str:
    """"spike_count" when the layer an Output reads spikes (a trained or imported SNN whose last
    layer is a spiking neuron), "membrane" for an integrator readout (a converted ANN)."""
    for out in graph.output_names():
        (src,) = graph.inputs(out)
        op = graph.op(src)
        if op.neuron and not isinstance(op, Integrator) and not getattr(op, "readout", False):
            return "spike_count"
    return "membrane"


def _reset(v: torch.Tensor, spikes: torch.Tensor, threshold: torch.Tensor, mode: Reset) -> torch.Tensor:
    if mode is Reset.ZERO:
        return torch.where(spikes, torch.zeros_like(v), v)
    return v - spikes.to(v.dtype) * threshold


def signed_spikes(v: torch.Tensor, threshold: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
    """``Reset.SIGNED``'s spikes: +1 where v > threshold, −1 where v ≤ 0 while the spikes sent so
    far (``sent``) sum to more than 0, else 0; in v's dtype."""
    return (v > threshold).to(v.dtype) - ((v <= 0) & (sent > 0)).to(v.dtype)


def simulate(graph: Graph, x, steps: int, *, delay: int = 1, device: str = "cpu", record: bool = False,
             dtype=torch.float64, progress: bool = False) -> FloatResult:
    """Run ``graph`` for ``steps`` steps on a batch ``x`` (N, *input shape); ``progress``
    shows a bar over the steps."""
    (inp,) = graph.input_names()
    spiking = {n for n, op in graph.nodes() if op.neuron}
    dynamic = spiking | graph.descendants(spiking)
    static_nodes = {n for n in graph.order() if n not in dynamic}
    static = evaluate(graph, x, device=device, dtype=dtype, upto=static_nodes)
    n = static[inp].shape[0]

    state: dict[str, dict[str, torch.Tensor]] = {}
    for name in spiking:
        op = graph.op(name)
        shape = (n,) + graph.shape(name)
        v0 = torch.as_tensor(np.broadcast_to(op.v_init, graph.shape(name)).copy(), dtype=dtype, device=device)
        state[name] = {"v": v0.expand(shape).clone(), "i": torch.zeros(shape, dtype=dtype, device=device)}
        if getattr(op, "reset", None) is Reset.SIGNED:
            state[name]["n"] = torch.zeros(shape, dtype=dtype, device=device)
    queues = {name: [] for name, op in graph.nodes() if isinstance(op, (Dense, Conv2d)) and name in dynamic}
    # the step from which each delayed synapse delivers (its bias waits for its source's input)
    times = arrivals(graph) if delay > 0 else {}
    starts = {name: times[name][0] * delay for name in queues} if delay > 0 else {}
    rec_s = {k: [] for k in spiking} if record else {}
    rec_v = {k: [] for k in spiking} if record else {}
    per_step = {o: [] for o in graph.output_names()}
    counted = {o: graph.inputs(o)[0] for o in graph.output_names()
               if graph.inputs(o)[0] in spiking and not isinstance(graph.op(graph.inputs(o)[0]), Integrator)}
    counts = {o: 0 for o in counted}
    values: dict[str, torch.Tensor] = {}

    def param(arr, name):
        return torch.as_tensor(np.broadcast_to(arr, graph.shape(name)).copy(), dtype=dtype, device=device)

    # each neuron's constants, on the device once (not every step)
    consts = {name: {k: param(getattr(graph.op(name), k), name) for k in ("threshold", "alpha", "beta")
                     if getattr(graph.op(name), k, None) is not None} for name in spiking}

    for t in report_progress.track(range(steps), "float SNN", progress, unit="steps"):
        values = dict(static)
        for name, op in graph.nodes():
            if name in static:
                continue
            args = [values[i] for i in graph.inputs(name)]
            if isinstance(op, (IF, LIF, Integrator)):
                total = args[0] if len(args) == 1 else torch.stack(args).sum(0)
                st = state[name]
                if isinstance(op, Integrator):
                    st["v"] = st["v"] + total
                    values[name] = st["v"]
                    continue
                if isinstance(op, LIF):
                    st["i"] = consts[name]["alpha"] * st["i"] + total
                    st["v"] = consts[name]["beta"] * st["v"] + st["i"]
                else:
                    st["v"] = st["v"] + total
                theta = consts[name]["threshold"]
                if op.reset is Reset.SIGNED:
                    values[name] = signed_spikes(st["v"], theta, st["n"])
                    st["v"] = st["v"] - values[name] * theta
                    st["n"] = st["n"] + values[name]
                    spikes = values[name]
                else:
                    spikes = st["v"] > theta
                    st["v"] = _reset(st["v"], spikes, theta, op.reset)
                    values[name] = spikes.to(dtype)
                if record:
                    rec_s[name].append(spikes.to(torch.int8).cpu())
                    rec_v[name].append(st["v"].cpu())
            elif isinstance(op, Add):
                values[name] = torch.stack(args).sum(0)
            elif isinstance(op, Concat):
                values[name] = torch.cat(args, dim=1)
            elif type(op) in UNARY:
                out = UNARY[type(op)](op, args[0])
                if name in queues and delay > 0:
                    queues[name].append(out)
                    out = queues[name].pop(0) if len(queues[name]) > delay else torch.zeros_like(out)
                    if t < starts[name]:
                        out = torch.zeros_like(out)
                values[name] = out
            else:
                raise SnnCompileError(f"node '{name}': {op.kind.value} has no float time-stepped semantics")
        for out in per_step:
            per_step[out].append(values[out].cpu())
        for out, src in counted.items():
            counts[out] = counts[out] + values[src]
    outputs = {}
    for out in graph.output_names():
        (src,) = graph.inputs(out)
        outputs[out] = (state[src]["v"] if src in state else values[out]).cpu().numpy()
    return FloatResult(
        outputs=outputs,
        # integrators spike never and are not recorded (their v is the output)
        spikes={k: torch.stack(v, 1).numpy() for k, v in rec_s.items() if v},
        v={k: torch.stack(v, 1).numpy() for k, v in rec_v.items() if v},
        per_step={k: torch.stack(v, 1).numpy() for k, v in per_step.items()},
        counts={k: np.asarray(v.cpu().numpy() if torch.is_tensor(v) else v) for k, v in counts.items()},
    )


def predict(graph: Graph, x, steps: int, *, delay: int = 1, batch_size: int = 128, dtype=torch.float32,
            device: str = "cpu", progress: bool = False) -> np.ndarray:
    """The (single) output's scores (``FloatResult.scores``) for all of ``x``, ``batch_size``
    samples at a time so memory stays bounded; float32 by default (this is the approximate
    float path; the exact one is sim.fixed)."""
    parts = []
    batches = range(0, len(x), batch_size)
    for start in report_progress.track(batches, "float SNN", progress, unit="batches"):
        run = simulate(graph, x[start:start + batch_size], steps, delay=delay, device=device, dtype=dtype)
        parts.append(np.asarray(next(iter(run.scores().values()))))
    return np.concatenate(parts)
