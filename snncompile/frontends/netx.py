"""netx frontend: read a lava-dl netx ``.net`` file (HDF5) into the float IR.

The layout is the one lava-dl 0.6.0's ``netx.hdf5.Network`` loads and its slayer blocks'
``export_hdf5`` write (and ``snncompile.backends.netx`` writes): ``/layer/<i>`` groups numbered
in chain order, each with ``type`` ('input', 'flatten', 'dense', 'conv'), ``shape`` ((C, H, W) or
(N,)), ``weight`` (dense (out, in); conv torch's (out, in/groups, kH, kW)), optional ``bias``,
conv ``stride``/``padding``/``dilation``/``groups``, and ``neuron/`` with ``type`` 'CUBA' (or
'LOIHI'), ``iDecay``, ``vDecay``, ``vThMant``. The mapping follows what netx builds (read from
netx/hdf5.py, the same facts as the backend's docstring):

    netx (integers, Lava's fixed_pt LIF)             IR (float, v in units of 1/64 of Lava's v)
    CUBA du = iDecay − 1, dv = vDecay, vth = vThMant   IF(threshold = vth), reset to zero, when
                                                      iDecay = 4096 and vDecay = 0; else
                                                      LIF(alpha = (4096 − iDecay)/4096,
                                                          beta = (4096 − vDecay)/4096)
    the last layer with vThMant at Loihi's maximum    Integrator (a readout that never fires)
    'input' layer (a neuron population whose input    Input of the layer's shape, an identity
     is set through its bias by the host)              Dense (1x1 Conv2d for (C, H, W)) on the
                                                      host, its neurons: one sample is that
                                                      bias (bias_mant << bias_exp) / 64, a
                                                      constant current every step
    'dense' weight W                                  Dense with the weights Lava's Dense uses
                                                      after netx's re-encoding (optimize_weight_
                                                      bits, sign-mode clip and truncation),
                                                      times 2**weight_exp; bias b per neuron
                                                      (netx fixes bias_exp = 6: b·64/64 = b)
    'conv' weight, stride, padding, dilation, groups  Conv2d, torch's layout as in the file;
                                                      bias per channel (C,) or constant per
                                                      channel in netx's (X, Y, C) order
    'flatten'                                         Flatten (C-order over (C, H, W))

Up to the rounding of Lava's decays (LIF) and its clipping of v, the IR graph computes what netx
computes, so compiling it again gives a netx/Lava network of the same behaviour; an IF network
with integer weights is exact (tests/backends/test_netx.py runs our own model.net round trip).
Refused in one line naming the layer: neurons other than CUBA/LOIHI (SDNN, RF), graded spikes,
'dense_rec', 'pool', 'average', 'concat', 'convT', 'unpool' (netx raises NotImplementedError
for most of them), synaptic delays, complex weights, an input layer without neurons (spike
input through netx's ``inp`` port: event inputs are not supported), non-integer weights.

Before any weight is read, the file is walked as data (the checks of ``frontends/nir_file.py``):
no external storage or links, no virtual datasets, real numbers only, sizes within budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from snncompile.errors import ModelLoadError, Problem, UnsupportedModelError
from snncompile.frontends import nir_file
from snncompile.frontends.names import sanitize
from snncompile.ir import ops as ir
from snncompile.ir.graph import Graph, GraphBuilder

DECAY_UNITY = 4096
REFUSED_TYPES = ("dense_rec", "pool", "average", "concat", "convT", "unpool")
NEURON_KEYS = frozenset({"type", "iDecay", "vDecay", "vThMant", "refDelay", "gradedSpike", "messageBits"})


def is_netx(path: str | Path) -> bool:
    """True when the HDF5 file at ``path`` has netx's ``/layer`` group and no NIR ``/node``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "layer" in f and "node" not in f
    except Exception:  # not for us to judge: the NIR loader's checks say what is wrong
        return False


class NetxFileError(ModelLoadError):
    """A .net file that is not plain data or not netx's layout (exit 2)."""


class _Walk(nir_file._Walk):
    """nir_file's header walk with netx's top group and its few strings."""

    def refuse(self, where: str, why: str):
        raise NetxFileError(f"{self.path}: {where or '/'}: {why}; a netx file must be plain data "
                            "(write it with netx's export_hdf5 or snncompile --target netx)")

    def run(self, f) -> None:
        import h5py

        if "layer" not in f or not isinstance(f.get("layer", getlink=True), h5py.HardLink):
            self.refuse("/layer", "missing, or not a plain group")
        self.group(f, "", 0)

    def string(self, ds, where: str, name: str, in_metadata: bool) -> None:
        if name != "type":
            self.refuse(where, "holds text where netx writes numbers")
        if (ds.shape or ()) not in ((), (1,)):
            self.refuse(where, f"an array of text (shape {ds.shape}) where netx writes one word")
        for value in np.ravel(np.asarray(ds[()], dtype=object)):
            if len(value) > 32:
                self.refuse(where, f"a type of {len(value)} characters")


def _word(ds) -> str:
    value = np.ravel(np.asarray(ds[()], dtype=object))[0]
    return (value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)).strip()


def _ints(ds, what: str, where: str) -> np.ndarray:
    arr = np.asarray(ds[()], dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise _Refused(where, f"{what} must hold integers (netx's fixed-point values)")
    return arr.astype(np.int64)


class _Refused(Exception):
    def __init__(self, layer: str, why: str):
        super().__init__(why)
        self.layer, self.why = layer, why


def load_model(path: str | Path) -> Graph:
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            _Walk(path).run(f)
            return _lower(f, path)
    except (NetxFileError, UnsupportedModelError):
        raise
    except _Refused as exc:
        raise UnsupportedModelError(path.name, [Problem(exc.layer, "netx layer", exc.why)]) from None
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError... on damaged files
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
        raise NetxFileError(f"{path}: not a readable netx file ({type(exc).__name__}: {text[:200]})") from None


def _neuron(group, where: str, last: bool):
    from snncompile.targets.loihi2 import LOIHI2

    if "neuron" not in group:
        raise _Refused(where, "a layer without neurons")
    cfg = group["neuron"]
    kind = _word(cfg["type"]) if "type" in cfg else "?"
    if kind not in ("CUBA", "LOIHI"):
        raise _Refused(where, f"neuron type '{kind}': only CUBA (Loihi's LIF) has an IR equivalent")
    if "gradedSpike" in cfg and bool(np.asarray(cfg["gradedSpike"][()]).ravel()[0]):
        raise _Refused(where, "graded spikes: the IR's spikes are 0/1")
    if "messageBits" in cfg and int(np.asarray(cfg["messageBits"][()]).ravel()[0]) != 0:
        raise _Refused(where, "messageBits > 0 (graded spikes): the IR's spikes are 0/1")
    i_decay = int(_ints(cfg["iDecay"], "iDecay", where).ravel()[0]) if "iDecay" in cfg else DECAY_UNITY
    v_decay = int(_ints(cfg["vDecay"], "vDecay", where).ravel()[0]) if "vDecay" in cfg else 0
    vth = _ints(cfg["vThMant"], "vThMant", where)
    if vth.size != 1:
        vth = np.unique(vth)
        if vth.size != 1:
            raise _Refused(where, "vThMant differs within the layer")
    vth = int(vth.ravel()[0])
    if not (0 < i_decay <= DECAY_UNITY and 0 <= v_decay < DECAY_UNITY):
        raise _Refused(where, f"iDecay {i_decay} / vDecay {v_decay} outside Loihi's 12-bit decays")
    if last and vth >= LOIHI2.vth.max and i_decay == DECAY_UNITY and v_decay == 0:
        return ir.Integrator()
    if i_decay == DECAY_UNITY and v_decay == 0:
        return ir.IF(threshold=float(vth), reset=ir.Reset.ZERO)
    return ir.LIF(threshold=float(vth), alpha=(DECAY_UNITY - i_decay) / DECAY_UNITY,
                  beta=(DECAY_UNITY - v_decay) / DECAY_UNITY, reset=ir.Reset.ZERO)


def _bias(group, where: str, channels: int | None):
    if "bias" not in group:
        return None
    bias = _ints(group["bias"], "bias", where).astype(np.float64)
    if channels is not None and bias.ndim == 3:  # netx's per-neuron conv bias, (X, Y, C)
        per_channel = bias.reshape(-1, bias.shape[-1])
        if np.any(per_channel != per_channel[:1]):
            raise _Refused(where, "a per-neuron conv bias: the IR's Conv2d bias is per channel")
        bias = per_channel[0]
    return bias.ravel()


def _lower(f, path: Path) -> Graph:
    from snncompile.backends.netx import _Refused as WeightRefused
    from snncompile.backends.netx import netx_dense_weights

    layers = f["layer"]
    keys = sorted(layers, key=lambda k: int(k) if k.isdigit() else -1)
    if not keys or any(not k.isdigit() for k in keys):
        raise NetxFileError(f"{path}: /layer must hold groups numbered 0, 1, ...")
    builder = GraphBuilder({"source": path.name, "frontend": "netx",
                            "netx": "v in units of 1/64 of Lava's v; input = the first layer's bias_mant << bias_exp / 64"})
    prev = None
    spiking = [k for k in keys if "neuron" in layers[k]]
    for k in keys:
        group, where = layers[k], f"layer/{k}"
        kind = _word(group["type"]) if "type" in group else "?"
        if kind in REFUSED_TYPES:
            raise _Refused(where, f"netx layer type '{kind}' has no IR equivalent here")
        if "delay" in group:
            raise _Refused(where, "synaptic delays: the IR's synapses delay by one step only")
        node = sanitize(str(group.attrs.get("node", f"layer{k}")))
        name = builder.unique_name(node)
        shape = tuple(int(s) for s in np.asarray(group["shape"][()]).ravel()) if "shape" in group else None
        if kind == "input":
            if prev is not None:
                raise _Refused(where, "a second input layer")
            if "neuron" not in group:
                raise _Refused(where, "an input layer without neurons (spikes through netx's inp port): "
                                      "event inputs are not supported")
            inp = builder.add("input", ir.Input(shape=shape), [])
            # the host-side layer the compiler turns into the input bias: an identity
            if len(shape) == 3:
                host = ir.Conv2d(weight=np.eye(shape[0]).reshape(shape[0], shape[0], 1, 1))
            else:
                host = ir.Dense(weight=np.eye(int(np.prod(shape))))
            host_node = builder.add(builder.unique_name(f"{name}_host"), host, [inp])
            prev = builder.add(name, _neuron(group, where, k == spiking[-1]), [host_node])
        elif prev is None:
            raise _Refused(where, "the first layer must be netx's 'input' layer")
        elif kind == "flatten":
            prev = builder.add(name, ir.Flatten(), [prev])
        elif kind in ("dense", "conv"):
            if "weight" not in group or not hasattr(group["weight"], "shape"):
                raise _Refused(where, "weights missing or complex (weight/real, weight/imag)")
            weight = _ints(group["weight"], "weight", where)
            if kind == "dense":
                try:
                    used, exp = netx_dense_weights(weight.reshape(weight.shape[0], -1))
                except WeightRefused as why:
                    raise _Refused(where, str(why)) from None
                op = ir.Dense(weight=used * 2.0 ** exp, bias=_bias(group, where, None))
            else:
                def pair(key, default):
                    return tuple(int(v) for v in np.broadcast_to(np.asarray(group[key][()]).ravel(), 2)) \
                        if key in group else default
                op = ir.Conv2d(weight=weight.astype(np.float64), bias=_bias(group, where, weight.shape[0]),
                               stride=pair("stride", (1, 1)), padding=pair("padding", (0, 0)),
                               dilation=pair("dilation", (1, 1)),
                               groups=int(np.asarray(group["groups"][()]).ravel()[0]) if "groups" in group else 1)
            syn = builder.add(builder.unique_name(f"{name}_synapse"), op, [prev])
            prev = builder.add(name, _neuron(group, where, k == spiking[-1]), [syn])
        else:
            raise _Refused(where, f"unknown netx layer type '{kind}'")
    if prev is None:
        raise NetxFileError(f"{path}: no layers")
    builder.add("output", ir.Output(), [prev])
    return builder.build()
