#!/usr/bin/env python3
"""Run a network compiled by snncompile on Loihi 2 (or Lava's bit-accurate CPU models) and record it.

This file is written next to network.json / network.npz by ``snncompile MODEL --target loihi2``
(or netx). It imports only the standard library, numpy and lava-nc (no snncompile, no torch),
so it can be copied to a machine with a Loihi 2 board and the lava-loihi extension:

    python run_on_loihi.py [--samples N] [--steps T] [--probe LAYER[,LAYER]|all]
                           [--out recording.npz] [--run-config auto|hw|sim] [--bundle DIR]

then, back on a machine with snncompile: ``snncompile verify OUTDIR --against recording.npz``.

It rebuilds the Lava process graph that snncompile's Lava backend builds (Lava's Dense, Conv and
LIF processes, and a LIF with reset by subtraction and one with signed spikes defined below; a
Dense or Conv reading signed spikes takes them as graded 2-bit payloads, num_message_bits=2),
one fresh network per sample,
feeds each sample's host-encoded input (in the bundle) as the first layer's bias, runs T steps
and records the output layer's spikes and membrane v (and those of ``--probe`` layers).

Run configuration (``--run-config auto``, the default): ``Loihi2HwCfg()`` when the lava-loihi
extension is installed, detected exactly as ``lava.utils.loihi.is_installed()`` does in lava-nc
0.10 (the module ``lava.utils.loihi2_profiler`` is importable); else
``Loihi2SimCfg(select_tag="fixed_pt")``, Lava's bit-accurate CPU models. On hardware the
subtractive-reset and signed neurons have only the CPU models below (no NeuroCore microcode ships
with Lava): Lava then runs those populations on the host CPU, which the recording's ``run_config``
says.
Under Loihi2SimCfg the script installs ``lava_fastconv.py`` (written beside it) for Lava's Conv
model: the same sums as Lava's ``conv_scipy``, in one vectorized call (``install_fast_conv``).

recording.npz (np.load(path, allow_pickle=False)), schema "snncompile-recording", version 1:
    meta           0-d str: JSON {"schema", "version", "layers" [names], "shapes" {layer: shape},
                   "steps", "samples", "sample_ids", "run_config", "lava_version",
                   "bundle_version", "output_layers", "conv" (which convolution Lava's CPU
                   Conv model ran: ``install_fast_conv``)}
    sample_ids     int64 (samples,): the test-split indices of the bundled samples that ran
    spikes/LAYER   int8  (samples, steps, *layer shape): s_out sent at each step (0 / 1; reset
                   "signed": −1 / 0 / +1)
    v/LAYER        int32 (samples, steps, *layer shape): v after each step's reset
Layer shapes are snncompile's (C, H, W) for images, not Lava's (X, Y, C); step t is Lava's
time step t + 1.
"""

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

SCHEMA = "snncompile-recording"
SCHEMA_VERSION = 1
BUNDLE_FORMAT = "snncompile-bundle"
BUNDLE_VERSION = 1

# ---------------------------------------------------------------------------------------------
# Lava 0.10 on Python 3.11: the same import hook as snncompile.backends.lava.compat.
# var_model.py's ``x: ByteEncoder = ByteEncoder()`` defaults are refused by dataclasses since
# 3.11 (mutable default): they become default factories. Lava's multiprocessing module sets the
# start method to 'fork' at import, which fails when it is already fixed, even to 'fork'.

_VAR_MODEL = "lava.magma.compiler.var_model"
_MULTIPROCESSING = "lava.magma.runtime.message_infrastructure.multiprocessing"
_MUTABLE_DEFAULT = re.compile(r"=\s*ByteEncoder\(\)")
_FACTORY = "= __import__('dataclasses').field(default_factory=ByteEncoder)"
_SET_FORK = re.compile(r"""mp\.set_start_method\((['"])fork\1\)""")
_SET_FORK_UNLESS_FORK = "(mp.get_start_method(allow_none=True) == 'fork' or mp.set_start_method('fork'))"


def patch_var_model(source):
    return _MUTABLE_DEFAULT.sub(_FACTORY, source)


def patch_start_method(source):
    return _SET_FORK.sub(_SET_FORK_UNLESS_FORK, source)


_PATCHES = {_VAR_MODEL: patch_var_model, _MULTIPROCESSING: patch_start_method}


class _PatchedSourceLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname, path, patch):
        super().__init__(fullname, path)
        self._patch = patch

    def get_code(self, fullname):
        source = self.get_data(self.path).decode("utf-8")
        return compile(self._patch(source), self.path, "exec", dont_inherit=True)


class _LavaCompatFinder(importlib.abc.MetaPathFinder):
    snncompile_lava_hook = True  # snncompile's own hook carries the same mark

    def find_spec(self, fullname, path, target=None):
        patch = _PATCHES.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        loader = _PatchedSourceLoader(fullname, spec.origin, patch)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


if not any(getattr(f, "snncompile_lava_hook", False) for f in sys.meta_path):
    sys.meta_path.insert(0, _LavaCompatFinder())

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.ports import PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402
from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.dense.process import Dense  # noqa: E402
from lava.proc.lif.models import AbstractPyLifModelFixed  # noqa: E402
from lava.proc.lif.process import LIF, AbstractLIF  # noqa: E402
from lava.proc.monitor.process import Monitor  # noqa: E402
from lava.utils.weightutils import SignMode  # noqa: E402


# ---------------------------------------------------------------------------------------------
# The subtractive-reset neuron (snncompile.backends.lava.processes): Lava's LIF integer dynamics,
# but s = v > vth << 6 subtracts vth << 6 from v instead of setting it to 0; vth per neuron.


class SubtractiveLIF(AbstractLIF):
    """Leaky integrate-and-fire neurons that subtract the threshold when they spike."""

    def __init__(self, *, shape, u=0, v=0, du=0, dv=0, bias_mant=0, bias_exp=0, vth=10,
                 name=None, log_config=None, **kwargs) -> None:
        super().__init__(shape=shape, u=u, v=v, du=du, dv=dv, bias_mant=bias_mant,
                         bias_exp=bias_exp, name=name, log_config=log_config, **kwargs)
        self.vth = Var(shape=tuple(shape), init=vth)


@implements(proc=SubtractiveLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PySubtractiveLifModelBitAcc(AbstractPyLifModelFixed):
    """Bit-accurate model: PyLifModelBitAcc's integer dynamics, reset by subtraction."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.effective_vth = 0

    def scale_threshold(self):
        self.effective_vth = np.left_shift(self.vth.astype(np.int32), self.vth_shift)
        self.isthrscaled = True

    def spiking_activation(self):
        return self.v > self.effective_vth

    def reset_voltage(self, spike_vector):
        self.v[:] = np.where(spike_vector, self.v - self.effective_vth, self.v)


# The signed neuron (reset "signed"; snncompile.backends.lava.processes.SignedLIF): the same
# integer dynamics, then with Θ = vth << 6: s = +1 where v > Θ, −1 where v <= 0 and sent > 0,
# else 0; v -= s·Θ; sent += s (sent: the spikes sent so far, 0 in a fresh network). s_out sends
# s as int32, read by Dense/Conv with num_message_bits > 0 (SIGNED_MESSAGE_BITS) as s·weight.

# Graded-spike width of a synapse reading a signed population: −1, 0, +1 in two signed bits.
SIGNED_MESSAGE_BITS = 2


class SignedLIF(SubtractiveLIF):
    """Leaky integrate-and-fire neurons with signed spikes −1 / 0 / +1 (reset "signed"); its own
    class, as Lava picks a process's models by its exact type."""

    def __init__(self, *, shape, **kwargs) -> None:
        super().__init__(shape=shape, **kwargs)
        self.sent = Var(shape=tuple(shape), init=0)


@implements(proc=SignedLIF, protocol=LoihiProtocol)
class PySignedLifModelBitAcc(PySubtractiveLifModelBitAcc):
    """Bit-accurate model: PySubtractiveLifModelBitAcc's (tags, types, per-neuron threshold),
    signed spikes."""

    implements_process = None  # inherited (SubtractiveLIF); ``implements`` sets ours
    sent: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def spiking_activation(self):
        up = self.v > self.effective_vth
        down = (self.v <= 0) & (self.sent > 0)
        return up.astype(np.int32) - down.astype(np.int32)

    def reset_voltage(self, spike_vector):
        self.v[:] = self.v - spike_vector * self.effective_vth
        self.sent[:] = self.sent + spike_vector


# ---------------------------------------------------------------------------------------------
# Layout: snncompile's (C, H, W) is Lava's (X, Y, C) = (W, H, C).


def lava_shape(shape):
    return tuple(reversed(shape)) if len(shape) == 3 else tuple(shape)


def to_lava(arr):
    arr = np.asarray(arr)
    return arr.transpose(2, 1, 0) if arr.ndim == 3 else arr


def from_lava(arr, lead=0):
    arr = np.asarray(arr)
    if arr.ndim - lead != 3:
        return arr
    return arr.transpose(*range(lead), lead + 2, lead + 1, lead)


def dense_columns_to_lava(weight, src_shape):
    """Columns reordered from the C-order flattening of (C, H, W) to that of Lava's (W, H, C)."""
    if len(src_shape) != 3:
        return weight
    ir_index = to_lava(np.arange(math.prod(src_shape)).reshape(src_shape)).reshape(-1)
    return weight[:, ir_index]


def conv_kernel_to_lava(weight):
    """torch's cross-correlation kernel (out, in, kH, kW) as Lava's convolution (out, kW, kH, in)."""
    return np.ascontiguousarray(np.flip(weight, (-1, -2)).transpose(0, 3, 2, 1))


def lava_groups(weight, groups, most=127):
    """A grouped kernel (out, in/groups, kH, kW) with at most ``most`` groups (Lava's Conv holds
    ``groups`` in int8): with more (a depthwise conv of 240 channels), neighbouring groups merge
    into the largest divisor of ``groups`` that fits, their kernels block-diagonal inside the
    merged group, zeros elsewhere: the same convolution, bit for bit."""
    if groups <= most:
        return weight, groups
    fewer = max(d for d in range(1, most + 1) if groups % d == 0)
    merge = groups // fewer
    out, in_g = weight.shape[:2]
    out_g = out // groups
    merged = np.zeros((out, in_g * merge) + tuple(weight.shape[2:]), dtype=weight.dtype)
    for g in range(groups):
        j = g % merge  # the old group's place inside its merged group
        merged[g * out_g:(g + 1) * out_g, j * in_g:(j + 1) * in_g] = weight[g * out_g:(g + 1) * out_g]
    return merged, fewer


def _xy(pair):
    return int(pair[1]), int(pair[0])


# ---------------------------------------------------------------------------------------------
# The bundle.


class UserError(Exception):
    """Bad input: printed as one line, exit code 2."""


class Network:
    """network.json + network.npz: nodes by name, their params with arrays resolved."""

    def __init__(self, bundle_dir):
        bundle_dir = Path(bundle_dir)
        json_path, npz_path = bundle_dir / "network.json", bundle_dir / "network.npz"
        if not json_path.is_file() or not npz_path.is_file():
            raise UserError(f"{json_path} or network.npz not found; give the compiled OUTDIR with --bundle")
        doc = json.loads(json_path.read_text())
        if doc.get("format") != BUNDLE_FORMAT or doc.get("version") != BUNDLE_VERSION:
            raise UserError(f"{json_path}: not an snncompile bundle of version {BUNDLE_VERSION}; "
                            "compile again with this snncompile")
        with np.load(npz_path, allow_pickle=False) as npz:
            self.arrays = {k: npz[k] for k in npz.files}
        self.doc = doc
        self.steps = int(doc["steps"])
        self.order = [n["name"] for n in doc["nodes"]]
        self.nodes = {n["name"]: n for n in doc["nodes"]}
        self.sample_ids = self.arrays["input/sample_ids"]
        self.encoded = {e["name"]: (self.arrays[e["mant"]], self.arrays[e["exp"]]) for e in doc["encoders"]}

    def op(self, name):
        return self.nodes[name]["op"]

    def inputs(self, name):
        return self.nodes[name]["inputs"]

    def shape(self, name):
        return tuple(self.nodes[name]["shape"])

    def param(self, name, key):
        value = self.nodes[name]["params"][key]
        if isinstance(value, dict) and "array" in value:
            return self.arrays[value["array"]]
        return value

    def neurons(self):
        return [n for n in self.order if self.op(n) == "LoihiNeuron"]

    def output_layers(self):
        outs = [self.inputs(n)[0] for n in self.order if self.op(n) == "Output"]
        return [n for n in outs if self.op(n) == "LoihiNeuron"]

    def spike_source(self, synapse):
        (src,) = self.inputs(synapse)
        while self.op(src) == "Flatten":
            (src,) = self.inputs(src)
        return src

    def components(self):
        """Neuron names grouped by connected Lava networks (Lava runs one connected part)."""
        parent = {n: n for n in self.neurons()}

        def root(n):
            while parent[n] != n:
                n = parent[n]
            return n

        for name in self.order:
            if self.op(name) in ("FixedDense", "FixedConv2d"):
                src = self.spike_source(name)
                for user in self.order:
                    if name in self.inputs(user):
                        parent[root(user)] = root(src)
        groups = {}
        for n in self.neurons():
            groups.setdefault(root(n), []).append(n)
        return list(groups.values())


def build(net, sample, record, steps):
    """Lava processes for one bundled sample: populations, synapses, monitors of ``record``."""
    populations, synapses, monitors = {}, {}, {}
    for name in net.neurons():
        mant, exp = net.param(name, "bias_mant"), net.param(name, "bias_exp")
        for src in net.inputs(name):
            if net.op(src) == "BiasEncoder":
                mant, exp = net.encoded[src][0][sample], net.encoded[src][1][sample]
        kw = dict(shape=lava_shape(net.shape(name)), u=0, v=to_lava(net.param(name, "v_init")),
                  du=int(net.param(name, "du")), dv=int(net.param(name, "dv")),
                  bias_mant=to_lava(mant), bias_exp=to_lava(exp), name=name)
        vth = net.param(name, "vth")
        reset = net.param(name, "reset")
        if reset == "zero":
            proc = LIF(vth=int(vth.flat[0]), **kw)
        elif reset == "signed":
            proc = SignedLIF(vth=to_lava(vth), **kw)
        else:
            proc = SubtractiveLIF(vth=to_lava(vth), **kw)
        populations[name] = proc
        for src in net.inputs(name):
            if net.op(src) in ("FixedDense", "FixedConv2d"):
                _synapse(net, src, populations, synapses).a_out.connect(proc.a_in)
        if name in record:
            monitors[name] = (Monitor(), Monitor())
            monitors[name][0].probe(proc.s_out, steps)
            monitors[name][1].probe(proc.v, steps)
    return populations, monitors


def _synapse(net, name, populations, synapses):
    if name in synapses:
        return synapses[name]
    weight = np.asarray(net.param(name, "weight"), dtype=np.int64)
    src = net.spike_source(name)
    bits = SIGNED_MESSAGE_BITS if net.param(src, "reset") == "signed" else 0  # graded -1/0/+1
    if net.op(name) == "FixedDense":
        proc = Dense(weights=dense_columns_to_lava(weight, net.shape(src)),
                     weight_exp=int(net.param(name, "weight_exp")), num_weight_bits=8,
                     sign_mode=SignMode.MIXED, num_message_bits=bits, name=name)
        port = populations[src].s_out
        (port.flatten() if len(net.shape(src)) != 1 else port).connect(proc.s_in)
    else:
        shift = int(net.param(name, "weight_exp"))  # Lava's Conv has no exponent (FixedConv2d)
        weight, groups = lava_groups(weight << shift, int(net.param(name, "groups")))
        proc = Conv(weight=conv_kernel_to_lava(weight), input_shape=lava_shape(net.shape(src)),
                    padding=_xy(net.param(name, "padding")), stride=_xy(net.param(name, "stride")),
                    dilation=_xy(net.param(name, "dilation")), groups=groups,
                    num_message_bits=bits, name=name)
        populations[src].s_out.connect(proc.s_in)
    synapses[name] = proc
    return proc


def _integers(data, what, name):
    exact = np.rint(np.asarray(data))
    if not np.array_equal(exact, data):
        raise RuntimeError(f"layer '{name}': Monitor returned non-integer {what}")
    return exact


# ---------------------------------------------------------------------------------------------
# Run configuration and the command line.


def loihi_extension_installed():
    """lava.utils.loihi.is_installed() of lava-nc 0.10: lava.utils.loihi2_profiler is importable."""
    try:
        from lava.utils import loihi
    except ImportError:
        return importlib.util.find_spec("lava.utils.loihi2_profiler") is not None
    return bool(loihi.is_installed())


class ModelPerClass(dict):
    """A run config's ``exception_proc_model_map`` that picks each process class's model once.

    Lava's compiler looks for a process's models by importing and scanning the modules beside its
    class, once per process instance: 28 ms each, 10 s for a MobileNetV2 of 351 processes, and
    again for every sample this script builds. The compiler first asks this map (``proc in map``,
    then ``map[proc]``); it answers for every process with the model Lava's own search and the
    config's ``select`` pick for the first process of that class. ``select`` asks the same map
    for a process's class: the answer is no, so the selection runs as Lava wrote it."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    def __contains__(self, proc):
        from lava.magma.core.process.process import AbstractProcess

        return isinstance(proc, AbstractProcess)

    def __missing__(self, proc):
        from lava.magma.compiler.compiler_graphs import ProcGroupDiGraphs

        key = (type(proc), type(self.cfg), self.cfg.select_tag, self.cfg.select_sub_proc_model)
        if key not in _MODELS:
            found = ProcGroupDiGraphs._find_proc_models(proc=proc)
            _MODELS[key] = ProcGroupDiGraphs._select_proc_models(proc, found, self.cfg)
        return _MODELS[key]


_MODELS = {}


def sim_config():
    """Loihi2SimCfg with Lava's bit-accurate fixed_pt models, each class's found once."""
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    cfg.exception_proc_model_map = ModelPerClass(cfg)
    return cfg


def run_config(choice):
    """(run configuration, its description) for --run-config auto|hw|sim."""
    if choice == "auto":
        choice = "hw" if loihi_extension_installed() else "sim"
    if choice == "hw":
        from lava.utils import loihi

        if "NXSDKHOST" not in os.environ:  # not set up for an ethernet host: use SLURM (INRC)
            loihi.use_slurm_host()
        return Loihi2HwCfg(), "Loihi2HwCfg()"
    return sim_config(), "Loihi2SimCfg(select_tag='fixed_pt')"


def record(net, samples, steps, layers, cfg):
    """spikes and v per recorded layer, (samples, steps, *shape) in snncompile's layout."""
    spikes = {k: np.zeros((samples, steps, *net.shape(k)), dtype=np.int8) for k in layers}
    volts = {k: np.zeros((samples, steps, *net.shape(k)), dtype=np.int32) for k in layers}
    for i in range(samples):
        populations, monitors = build(net, i, set(layers), steps)
        for component in net.components():
            wanted = [n for n in component if n in monitors]
            if not wanted:
                continue
            anchor = populations[component[0]]
            anchor.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
            try:
                for name in wanted:
                    proc = populations[name]
                    s = monitors[name][0].get_data()[proc.name]["s_out"]
                    v = monitors[name][1].get_data()[proc.name]["v"]
                    spikes[name][i] = from_lava(_integers(s, "spikes", name), lead=1)
                    volts[name][i] = from_lava(_integers(v, "v", name), lead=1)
            finally:
                anchor.stop()
        print(f"sample {i + 1}/{samples} (id {int(net.sample_ids[i])}) done", file=sys.stderr)
    return spikes, volts


def install_fast_conv():
    """Under Loihi2SimCfg, Lava's Conv model calls ``conv_scipy``, one ``convolve2d`` per channel
    pair (~6 s a step on a 32×32 MobileNetV2). ``lava_fastconv.py``, written beside this script,
    replaces it with one vectorized call giving the same float64 array element for element
    (exact integer sums; snncompile's tests pin it to ``conv_scipy``). Returns which one runs."""
    helper = Path(__file__).resolve().with_name("lava_fastconv.py")
    if not helper.is_file():
        return "conv_scipy (Lava's; lava_fastconv.py not found beside this script)"
    spec = importlib.util.spec_from_file_location("lava_fastconv", helper)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install()
    return "conv_exact (lava_fastconv.py)"


def parser():
    p = argparse.ArgumentParser(description="Run an snncompile run bundle on Loihi 2 or Lava's "
                                "bit-accurate simulation and write recording.npz.")
    here = Path(__file__).resolve().parent
    p.add_argument("--bundle", default=str(here), help="folder with network.json/.npz (default: this script's)")
    p.add_argument("--samples", type=int, default=None, help="how many bundled samples to run (default: all)")
    p.add_argument("--steps", type=int, default=None, help="time steps per sample (default: the bundle's)")
    p.add_argument("--probe", default="", help="also record these layers: LAYER[,LAYER] or 'all'")
    p.add_argument("--out", default="recording.npz", help="where to write the recording (default recording.npz)")
    p.add_argument("--run-config", choices=["auto", "hw", "sim"], default="auto",
                   help="hw: Loihi2HwCfg; sim: Loihi2SimCfg fixed_pt; auto (default): hw when lava-loihi is installed")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        net = Network(args.bundle)
        bundled = len(net.sample_ids)
        samples = bundled if args.samples is None else args.samples
        if not 1 <= samples <= bundled:
            raise UserError(f"--samples must be between 1 and {bundled} (the samples in the bundle)")
        steps = net.steps if args.steps is None else args.steps
        if steps < 1:
            raise UserError("--steps must be a positive integer")
        layers = list(net.output_layers())
        probes = [p for p in args.probe.split(",") if p]
        if probes == ["all"]:
            probes = net.neurons()
        unknown = [p for p in probes if p not in net.nodes or net.op(p) != "LoihiNeuron"]
        if unknown:
            raise UserError(f"--probe: no neuron layer named {', '.join(unknown)}; "
                            f"layers: {', '.join(net.neurons())}")
        layers += [p for p in probes if p not in layers]
        layers = [n for n in net.neurons() if n in layers]
    except UserError as exc:
        print(f"run_on_loihi.py: error: {exc}", file=sys.stderr)
        return 2
    cfg, cfg_name = run_config(args.run_config)
    conv = install_fast_conv() if isinstance(cfg, Loihi2SimCfg) else "on the chip"
    spikes, volts = record(net, samples, steps, layers, cfg)
    from importlib.metadata import PackageNotFoundError, version

    try:
        lava_version = version("lava-nc")
    except PackageNotFoundError:
        lava_version = "unknown"
    meta = {"schema": SCHEMA, "version": SCHEMA_VERSION, "layers": layers,
            "shapes": {k: list(net.shape(k)) for k in layers}, "steps": steps, "samples": samples,
            "sample_ids": [int(i) for i in net.sample_ids[:samples]], "run_config": cfg_name,
            "lava_version": lava_version, "bundle_version": BUNDLE_VERSION,
            "output_layers": net.output_layers(), "conv": conv}
    arrays = {"meta": np.array(json.dumps(meta)), "sample_ids": np.asarray(net.sample_ids[:samples], np.int64)}
    for k in layers:
        arrays[f"spikes/{k}"] = spikes[k]
        arrays[f"v/{k}"] = volts[k]
    out = Path(args.out)
    with open(out, "wb") as f:  # np.savez would append .npz to another suffix
        np.savez_compressed(f, **arrays)
    print(f"wrote {out} ({samples} samples, {steps} steps, {cfg_name}, convolution: {conv}, "
          f"layers: {', '.join(layers)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
