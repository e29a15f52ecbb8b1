"""Run a fixed-point IR graph on Lava's bit-accurate CPU models, one fresh network per sample.

Mapping (shared DESIGN §2; every layout fact below is pinned in tests/backends/test_lava_backend.py):

- ``LoihiNeuron`` reset ZERO (readouts included) -> ``RecordedLIF`` (processes.py): Lava's
  ``LIF`` process, its fixed_pt model PyLifModelBitAcc plus recording; one threshold per
  population, so vth must be uniform); reset SUBTRACT -> ``SubtractiveLIF`` (processes.py;
  per-neuron vth); reset SIGNED -> ``SignedLIF`` (processes.py; per-neuron vth, spikes −1 / 0 /
  +1 sent as int32, its count of spikes sent back to 0 at each sample's start).
  du, dv, vth, bias_mant, bias_exp come from the op; a neuron fed by a ``BiasEncoder`` takes
  bias_mant/bias_exp from that sample's encoding instead; v starts at ``v_init``, u at 0.
- ``FixedDense`` -> ``Dense(weights, weight_exp, num_weight_bits=8, sign_mode=MIXED,
  num_message_bits=0)`` (2 after a signed population, below). The sign mode is given so that
  an all-positive or all-negative matrix is clipped like a mixed one (INHIBITORY would turn -256
  into -255).
- A ``FixedDense`` or ``FixedConv2d`` whose source (through Flattens) is a ``Reset.SIGNED``
  population gets ``num_message_bits=2`` (``SIGNED_MESSAGE_BITS``), every other one 0. With 0,
  Lava's Dense and Conv read their input as bools (−1 would count as +1); with any width > 0
  they add s·weight for the integers s received (lava/proc/dense/models.py, conv/models.py; the
  CPU models check nothing else). 2 is the narrowest signed payload holding −1, 0 and +1
  (two's complement −2..1; 1 bit holds 0 and −1 only), the width of Lava's own ternary spikes
  (TernaryLIF's fixed_pt s_out: precision 2).
- ``FixedConv2d`` -> ``Conv``: Lava's tensors are (X, Y, C) = (W, H, C), its kernel is
  (out, kx, ky, in) and it computes a true convolution, so it gets the torch kernel flipped in
  both spatial axes and permuted (out, in, kH, kW) -> (out, kW, kH, in), and (X, Y) ordered
  stride, padding and dilation. Its ``weight_exp`` (a left shift, 0..7) is applied to the kernel:
  Lava's Conv model ignores its own ``weight_exp`` Var.
- Neuron populations of IR shape (C, H, W) live in Lava as (W, H, C); other shapes are kept.
  A ``FixedDense`` reading such a population (directly or through a ``Flatten`` of its spikes)
  gets its columns reordered from the IR's C-order (C, H, W) flattening to Lava's C-order
  (W, H, C) flattening, and reads the population through ``s_out.flatten()``.
- Several synaptic inputs of one neuron all connect to its ``a_in`` (Lava adds them).
- Host ops (float Dense/Conv2d/... up to the BiasEncoders) run in ``encode_inputs``.

Trace semantics (what the reference simulator must reproduce): step t = 0 .. steps-1 is Lava
time step t+1; ``spikes[t]`` is the population's s_out sent at step t and ``v[t]`` its v after
step t's reset, both as Lava's Monitor would record them (the models write them as they compute
them: processes.Recording), transposed back to the IR's layout.
A synaptic layer delivers at step t+1 the spikes it received at step t.
"""

# No ``from __future__ import annotations`` here: Lava's model search re-executes the modules
# next to processes.py outside sys.modules, where dataclasses cannot resolve string annotations.
import functools
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from snncompile.backends.lava import compat

compat.install()

from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.dense.process import Dense  # noqa: E402
from lava.utils.weightutils import SignMode, clip_weights, truncate_weights  # noqa: E402

from snncompile.runtime import progress as report_progress  # noqa: E402
from snncompile.backends.fixed_graph import host_nodes, max_input, neuron_behind, spike_source  # noqa: E402
from snncompile.backends.lava.processes import RecordedLIF, SignedLIF, SubtractiveLIF  # noqa: E402
from snncompile.backends.lava import fastconv  # noqa: E402
# one copy, in the standalone script; SIGNED_MESSAGE_BITS: the graded-spike width (2) of a synapse
# reading a Reset.SIGNED population (−1 / 0 / +1), 0 (binary spikes) for every other synapse
from snncompile.backends.run_on_loihi import SIGNED_MESSAGE_BITS, lava_groups, sim_config  # noqa: E402
from snncompile.errors import BackendError, Problem  # noqa: E402
from snncompile.runtime.interrupts import Interrupted, forget, on_hard_exit, stop_children  # noqa: E402
from snncompile.ir.graph import Graph  # noqa: E402
from snncompile.ir.ops import (  # noqa: E402
    Add,
    AvgPool2d,
    BatchNorm,
    BiasEncoder,
    Conv2d,
    FixedConv2d,
    FixedDense,
    Flatten,
    Input,
    LoihiNeuron,
    Output,
    ReLU,
    Reset,
)
from snncompile.ir.ops import Dense as FloatDense  # noqa: E402
from snncompile.sim.trace import Trace  # noqa: E402

# Float ops that may run on the host, between the Input and the BiasEncoders.
HOST_OPS = (FloatDense, Conv2d, BatchNorm, ReLU, AvgPool2d, Flatten, Add)
# Lava's conv model wraps its output to signed 24 bits (conv.utils.signed_clamp).
LAVA_CONV_OUT_BITS = 24
LAVA_WEIGHT_BITS = 8
# Lava's Conv model stores kernel_size, stride, padding, dilation and groups as int8 Vars:
# 128 wraps to -128 (measured: a 182-wide kernel fails with "negative dimensions").
LAVA_CONV_PARAM_MAX = 127
# Lava's Conv sums in float32 (torch FloatTensor): exact while every sum stays below 2**24.
LAVA_CONV_EXACT_SUM = 2**24
# LIF holds a_in in int32 and shifts it by 6: |a_in| must stay below 2**25.
LAVA_A_IN_LIMIT = 2**25



def run_config() -> Loihi2SimCfg:
    """The one run configuration this backend uses: Lava's bit-accurate CPU models, each process
    class's model searched for once (``run_on_loihi.ModelPerClass``)."""
    return sim_config()


# ---------------------------------------------------------------------------------------------
# Layout: IR (C, H, W) <-> Lava (X, Y, C) = (W, H, C).


def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A population's shape in Lava: (C, H, W) becomes (W, H, C); other shapes are kept."""
    return tuple(reversed(shape)) if len(shape) == 3 else tuple(shape)


def to_lava(arr: np.ndarray) -> np.ndarray:
    """An array of IR neuron shape in Lava's layout."""
    arr = np.asarray(arr)
    return arr.transpose(2, 1, 0) if arr.ndim == 3 else arr


def from_lava(arr: np.ndarray, lead: int = 0) -> np.ndarray:
    """Inverse of ``to_lava`` for an array with ``lead`` leading (e.g. time) axes."""
    arr = np.asarray(arr)
    if arr.ndim - lead != 3:
        return arr
    return arr.transpose(*range(lead), lead + 2, lead + 1, lead)


def dense_columns_to_lava(weight: np.ndarray, src_shape: tuple[int, ...]) -> np.ndarray:
    """Reorder a Dense matrix's columns from the IR's flattening of ``src_shape`` to Lava's.

    Column j of the result multiplies element j of the C-order flattening of the Lava-layout
    population, i.e. IR element ``ir_index[j]``.
    """
    if len(src_shape) != 3:
        return weight
    ir_index = to_lava(np.arange(math.prod(src_shape)).reshape(src_shape)).reshape(-1)
    return weight[:, ir_index]


def conv_kernel_to_lava(weight: np.ndarray) -> np.ndarray:
    """torch's cross-correlation kernel (out, in, kH, kW) as Lava's convolution kernel
    (out, kW, kH, in): flipped in both spatial axes, then permuted."""
    return np.ascontiguousarray(np.flip(weight, (-1, -2)).transpose(0, 3, 2, 1))


def _xy(pair: tuple[int, int]) -> tuple[int, int]:
    """An IR (H, W)-ordered pair as Lava's (X, Y) order."""
    return int(pair[1]), int(pair[0])


# ---------------------------------------------------------------------------------------------
# What the backend can express.


def _lava_keeps_weights(weight: np.ndarray) -> bool:
    """True when Lava's Dense clip and truncation (MIXED, 8 bits) leave ``weight`` unchanged."""
    w = np.asarray(weight, dtype=np.int64)
    kept = truncate_weights(clip_weights(w, SignMode.MIXED, num_bits=8), SignMode.MIXED, LAVA_WEIGHT_BITS)
    return bool(np.array_equal(kept, w))


def problems(graph: Graph) -> list[Problem]:
    """Every node this backend cannot express, with a hint each (empty when all is well)."""
    found: list[Problem] = []
    host = host_nodes(graph)

    def bad(name: str, hint: str) -> None:
        found.append(Problem(name, graph.op(name).kind.value, hint))

    inputs = graph.input_names()
    if len(inputs) > 1:
        for name in inputs[1:]:
            bad(name, "the Lava backend takes a graph with one Input")
    for name, op in graph.nodes():
        if isinstance(op, Input):
            continue
        if isinstance(op, BiasEncoder):
            if any(not isinstance(graph.op(u), LoihiNeuron) for u in graph.users(name)):
                bad(name, "a BiasEncoder may feed LoihiNeurons only")
        elif isinstance(op, LoihiNeuron):
            found += _neuron_problems(graph, name, op)
        elif isinstance(op, FixedDense):
            src = spike_source(graph, name)
            if src is None:
                bad(name, "FixedDense must read a LoihiNeuron's spikes (optionally through Flatten)")
            elif op.weight.shape[1] != math.prod(graph.shape(src)):
                bad(name, f"weight has {op.weight.shape[1]} columns for {graph.shape(src)} neurons")
            if not _lava_keeps_weights(op.weight):
                bad(name, "weights outside Lava's Dense set (even integers in [-256, 254])")
        elif isinstance(op, FixedConv2d):
            (src,) = graph.inputs(name)
            if not isinstance(graph.op(src), LoihiNeuron) or len(graph.shape(src)) != 3:
                bad(name, "FixedConv2d must read the spikes of a (C, H, W) LoihiNeuron population")
            ints = [*op.weight.shape[2:], *op.stride, *op.padding, *op.dilation]  # groups: lava_groups
            if max(ints) > LAVA_CONV_PARAM_MAX:
                limit = LAVA_CONV_PARAM_MAX
                bad(name, f"Lava's Conv holds kernel, stride, padding, dilation, groups in int8 (<= {limit})")
            if max_input(op) >= LAVA_CONV_EXACT_SUM:
                bad(name, f"a kernel's |weights| sum to {max_input(op)} >= 2**24: Lava's float32 conv is inexact")
            fmt = op.output_format
            if fmt is None or fmt.bits != LAVA_CONV_OUT_BITS or not fmt.signed:
                bad(name, f"Lava's Conv wraps its output to signed {LAVA_CONV_OUT_BITS} bits, not {fmt}")
        elif isinstance(op, Output):
            (src,) = graph.inputs(name)
            if not isinstance(graph.op(src), LoihiNeuron):
                bad(name, "an Output must read a LoihiNeuron (its v after the last step)")
        elif isinstance(op, Flatten) and name not in host:
            users = graph.users(name)
            if neuron_behind(graph, name) is None or not all(
                isinstance(graph.op(u), (FixedDense, Flatten)) for u in users
            ):
                bad(name, "a Flatten of spikes may only feed FixedDense")
        elif isinstance(op, HOST_OPS):
            if name not in host:
                bad(name, "float op on the spiking side: only host ops before a BiasEncoder are supported")
        else:
            bad(name, "not a fixed-point op; run the Loihi 2 quantization passes first")
    return found


def _neuron_problems(graph: Graph, name: str, op: LoihiNeuron) -> list[Problem]:
    out = []
    kind = op.kind.value
    inputs = graph.inputs(name)
    encoders = [i for i in inputs if isinstance(graph.op(i), BiasEncoder)]
    for i in inputs:
        if not isinstance(graph.op(i), (BiasEncoder, FixedDense, FixedConv2d)):
            hint = f"input '{i}' ({graph.op(i).kind.value}) is not a synapse or BiasEncoder"
            out.append(Problem(name, kind, hint))
    if len(encoders) > 1:
        out.append(Problem(name, kind, "a neuron takes at most one BiasEncoder"))
    fan_in = sum(max_input(graph.op(i)) for i in inputs if isinstance(graph.op(i), (FixedDense, FixedConv2d)))
    if fan_in >= LAVA_A_IN_LIMIT:
        out.append(Problem(name, kind, f"synaptic input up to {fan_in} >= 2**25 overflows Lava's int32 a_in << 6"))
    if encoders and np.any(op.bias_mant):
        out.append(Problem(name, kind, "a neuron fed by a BiasEncoder must have zero static bias"))
    if op.reset == Reset.ZERO and op.vth.size and np.any(op.vth != op.vth.flat[0]):
        out.append(Problem(name, kind, "reset-to-zero maps to Lava's LIF, which has one vth per population"))
    return out


def check_graph(graph: Graph) -> None:
    """Raise one BackendError listing every node the Lava backend cannot express."""
    found = problems(graph)
    if found:
        listed = "; ".join(f"node '{p.node}' ({p.op}): {p.hint}" for p in found)
        raise BackendError(f"lava backend: {len(found)} unsupported node(s): {listed}")


# ---------------------------------------------------------------------------------------------
# One sample's network.


@dataclass
class LavaNetwork:
    """The Lava processes: a population per LoihiNeuron, each writing its spikes and v into a
    file of ``workdir`` as it computes them (processes.py ``Recording``)."""

    graph: Graph
    workdir: str
    steps: int  # the steps the record files hold (all samples')
    populations: dict[str, object] = field(default_factory=dict)
    synapses: dict[str, object] = field(default_factory=dict)
    records: dict[str, str] = field(default_factory=dict)  # neuron name -> its record file
    components: list[list[str]] = field(default_factory=list)  # neuron names per connected part

    def run(self, steps: int, count: int = 1,
            done: Callable[[], None] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Run every connected part for ``count`` samples of ``steps`` steps; (spikes, v) per
        neuron, IR layout, shape (count·steps, *IR shape), as the populations recorded them.

        The samples run back to back in the same compiled network; each starts from a fresh
        network's state with its own input (processes.Samples: ``build_network(samples=,
        sample_steps=)``). ``done`` is called after each sample's run."""
        spikes: dict[str, np.ndarray] = {}
        v: dict[str, np.ndarray] = {}
        for component in self.components:
            anchor = self.populations[component[0]]
            abort = functools.partial(_abort, anchor)
            on_hard_exit(abort)  # a signal whose raise is lost still stops this runtime
            try:
                try:
                    for _ in range(count):
                        anchor.run(condition=RunSteps(num_steps=steps), run_cfg=run_config())
                        if done is not None and component is self.components[-1]:
                            done()
                except Exception as exc:
                    why = _failure(anchor, exc)
                    raise BackendError(f"lava backend: running '{component[0]}' failed: {why}") from exc
                try:
                    for name in component:
                        spikes[name], v[name] = self._read(name)
                finally:
                    anchor.stop()
            except (KeyboardInterrupt, Interrupted):
                _abort(anchor)
                raise
            finally:
                forget(abort)
        return spikes, v

    def _read(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(spikes, v) of one population, (steps, *IR shape), from its record file."""
        data = np.array(np.memmap(self.records[name], dtype=np.int64, mode="r",
                                  shape=(2, self.steps, *lava_shape(self.graph.shape(name)))))
        return from_lava(data[0], lead=1), from_lava(data[1], lead=1)


def _abort(anchor) -> None:
    """Stop a runtime that a signal cut short: its actors wait on channels that will never
    speak again, and ``stop()`` (or Python's exit, which joins child processes) would wait for
    them forever. So the actors are terminated, the shared-memory server is shut down (it
    unlinks the channels' segments) and whatever child is left is killed."""
    import multiprocessing

    runtime = getattr(anchor, "runtime", None)
    infrastructure = getattr(runtime, "_messaging_infrastructure", None)
    actors = list(getattr(infrastructure, "actors", []) or [])
    for actor in actors:
        try:
            actor.terminate()
        except Exception:  # noqa: BLE001 - best effort: the interrupt is what matters
            pass
    for actor in actors:
        try:
            multiprocessing.Process.join(actor, 1.0)  # SystemProcess.join has no timeout
            if actor.is_alive():
                actor.kill()
        except Exception:  # noqa: BLE001
            pass
    smm = getattr(infrastructure, "_smm", None)
    if smm is not None:
        try:
            smm.shutdown()
        except Exception:  # noqa: BLE001
            pass
    if runtime is not None:
        runtime._is_started = False
        runtime._is_running = False
    stop_children()


def _failure(anchor, exc: Exception) -> str:
    """The last line of the first process model's traceback, after releasing the runtime.

    When a process model raises, Lava's runtime joins every actor and raises RuntimeError but
    stays "started": ``stop()`` would then wait forever for replies from dead processes. So we
    mark it stopped and let ``stop()`` free only the shared memory (private Lava 0.10 state).
    """
    runtime = getattr(anchor, "runtime", None)
    if runtime is None:
        return f"{type(exc).__name__}: {exc}"
    actors = getattr(getattr(runtime, "_messaging_infrastructure", None), "actors", [])
    causes = [a.exception[1] for a in actors if a.exception]
    runtime._is_started = False
    runtime._is_running = False
    try:
        runtime.stop()
    except Exception:  # noqa: BLE001 - best effort cleanup; the original error matters
        pass
    if causes:
        return causes[0].strip().splitlines()[-1]
    return f"{type(exc).__name__}: {exc}"


def _neuron_process(name: str, op: LoihiNeuron, shape, bias_mant, bias_exp, record: str, steps: int,
                    sample_steps: int | None = None, sample_bias=None):
    """The population of ``op``, recording each step into the file ``record`` (``steps`` steps),
    a new sample every ``sample_steps`` steps (``sample_bias``: its (mant, exp) per sample)."""
    kw = dict(
        shape=lava_shape(shape),
        u=0,
        v=to_lava(op.v_init),
        du=int(op.du),
        dv=int(op.dv),
        bias_mant=to_lava(bias_mant),
        bias_exp=to_lava(bias_exp),
        name=name,
        record=record,
        steps=int(steps),
        sample_steps=None if sample_steps is None else int(sample_steps),
        sample_bias=sample_bias,
    )
    if op.reset == Reset.ZERO:
        return RecordedLIF(vth=int(op.vth.flat[0]), **kw)
    if op.reset == Reset.SIGNED:
        return SignedLIF(vth=to_lava(op.vth), **kw)
    return SubtractiveLIF(vth=to_lava(op.vth), **kw)


def message_bits(graph: Graph, synapse: str) -> int:
    """``num_message_bits`` of the Lava Dense/Conv of ``synapse``: ``SIGNED_MESSAGE_BITS`` where
    it reads a Reset.SIGNED population's spikes (graded −1 / 0 / +1), else 0 (binary spikes)."""
    src = spike_source(graph, synapse)
    return SIGNED_MESSAGE_BITS if src is not None and graph.op(src).reset == Reset.SIGNED else 0


def build_network(graph: Graph, bias: dict[str, tuple[np.ndarray, np.ndarray]], steps: int,
                  workdir: str, samples: list[dict] = (), sample_steps: int | None = None) -> LavaNetwork:
    """Lava processes. ``bias`` maps each BiasEncoder to (mant, exp) for the first sample, in
    the IR's shape; ``samples``: the same for each later sample, which runs after the one before
    it from a fresh state, every ``sample_steps`` steps (processes.Samples); ``steps``: how many
    steps the record files hold (all samples'); they go to the existing folder ``workdir``. The
    graph must pass ``check_graph``."""
    samples = list(samples)
    if samples and not sample_steps:
        raise BackendError("lava backend: several samples need sample_steps")
    fastconv.install()  # Lava's Conv model, its convolution vectorized; its processes inherit it
    net = LavaNetwork(graph, str(workdir), int(steps))
    for name, op in graph.nodes():
        if not isinstance(op, LoihiNeuron):
            continue
        mant, exp = op.bias_mant, op.bias_exp
        per_sample = None
        shape = lava_shape(graph.shape(name))
        for src in graph.inputs(name):
            if isinstance(graph.op(src), BiasEncoder):
                mant, exp = bias[src]
                if samples:
                    per_sample = tuple(
                        np.stack([np.broadcast_to(to_lava(np.asarray(b[src][i])), shape) for b in [bias, *samples]])
                        for i in (0, 1))
        path = os.path.join(workdir, f"{len(net.records)}.rec")
        np.memmap(path, dtype=np.int64, mode="w+", shape=(2, steps, *shape)).flush()
        proc = _neuron_process(name, op, graph.shape(name), mant, exp, path, steps,
                               sample_steps=sample_steps, sample_bias=per_sample)
        net.populations[name] = proc
        for src in graph.inputs(name):
            if isinstance(graph.op(src), (FixedDense, FixedConv2d)):
                synapse = _synapse(graph, src, net)
                synapse.a_out.connect(proc.a_in)
        net.records[name] = path
    net.components = _components(graph)
    return net


def _synapse(graph: Graph, name: str, net: LavaNetwork):
    """The Lava connection process of a FixedDense/FixedConv2d, created once, wired to its source."""
    if name in net.synapses:
        return net.synapses[name]
    op = graph.op(name)
    if isinstance(op, FixedDense):
        src = spike_source(graph, name)
        weight = dense_columns_to_lava(np.asarray(op.weight, dtype=np.int64), graph.shape(src))
        proc = Dense(
            weights=weight,
            weight_exp=int(op.weight_exp),
            num_weight_bits=LAVA_WEIGHT_BITS,
            sign_mode=SignMode.MIXED,
            num_message_bits=message_bits(graph, name),
            name=name,
        )
        port = net.populations[src].s_out
        (port.flatten() if len(lava_shape(graph.shape(src))) != 1 else port).connect(proc.s_in)
    else:
        (src,) = graph.inputs(name)
        # Lava's Conv has no exponent: the effective weights W << weight_exp (FixedConv2d)
        weight, groups = lava_groups(np.asarray(op.weight, dtype=np.int64) << int(op.weight_exp), int(op.groups))
        proc = Conv(
            weight=conv_kernel_to_lava(weight),
            input_shape=lava_shape(graph.shape(src)),
            padding=_xy(op.padding),
            stride=_xy(op.stride),
            dilation=_xy(op.dilation),
            groups=groups,
            num_message_bits=message_bits(graph, name),
            name=name,
        )
        net.populations[src].s_out.connect(proc.s_in)
    net.synapses[name] = proc
    return proc


def _components(graph: Graph) -> list[list[str]]:
    """LoihiNeurons grouped by the Lava networks they form (connected through synapses);
    Lava runs only the processes connected to the one ``run`` is called on."""
    spiking = nx.Graph()
    for name, op in graph.nodes():
        if isinstance(op, LoihiNeuron):
            spiking.add_node(name)
        elif isinstance(op, (FixedDense, FixedConv2d)):
            src = spike_source(graph, name)
            for user in graph.users(name):
                spiking.add_edge(src, user)
    order = {n: i for i, n in enumerate(graph.order())}
    parts = [sorted(c, key=order.__getitem__) for c in nx.connected_components(spiking)]
    return sorted(parts, key=lambda c: order[c[0]])


# ---------------------------------------------------------------------------------------------
# The backend's entry point.


def return_free_memory() -> None:
    """Hand the heap's free pages back to the OS before Lava forks a process per population.

    Forking and exiting cost time in proportion to the parent's resident memory, once per
    process (351 on a 32×32 MobileNetV2). After conversion, calibration and the reference runs a
    compile holds ~0.85 GB there, ~0.36 GB of it pages glibc keeps for reuse; ``malloc_trim(0)``
    returns them (0.85 → 0.48 GB). That network's compile-time Lava phase, five runs each, one
    sample: 26.1-38.8 s without, median 32.0; 23.7-27.4 s with, median 26.1. A no-op where the C
    library is not glibc."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_lava(graph: Graph, x: np.ndarray, steps: int, encoded: dict | None = None,
             *, progress: bool = False, timings: list[float] | None = None) -> Trace:
    """Simulate ``graph`` on Lava for each sample of ``x`` (N, *input shape), ``steps`` steps.

    ``encoded`` is ``snncompile.sim.ann.encode_inputs(graph, x)`` (computed when omitted).
    One network is built and compiled, and runs the samples one after another, each from a fresh
    network's state with its own input bias (processes.Samples: u = 0, v = v_init, no synaptic
    input at a sample's first step, where the synapses' one-step buffers still hold the last
    sample's spikes), so no state carries over; the populations record all samples' steps.
    Returns a Trace with
    spikes (int8) and v (int64) of shape (N, steps, *IR shape) per LoihiNeuron, and per Output
    the fed neuron's v after the last step, (N, *shape). ``progress`` shows a bar per sample;
    ``timings``, when given, receives the wall time of each sample (build, compile, run, read).
    """
    check_graph(graph)
    if steps < 1:
        raise BackendError(f"lava backend: steps must be >= 1, got {steps}")
    x = np.asarray(x, dtype=np.float64)
    if encoded is None:
        from snncompile.sim.ann import encode_inputs

        encoded = encode_inputs(graph, x)
    n = x.shape[0]
    missing = [e for e in graph.find(BiasEncoder) if e not in encoded]
    if missing:
        raise BackendError(f"lava backend: no encoded input for BiasEncoder node(s) {missing}")
    neurons = graph.find(LoihiNeuron)
    spikes = {k: np.zeros((n, steps, *graph.shape(k)), dtype=np.int8) for k in neurons}
    volts = {k: np.zeros((n, steps, *graph.shape(k)), dtype=np.int64) for k in neurons}
    # One network, compiled once, runs every sample (its state reset between them): building and
    # compiling a Lava network costs more than running a small one
    biases = [{enc: (np.asarray(m[i]), np.asarray(e[i])) for enc, (m, e, *_) in encoded.items()} for i in range(n)]
    ticker = report_progress.track(range(n), "Lava", progress, unit="samples")
    next(ticker)  # the phase opens (sample 0 is next)
    clock = [time.perf_counter()]

    def done():  # a sample ran: the bar moves on, its time (the first one's includes the build)
        if timings is not None:
            now = time.perf_counter()
            timings.append(now - clock[0])
            clock[0] = now
        next(ticker, None)

    try:
        with tempfile.TemporaryDirectory(prefix="snncompile-lava-") as workdir:
            return_free_memory()
            net = build_network(graph, biases[0], steps * n, workdir, samples=biases[1:], sample_steps=steps)
            s, v = net.run(steps, count=n, done=done)
    finally:
        ticker.close()
    for k in neurons:
        spikes[k][:] = s[k].reshape((n, steps) + s[k].shape[1:])
        volts[k][:] = v[k].reshape((n, steps) + v[k].shape[1:])
    outputs = {}
    for out in graph.output_names():
        (src,) = graph.inputs(out)
        outputs[out] = volts[src][:, -1].copy()
    return Trace(steps=steps, spikes=spikes, v=volts, outputs=outputs)
