"""lava-dl netx export: write a fixed-point IR graph as a netx ``.net`` file (HDF5, via h5py).

The file is what ``lava.lib.dl.netx.hdf5.Network(net_config=path)`` of lava-dl 0.6.0 loads; every
statement below was read from its source (``netx/hdf5.py``, ``netx/blocks/process.py``,
``netx/utils.py``) and Lava 0.10's process models, and the round trip is pinned bit for bit in
tests/backends/test_netx.py (netx == our Lava backend == the reference simulator).

Layout written (one group per netx layer, numbered from 0 in chain order)::

    /                 attrs: producer, netx_version, input_encoder, input_node, outputs (JSON)
    /layer/0          type 'input';  shape = IR shape (C, H, W) or (N,);  neuron/...
    /layer/i          type 'flatten'; shape     (before a dense layer reading a (C, H, W) layer)
    /layer/i          type 'dense';  shape (N,); weight (N, in) int, columns in the IR's C-order
                      (C, H, W) flattening; [bias (N,)]; neuron/...
    /layer/i          type 'conv';   shape (C, H, W); weight (out, in/groups, kH, kW) int, torch's
                      layout; stride, padding, dilation as (H, W) pairs; groups; [bias]; neuron/...
    neuron/           type 'CUBA', iDecay = du + 1, vDecay = dv, vThMant = vth, refDelay 1,
                      gradedSpike False
    every layer group has attr ``node``: the IR node of its neuron population

netx semantics (measured and read) and how the mapping keeps them exact:

- Neurons: a CUBA neuron becomes Lava's ``LIF`` (fixed_pt: PyLifModelBitAcc) with
  ``vth = vThMant``, ``du = iDecay - 1``, ``dv = vDecay``, ``bias_mant = bias``, and
  ``bias_exp = 6`` for every layer: the same integer dynamics as our LoihiNeuron with reset to
  zero, so thresholds need no scaling (both compare v with vth << 6). netx ignores ``refDelay``
  and ``gradedSpike``; it has one threshold per layer, no initial potential and no reset by
  subtraction (LIF sets v = 0 after a spike).
- Bias: because bias_exp is fixed at 6, a static bias is expressible only when ``mant << exp``
  is a multiple of 64 whose quotient fits the 13-bit mantissa; it is written divided by 64.
- Input: netx's ``input`` block is a neuron population with no synapse whose input, per its own
  comment, "must be handled through neuron's bias": its ``inp`` port is left unconnected and the
  loader drops any 'bias' of an input layer (it lands in an unused ``transform`` dict). That is
  exactly our first layer, a neuron population driven by a BiasEncoder's per-sample bias, so it is
  written as layer 0 without a bias. The host side (the graph from the Input to the BiasEncoder,
  e.g. the first float Linear/Conv) is not part of a netx network and is not in the file (the root
  attrs name the encoder): per sample, compute ``input_bias(graph, x)`` and set
  ``network.layers[0].neuron.bias_mant`` and ``.bias_exp`` (Var ``init`` before the run) — our
  Lava backend feeds the same population the same way, which is what makes the runs identical.
- Synapses and delay: a 'dense' layer is Lava's ``Dense`` and a 'conv' layer Lava's ``Conv``, each
  followed by its LIF, exactly the processes of our Lava backend; so netx adds no delay of its own:
  one step per synaptic layer, as in the IR (measured shift: 0 steps). The readout (a LoihiNeuron
  with vth at its maximum) is an ordinary CUBA layer; its v is read from
  ``network.layers[-1].neuron.v`` (netx's ``out`` port carries spikes only).
- Dense weights: netx re-encodes the file's weights with ``optimize_weight_bits`` (its own weight
  exponent), and Lava's Dense then clips and truncates them by a sign mode it infers from the
  weights (netx does not pass one). For a mixed-sign matrix this keeps any integer in
  [-256, 254] exactly, but all-zero matrices crash the loader and one-signed matrices can lose
  bits. So the writer replays that arithmetic (``netx_dense_weights``) and refuses a layer whose
  effective weights would differ. netx's effective weights are integers: our ``weight_exp`` is
  folded into them (``W << exp``), and a negative exponent is expressible only when it divides W.
- Conv: netx flips the kernel (``[:, :, ::-1, ::-1]``) and permutes it to Lava's (out, kW, kH, in),
  reverses shape/stride/padding/dilation to (X, Y), passes no weight exponent (Lava's Conv
  ignores it anyway) and no weight processing: the file holds torch's layout unchanged. A conv
  bias is per channel (C,) or, per neuron, in Lava's (W, H, C) order (netx compares it with the
  layer's (X, Y, C) shape).
- Flatten: netx connects ``out.transpose([2, 1, 0]).flatten()`` of the (X, Y, C) layer to the next
  dense layer, i.e. the (C, H, W) C-order flattening: the IR's column order, written unchanged.

Not expressible (``BackendError`` naming the first such node in topological order): reset by
subtraction; signed spikes (``Reset.SIGNED``: −1 / 0 / +1 payloads, netx's are binary);
non-uniform thresholds; a non-zero initial potential; biases that are not multiples of 64 (or
exceed 13 bits after the division); a bias on the input layer; several inputs or fan-out
(skip connections, membrane-add, residual Add: netx builds a single chain, and its 'concat' and
'average' layers raise NotImplementedError); pooling or any float op on the spiking side ('pool'
raises NotImplementedError too); several Inputs/BiasEncoders; dense weights netx would alter; conv
parameters beyond Lava's Conv (int8 kernel/stride/padding, exact float32 sums, 24-bit output).
Load with the defaults ``reset_interval=None`` (else netx swaps in ``LIFReset``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import networkx as nx
import numpy as np

from snncompile.backends.fixed_graph import host_nodes, max_input, neuron_behind, spike_source
from snncompile.errors import BackendError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import (
    Add,
    AvgPool2d,
    BiasEncoder,
    FixedConv2d,
    FixedDense,
    Flatten,
    Input,
    LoihiNeuron,
    Output,
    Reset,
)

NETX_VERSION = "lava-dl 0.6.0"
NETX_BIAS_EXP = 6  # netx's get_neuron_params: 'bias_exp': 6 for every CUBA layer
BIAS_MANT_BITS = 13  # Lava LIF: bias_mant precision 13 (signed)
# Lava's Conv (the process netx uses too): int8 parameters, float32 sums, 24-bit wrapped output.
CONV_PARAM_MAX = 127
CONV_EXACT_SUM = 2**24
CONV_OUT_BITS = 24
# Lava's LIF holds a_in in int32 and shifts it by 6.
A_IN_LIMIT = 2**25
REF_DELAY = 1  # slayer's default; netx ignores it


@dataclass
class NetxLayer:
    """One netx layer group: its 'type', the IR node of its neurons, and its datasets."""

    type: str
    node: str
    data: dict[str, np.ndarray] = field(default_factory=dict)
    neuron: dict[str, object] | None = None


class _Refused(Exception):
    """Internal: the node being planned cannot be expressed; carries why."""


# ---------------------------------------------------------------------------------------------
# The arithmetic netx (lava-dl 0.6.0) and Lava 0.10's Dense apply to a file's dense weights.


def _optimize_weight_bits(weight: np.ndarray) -> tuple[np.ndarray, int, int]:
    """netx.utils.optimize_weight_bits, replayed: (weights, num_weight_bits, weight_exponent)."""
    weight = np.asarray(weight, dtype=np.int64)
    max_w, min_w = weight.max(), weight.min()
    if (max_w > 254 and min_w < 0) or (min_w < -256 and max_w > 0):
        weight = np.clip(weight, -256, 254)
        max_w, min_w = weight.max(), weight.min()
    if max_w < 0:
        scale, signed = -256 / min_w, 0
    elif min_w >= 0:
        if max_w == 0:
            raise _Refused("an all-zero weight matrix makes netx's optimize_weight_bits fail (255/0)")
        scale, signed = 255 / max_w, 0
    else:
        with np.errstate(divide="ignore"):
            scale = min(127 / max_w if max_w else np.inf, -128 / min_w)
        signed = 1
    scale_bits = int(np.floor(np.log2(scale))) + signed
    if scale_bits < 0:
        raise _Refused(f"weights in [{min_w}, {max_w}] make netx shift them by {scale_bits} bits")
    n = 8
    while n > 0 and np.any(weight % (2**n)):
        n -= 1
    n -= signed
    return weight << scale_bits, 8 - scale_bits - n, -scale_bits


def _lava_dense_weights(weight: np.ndarray, num_weight_bits: int) -> np.ndarray:
    """Lava's PyDenseModelBitAcc without a given sign mode: determine_sign_mode, clip_weights
    (8 bits), truncate_weights (num_weight_bits)."""
    w = np.asarray(weight, dtype=np.int64)
    mixed = inhibitory = False
    if w.min() >= 0:
        pass
    elif w.max() <= 0:
        inhibitory = True
    else:
        mixed = True
    if inhibitory:
        w = -w
    w = np.clip(w, -256 if mixed else 0, 255)
    truncate = 8 - num_weight_bits + int(mixed)
    if truncate < 0:
        raise _Refused(f"netx would truncate weights by {truncate} bits")
    w = (w >> truncate) << truncate
    return -w if inhibitory else w


def netx_dense_weights(weight: np.ndarray) -> tuple[np.ndarray, int]:
    """(weights, weight_exp) that Lava's Dense uses when netx loads file weights ``weight``.

    The synapse then computes ``(weights · s) << weight_exp`` (>> when negative).
    """
    shifted, num_weight_bits, weight_exp = _optimize_weight_bits(weight)
    return _lava_dense_weights(shifted, num_weight_bits), weight_exp


def _same_scaled(a: np.ndarray, a_exp: int, b: np.ndarray, b_exp: int) -> bool:
    """a · 2**a_exp == b · 2**b_exp elementwise, in integers. Equal effective weights give equal
    synaptic input for every spike vector, whatever the shifts (floor(A·s / 2**k) only depends on
    A / 2**k when A is a multiple of the coarser scale)."""
    low = min(a_exp, b_exp)
    return bool(np.array_equal(np.asarray(a, np.int64) << (a_exp - low), np.asarray(b, np.int64) << (b_exp - low)))


# ---------------------------------------------------------------------------------------------
# Planning: the chain of netx layers, or the first node that cannot be expressed.


def _synapse_users(graph: Graph, name: str) -> list[str]:
    """The synapses reading a neuron's spikes (through Flattens)."""
    found, stack = [], list(graph.users(name))
    while stack:
        node = stack.pop(0)
        if isinstance(graph.op(node), Flatten):
            stack.extend(graph.users(node))
        elif not isinstance(graph.op(node), Output):
            found.append(node)
    return found


def _neuron_dict(op: LoihiNeuron) -> dict[str, object]:
    return {
        "type": "CUBA",
        "iDecay": int(op.du) + 1,  # netx: du = iDecay - 1
        "vDecay": int(op.dv),
        "vThMant": int(op.vth.flat[0]),
        "refDelay": REF_DELAY,
        "gradedSpike": False,
    }


def _bias(op: LoihiNeuron) -> np.ndarray | None:
    """The static bias in netx units (effective bias / 64), or None when all zero."""
    eff = np.left_shift(np.asarray(op.bias_mant, np.int64), np.asarray(op.bias_exp, np.int64))
    if not eff.any():
        return None
    unit = 1 << NETX_BIAS_EXP
    if np.any(eff % unit):
        raise _Refused(f"static bias not a multiple of {unit}: netx fixes bias_exp = {NETX_BIAS_EXP}")
    bias = eff // unit
    lim = 2 ** (BIAS_MANT_BITS - 1)
    if bias.min() < -lim or bias.max() >= lim:
        raise _Refused(f"static bias / {unit} outside the {BIAS_MANT_BITS}-bit mantissa netx writes it to")
    return bias


def _check_neuron(graph: Graph, name: str, op: LoihiNeuron, encoders: list[str]) -> None:
    inputs = graph.inputs(name)
    synaptic = [i for i in inputs if isinstance(graph.op(i), (FixedDense, FixedConv2d))]
    if len(inputs) > 1:
        kinds = "synaptic inputs (membrane-add)" if len(synaptic) == len(inputs) else "inputs"
        raise _Refused(f"{len(inputs)} {kinds} {inputs}: a netx layer has exactly one")
    if op.reset == Reset.SIGNED:
        raise _Refused("signed spikes (reset 'signed'): netx's CUBA neuron (Lava LIF) sends binary "
                       "spikes and resets v to 0")
    if op.reset != Reset.ZERO:
        raise _Refused("reset by subtraction: netx's CUBA neuron (Lava LIF) resets v to 0")
    if op.vth.size and np.any(op.vth != op.vth.flat[0]):
        raise _Refused("thresholds differ within the layer: netx's vThMant is one value per layer")
    if np.any(op.v_init):
        raise _Refused("non-zero initial potential: netx's neurons start at v = 0")
    if len(graph.shape(name)) not in (1, 3):
        raise _Refused(f"neuron shape {graph.shape(name)}: netx layers are (N,) or (C, H, W)")
    fan_in = sum(max_input(graph.op(s)) for s in synaptic)
    if fan_in >= A_IN_LIMIT:
        raise _Refused(f"synaptic input up to {fan_in} >= 2**25 overflows Lava's int32 a_in << 6")
    if not synaptic:
        if inputs and inputs[0] not in encoders:
            raise _Refused(f"input '{inputs[0]}' is not a synapse or a BiasEncoder")
        if np.any(op.bias_mant):
            raise _Refused("static bias on netx's input layer, whose loader drops it")
    else:
        _bias(op)
    users = _synapse_users(graph, name)
    if len(users) > 1:
        raise _Refused(_fan_out_hint(graph, users))


def _fan_out_hint(graph: Graph, users: list[str]) -> str:
    reach = [nx.descendants(graph.nx, u) | {u} for u in users]
    meet = set.intersection(*reach)
    where = ""
    if meet:
        first = min(meet, key=graph.order().index)
        where = f", which meet again at '{first}' (membrane-add/residual)"
    return (f"its spikes feed {len(users)} synapses {users}{where}: a skip connection; netx builds "
            "one chain of layers (its 'concat'/'average' layers raise NotImplementedError)")


def _dense_file_weight(op: FixedDense) -> np.ndarray:
    """The file's integer weights whose netx load gives our synapse exactly."""
    w = np.asarray(op.weight, dtype=np.int64)
    e = int(op.weight_exp)
    if e < 0 and np.any(w % (1 << -e)):
        raise _Refused(f"weight_exp {e} with weights not divisible by 2**{-e}: netx's effective "
                       "weights are integers (it derives its own exponent from the file)")
    file_w = w << e if e >= 0 else w >> -e
    used, used_exp = netx_dense_weights(file_w)
    if not _same_scaled(used, used_exp, w, e):
        raise _Refused("netx's weight re-encoding (optimize_weight_bits, then Lava's sign-mode clip "
                       "and truncation) would change these weights")
    return file_w


def _check_synapse(graph: Graph, name: str, op) -> None:
    src = spike_source(graph, name)
    if src is None:
        raise _Refused("must read a LoihiNeuron's spikes (optionally through Flatten)")
    users = graph.users(name)
    if len(users) != 1:
        raise _Refused(f"feeds {len(users)} nodes {users}: a netx synapse feeds one layer")
    if isinstance(op, FixedDense):
        if op.weight.shape[1] != math.prod(graph.shape(src)):
            raise _Refused(f"weight has {op.weight.shape[1]} columns for {graph.shape(src)} neurons")
        _dense_file_weight(op)
        return
    if len(graph.shape(src)) != 3 or _through_flatten(graph, name):
        raise _Refused("a conv layer must read a (C, H, W) layer directly")
    if op.weight_exp:
        raise _Refused(f"weight_exp {op.weight_exp}: this writer stores a conv's 8-bit weights without an "
                       "exponent (compile with --target netx, whose quantization uses none)")
    ints = [*op.weight.shape[2:], *op.stride, *op.padding, *op.dilation, op.groups]
    if max(ints) > CONV_PARAM_MAX:
        raise _Refused(f"Lava's Conv holds kernel, stride, padding, dilation, groups in int8 (<= {CONV_PARAM_MAX})")
    if max_input(op) >= CONV_EXACT_SUM:
        raise _Refused("a kernel's |weights| sum to >= 2**24: Lava's float32 conv is inexact")
    fmt = op.output_format
    if fmt is None or fmt.bits != CONV_OUT_BITS or not fmt.signed:
        raise _Refused(f"Lava's Conv wraps its output to signed {CONV_OUT_BITS} bits, not {fmt}")


def _through_flatten(graph: Graph, name: str) -> bool:
    (src,) = graph.inputs(name)
    return isinstance(graph.op(src), Flatten)


def _check(graph: Graph) -> None:
    """Raise BackendError for the first node (topological order) netx cannot express."""
    host = host_nodes(graph)
    inputs = graph.input_names()
    encoders = graph.find(BiasEncoder)
    starts = [n for n in graph.find(LoihiNeuron)
              if not any(isinstance(graph.op(i), (FixedDense, FixedConv2d)) for i in graph.inputs(n))]
    for name, op in graph.nodes():
        try:
            if isinstance(op, Input):
                if name != inputs[0]:
                    raise _Refused("a second Input: a netx network has one input layer")
            elif name in host:
                continue  # host-side encoding: not part of the netx network (see module docstring)
            elif isinstance(op, BiasEncoder):
                if name != encoders[0]:
                    raise _Refused("a second BiasEncoder: a netx network has one input layer")
                users = graph.users(name)
                if len(users) != 1:
                    raise _Refused(f"feeds {len(users)} layers {users}: netx's input layer is one population")
            elif isinstance(op, LoihiNeuron):
                if name in starts and name != starts[0]:
                    raise _Refused(f"a second layer without synaptic input (first: '{starts[0]}'): "
                                   "a netx network has one input layer")
                _check_neuron(graph, name, op, encoders)
            elif isinstance(op, (FixedDense, FixedConv2d)):
                _check_synapse(graph, name, op)
            elif isinstance(op, Flatten):
                if neuron_behind(graph, name) is None or any(
                        not isinstance(graph.op(u), (FixedDense, Flatten)) for u in graph.users(name)):
                    raise _Refused("a Flatten of spikes may only feed a dense layer")
            elif isinstance(op, Output):
                (src,) = graph.inputs(name)
                if not isinstance(graph.op(src), LoihiNeuron):
                    raise _Refused("an Output must read a neuron layer (its v after the last step)")
            elif isinstance(op, AvgPool2d):
                raise _Refused("pooling on spikes: lava-dl 0.6.0 netx's 'pool'/'average' layers raise "
                               "NotImplementedError (fuse it into the next layer's weights)")
            elif isinstance(op, Add):
                raise _Refused("residual Add of spikes: netx builds one chain of layers")
            else:
                raise _Refused("not a fixed-point op netx can express; run the Loihi 2 passes first")
        except _Refused as why:
            raise BackendError(f"netx: node '{name}' ({op.kind.value}): {why}") from None
    if not starts:
        raise BackendError("netx: the graph has no neuron layer to serve as netx's input layer")


def plan(graph: Graph) -> list[NetxLayer]:
    """The netx layers of ``graph`` in chain order; BackendError naming the first node that
    netx cannot express."""
    _check(graph)
    (first,) = [n for n in graph.find(LoihiNeuron)
                if not any(isinstance(graph.op(i), (FixedDense, FixedConv2d)) for i in graph.inputs(n))]
    layers = [NetxLayer("input", first, {"shape": np.array(graph.shape(first))},
                        _neuron_dict(graph.op(first)))]
    node = first
    while True:
        users = _synapse_users(graph, node)
        if not users:
            break
        (synapse,) = users
        (target,) = graph.users(synapse)
        layers += _synapse_layers(graph, node, synapse, target)
        node = target
    missing = set(graph.find(LoihiNeuron)) - {layer.node for layer in layers}
    if missing:  # unreachable for a graph that passed _check; kept as a guard
        raise BackendError(f"netx: neuron layers {sorted(missing)} are not on the chain from '{first}'")
    return layers


def _synapse_layers(graph: Graph, src: str, synapse: str, target: str) -> list[NetxLayer]:
    op = graph.op(synapse)
    neuron = graph.op(target)
    shape = graph.shape(target)
    bias = _bias(neuron)
    out: list[NetxLayer] = []
    if isinstance(op, FixedDense):
        if len(graph.shape(src)) == 3:
            out.append(NetxLayer("flatten", src, {"shape": np.array(graph.shape(src))}))
        data = {"shape": np.array(shape), "weight": _dense_file_weight(op)}
        if bias is not None:
            data["bias"] = bias
        out.append(NetxLayer("dense", target, data, _neuron_dict(neuron)))
        return out
    data = {
        "shape": np.array(shape),
        "weight": np.asarray(op.weight, dtype=np.int64),
        "stride": np.array(op.stride),
        "padding": np.array(op.padding),
        "dilation": np.array(op.dilation),
        "groups": np.int64(op.groups),
    }
    if bias is not None:
        per_channel = bias.reshape(bias.shape[0], -1)
        if np.all(per_channel == per_channel[:, :1]):
            data["bias"] = per_channel[:, 0]
        else:
            data["bias"] = bias.transpose(2, 1, 0)  # netx compares it with the (X, Y, C) shape
    out.append(NetxLayer("conv", target, data, _neuron_dict(neuron)))
    return out


# ---------------------------------------------------------------------------------------------
# Writing.


def _string(value: str) -> np.ndarray:
    return np.array([value.encode("ascii")], dtype="S10")  # slayer's ('type', (1,), 'S10')


def _write_layer(group: h5py.Group, layer: NetxLayer) -> None:
    group.attrs["node"] = layer.node
    group.create_dataset("type", data=_string(layer.type))
    for key, value in layer.data.items():
        group.create_dataset(key, data=value)
    if layer.neuron is not None:
        for key, value in layer.neuron.items():
            data = np.bytes_(value) if isinstance(value, str) else value
            group.create_dataset(f"neuron/{key}", data=data)


def write(graph: Graph, path: str | os.PathLike) -> Path:
    """Write ``graph`` as a lava-dl netx ``.net`` file at ``path``; returns the path.

    Raises BackendError (and writes nothing) when netx cannot express the graph. The file is
    written to a temporary name in the same folder and renamed, so a failure never leaves a
    half-written file, and an existing file is replaced only by a complete one.
    """
    from snncompile.runtime.version import __version__

    layers = plan(graph)
    path = Path(path)
    encoders = graph.find(BiasEncoder)
    outputs = {out: graph.inputs(out)[0] for out in graph.output_names()}
    layer_of = {layer.node: i for i, layer in enumerate(layers) if layer.type != "flatten"}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["producer"] = f"snncompile {__version__}"
            f.attrs["netx_version"] = NETX_VERSION
            f.attrs["input_node"] = layers[0].node
            f.attrs["input_encoder"] = encoders[0] if encoders else ""
            f.attrs["outputs"] = json.dumps({o: {"node": s, "layer": layer_of[s]} for o, s in outputs.items()})
            group = f.create_group("layer")
            for i, layer in enumerate(layers):
                _write_layer(group.create_group(str(i)), layer)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def input_bias(graph: Graph, x: np.ndarray, encoded: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample (bias_mant, bias_exp) of netx's input layer for inputs ``x`` (N, *input shape),
    in Lava's layout (N, X, Y, C) or (N, n): what to set on ``network.layers[0].neuron``.

    Zeros when the input layer has no BiasEncoder. ``encoded`` is
    ``snncompile.sim.ann.encode_inputs(graph, x)`` (computed when omitted).
    """
    first = plan(graph)[0].node
    shape = graph.shape(first)
    encoders = [i for i in graph.inputs(first) if isinstance(graph.op(i), BiasEncoder)]
    n = len(x)
    if not encoders:
        mant = exp = np.zeros((n, *shape), dtype=np.int64)
    else:
        if encoded is None:
            from snncompile.sim.ann import encode_inputs

            encoded = encode_inputs(graph, x)
        mant, exp, *_ = encoded[encoders[0]]
    if len(shape) == 3:
        mant, exp = np.asarray(mant).transpose(0, 3, 2, 1), np.asarray(exp).transpose(0, 3, 2, 1)
    return np.asarray(mant, dtype=np.int64), np.asarray(exp, dtype=np.int64)


SLAYER_STUBS = ("lava.lib.dl.slayer", "lava.lib.dl.slayer.neuron", "lava.lib.dl.slayer.neuron.rf")


def import_netx():
    """lava-dl 0.6.0's ``netx`` importable beside torch 2.13 (README "netx"): Lava's Python 3.11
    import fix first, then the three slayer modules netx/hdf5.py imports (one function, used by
    RF neurons only) as empty modules where slayer is not importable: slayer drags torchvision,
    whose compiled operators do not load here. The stubs stay (Lava's compiler re-executes
    hdf5.py while it searches process models); slayer itself is then unusable in this process."""
    import importlib
    import sys
    import types

    import snncompile.backends.lava  # noqa: F401 - Lava's 3.11 fix (shared DESIGN §6)

    try:
        importlib.import_module("lava.lib.dl.slayer.neuron.rf")
    except Exception:
        for name in SLAYER_STUBS:
            sys.modules[name] = types.ModuleType(name)
        sys.modules["lava.lib.dl.slayer.neuron.rf"].neuron_params = None
    return importlib.import_module("lava.lib.dl.netx")
