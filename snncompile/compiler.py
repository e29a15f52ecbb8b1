"""The compile stages: load, convert, calibrate, quantize, place, simulate, compare against Lava, report.

Shared by the faces (``snncompile.api``, ``snncompile.cli``, ``snncompile.compile``) and by the
measurements that rerun stages (``report.diagnostics``, ``report.sweep``); nothing here imports a face.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snncompile import data as datasets
from snncompile.runtime import progress
from snncompile.runtime.memory import small_pages
from snncompile.errors import SnnCompileError
from snncompile.ir.ops import Reset
from snncompile.ir.graph import Graph
from snncompile.passes import pipeline
from snncompile.passes.calibrate import AdvancedCalibration, BiasCorrection
from snncompile.passes.partition import Partition, Placement
from snncompile.passes.latency import CompensateDelay, latency_steps
from snncompile.report.build import Report, build_report, write_report
from snncompile.sim import ann
from snncompile.sim import snn as float_snn
from snncompile.sim.ann import encode_inputs
from snncompile.sim.trace import compare
from snncompile.targets.loihi2 import LOIHI2


@dataclass(frozen=True)
class Options:
    target: str = "loihi2"
    steps: int = 32
    data: str = "digits"  # evaluation data: digits (its test split) or a .npz (see snncompile.data)
    calib_data: str | None = None  # calibration data; default: digits' train split / part of --data
    samples: int = 4  # samples run on Lava and compared bit for bit
    # calibration samples: None = the default, 256, or 1,024 or 512 where --calibrate auto runs
    # advanced on a deep network and the cost allows (convert)
    calib_samples: int | None = None
    # add blends of pairs of calibration samples (convert, MIXUP): auto (where advanced calibrates a
    # small network on the default samples) | on | off
    calib_mixup: str = "auto"
    percentile: float = 100.0
    threshold: str = "mse"  # threshold balancing: mse (the T-step error search) | max | percentile (passes.convert)
    calibrate: str = "auto"  # auto | none | light | advanced, in fixed point (passes.calibrate; auto: resolve_calibration)
    calib_iterations: int = 300  # Adam steps per layer of advanced's weight calibration
    min_accuracy_ratio: float | None = None  # fidelity gate: SNN / reference accuracy at least this
    max_accuracy_drop: float | None = None  # fidelity gate: reference − SNN accuracy, in points, at most
    device: str | None = None
    progress: bool = True
    chips: int = 1  # Loihi 2 chips the model must fit on (loihi2 and netx targets)
    arch: str | None = None  # package.module:factory building the module a state_dict fills
    trust_pickle: bool = False  # unpickle a whole pickled nn.Module (can execute code)
    input_shape: tuple[int, ...] | None = None  # one sample's shape, for TorchScript/state_dict
    strict: bool = False  # any clipped or wrapped value is an error (OverflowLimitError)
    sweep_steps: tuple[int, ...] = ()  # also convert at each T and report the accuracy (report: sweep)
    activation_samples: int = 64  # test samples for the report's ANN-activation-vs-SNN-rate comparison
    nir_dt: float | None = None  # a NIR file's step (default: its metadata, else its producer's convention)
    nir_reset: str | None = None  # a NIR file's reset where it records none: zero | subtract
    nir_flavor: str = "nir"  # model.nir for: nir (sinabs, norse, SpikingJelly) | snntorch | rockpool | snncompile
    allow_silent: bool = False  # a spiking model silent or saturated on the calibration data: warn, not fail
    maxpool: str = "error"  # MaxPool2d: error (refuse, naming --maxpool) | avg (AvgPool2d, same window)
    # relay layers on shorter paths (passes.equalize_delays): "auto" (keep them where the float SNN
    # is closer to the ANN on the calibration data), "on"/True, "off"/False; never for netx
    equalize_delays: bool | str = "auto"
    # the converted IF neurons' spikes (spike_mode): auto (signed for loihi2, binary for the netx
    # and nir targets) | signed (Reset.SIGNED: −1 takes back a spike sent too early) | binary
    spikes: str = "auto"


@dataclass
class Compiled:
    """Everything one compilation produced."""

    float_graph: Graph
    snn_graph: Graph
    fixed_graph: Graph | None
    report: Report
    files: dict[str, Path] = field(default_factory=dict)
    placement: Placement | None = None  # where the fixed-point graph's neurons go on Loihi 2


@dataclass
class Inspection:
    """A model compiled to Loihi 2 fixed point and placed on cores, without running it."""

    float_graph: Graph
    snn_graph: Graph
    fixed_graph: Graph
    placement: Placement
    # under --calibrate auto: the calibration a compile would run, and why (inspect runs none)
    calibration: str | None = None


TARGETS = ("loihi2", "netx", "nir")


@small_pages()
def load_model(path: str | Path, options: Options | None = None) -> Graph:
    """A float IR graph from a model file, its format told by its content, not its name
    (``snncompile.frontends.detect``): torch.export, TorchScript, a state_dict with
    ``options.arch``, a pickled module only with ``options.trust_pickle``, ONNX or NIR."""
    from snncompile.frontends.detect import LoadOptions, load

    options = options or Options()
    return load(Path(path), LoadOptions(arch=options.arch, trust_pickle=options.trust_pickle,
                                        input_shape=options.input_shape, data=options.data,
                                        nir_dt=options.nir_dt, nir_reset=options.nir_reset))


def prepare(graph: Graph, options: Options) -> Graph:
    """The ANN the compiler converts: every MaxPool2d replaced by an AvgPool2d of the same window
    (``options.maxpool`` avg) or refused with an error naming the flag (passes.maxpool)."""
    from snncompile.passes.maxpool import SubstituteMaxPool

    return pipeline.run(graph, (SubstituteMaxPool(options.maxpool),))


def accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    # a readout of shape (C, 1, 1) (global pooling after the last conv) counts as C classes
    return float(np.mean(np.argmax(np.asarray(logits).reshape(len(logits), -1), axis=1) == labels))


DEFAULT_CALIB_SAMPLES = 256
# With no --calib-samples, a network beyond --calibrate auto's small limits (the deep branch of
# resolve_calibration) on which auto runs advanced is converted and calibrated on more samples:
# the first (samples, work) of AUTO_MORE_CALIB_SAMPLES whose calibrated neurons × samples × (T + L)
# stays within its work bound. torchvision's MobileNetV2 (width 0.25, digits32, ANN 94.72 %),
# advanced, 256 → 512 samples: T=8 77.22 → 83.89 % (calibration 165 → 234 s), T=16 90.56 → 90.56 %
# (184 → 215 s), T=32 93.15 (mean of 3 subsets) → 95.00 % (2 subsets, 274 s), T=64 94.17 → 95.00 %
# (258 → 317 s, over 5 min); the digits models gain one or two test samples either way (not
# applied: small branch). Since the readout calibration and the trimmed taps, 512 → 1,024 samples:
# T=16 92.22 → 94.44 % (calibration 172 → 238 s), agreement with the ANN on held-out train samples
# 96.6 → 97.3 %; T=8 88.89 → 88.06 % (152 → 220 s) (benchmarks/results/fidelity.md, "Unused kernel
# taps, and 1,024 calibration samples at short T"). The 1,024 bound rose from 2.25 G to 3 G once
# advanced's whole-graph choice compared on 512 samples (passes.calibrate.WHOLE_CHOICE_SAMPLES):
# MobileNetV2 at T=32 on 1,024 samples then calibrates in 235 s (305 s before), and 512 → 1,024
# moves it 95.28 → 94.72 % (ANN 94.72 %) and a second training of it 94.17 → 96.11 % (ANN 95.83 %)
# (fidelity.md, "1,024 calibration samples at T=32, and what limits a retrained MobileNetV2 at T=16").
AUTO_MORE_CALIB_SAMPLES = ((1024, 3_000_000_000), (512, 1_500_000_000))
# MobileNetV2: T=8 with 1,024 samples 42,288 × 1,024 × 43 = 1.86 G, T=16 2.21 G, T=32 2.90 G;
# T=64 with 1,024 4.29 G, with 512 2.14 G (over 1.5 G: 256). ResNet-20 at T=4 with 512:
# 188,416 × 512 × 23 = 2.22 G (over 1.5 G: 256); at T=8 with 256 1.30 G (286 s on a slower machine)


def calib_count(options: Options) -> int:
    """The calibration samples the conversion starts from: --calib-samples, else 256."""
    return DEFAULT_CALIB_SAMPLES if options.calib_samples is None else int(options.calib_samples)


def convert(graph: Graph, train: np.ndarray, options: Options) -> tuple[Graph, np.ndarray]:
    """(the float SNN, the calibration samples) from the calibration data ``train``: the first
    ``calib_count`` samples, or, with no --calib-samples, more (AUTO_MORE_CALIB_SAMPLES) where
    ``more_samples`` says so, or those samples and as many blends of pairs of them where
    ``mixup_samples`` says so (the conversion is then redone on them: thresholds and the delay
    choice see the same samples the calibration does). The SNN's metadata says which."""
    calib = train[: calib_count(options)]
    snn = to_snn(graph, calib, options)
    info = {"samples": len(calib), "requested": options.calib_samples}
    more, why = more_samples(graph, snn, len(train), options)
    if more:
        calib = train[:more]
        snn = to_snn(graph, calib, options)
        info["samples"] = len(calib)
    mix, mix_why = mixup_samples(graph, snn, options)
    if mix:
        calib = mixup(calib)
        snn = to_snn(graph, calib, options)
        info["mixups"] = len(calib) - info["samples"]
    why = "; ".join(w for w in (why, mix_why) if w)
    if why:
        info["why"] = why
    builder = snn.edit()
    builder.metadata = {**builder.metadata, "calib_samples": info}
    return builder.build(), calib


MIXUP_SEED = 0
# --calib-mixup auto: advanced calibration of a small network (auto's small limits) on the default
# samples sees them and as many blends λ·x_i + (1 − λ)·x_j of random pairs, λ uniform in
# [0.5, 1): the ANN's outputs between its training points, which the SNN is calibrated to follow
# too (train samples alone: the calibrated SNN agreed with the ANN on every one of them and on
# 97.5 % of the test split). The digits ResNet, advanced, five calibration subsets, mean test
# accuracy (ANN 97.22 %): T=4 94.11 → 95.00 %, T=8 96.44 → 97.06 %, T=16 97.39 → 97.06 %, T=32
# 97.61 both; cnn and vgg within a third of a test sample either way; 512 or 1,024 real samples
# gave 96.61 % at T=8; calibration 6.5–14.3 s instead of 4.9–10.1 s
# (benchmarks/results/fidelity.md, "Mixup calibration samples"). Not on deep networks:
# MobileNetV2 at T=16 with 256 samples + 256 mixups 89.72 % against 90.56 % on 512 samples.
MIXUP_LAMBDA = (0.5, 1.0)


def mixup(x: np.ndarray, seed: int = MIXUP_SEED) -> np.ndarray:
    """``x`` followed by len(x) blends λ·x[i] + (1 − λ)·x[j] of random pairs (i, j), λ uniform
    in MIXUP_LAMBDA (each blend mostly one sample); seeded, in x's dtype."""
    rng = np.random.default_rng(seed)
    n = len(x)
    i, j = rng.integers(0, n, (2, n))
    lam = rng.uniform(*MIXUP_LAMBDA, n).reshape((n,) + (1,) * (np.ndim(x) - 1))
    return np.concatenate([x, lam * x[i] + (1 - lam) * x[j]]).astype(x.dtype, copy=False)


MIXUP_MODES = ("auto", "on", "off")


def mixup_samples(graph: Graph, snn: Graph, options: Options) -> tuple[bool, str | None]:
    """(whether ``convert`` adds mixups, why) for the float SNN ``snn`` converted on the
    calibration samples: --calib-mixup on: always, for an ANN on a target that calibrates; auto:
    with no --calib-samples where the calibration --calibrate resolves to is advanced on a
    network within auto's small limits; off: never."""
    if options.calib_mixup not in MIXUP_MODES:
        raise SnnCompileError(f"--calib-mixup must be one of {', '.join(MIXUP_MODES)}, got '{options.calib_mixup}'")
    if options.calib_mixup == "off" or options.target == "nir" or any(op.neuron for _, op in graph.nodes()):
        return False, None
    if options.calib_mixup == "on":
        return True, "--calib-mixup on: as many mixups as samples"
    if options.calib_samples is not None:
        return False, None
    mode, _ = resolve_calibration(options.calibrate, snn, graph, options.steps, DEFAULT_CALIB_SAMPLES)
    if mode != "advanced" or not _small(*_size(snn)):
        return False, None
    return True, ("mixup auto: advanced on a network within auto's small limits: as many mixups "
                  "(blends of two samples) as samples")


def more_samples(graph: Graph, snn: Graph, available: int, options: Options) -> tuple[int | None, str | None]:
    """(the samples or None, why) for the float SNN ``snn`` converted on the default samples:
    more only with no --calib-samples, on a target that calibrates, where --calibrate auto runs
    advanced past its small limits: the first count of AUTO_MORE_CALIB_SAMPLES (at most the
    samples there are) whose work stays within its bound."""
    if options.calib_samples is not None or options.target == "nir" or options.calibrate != "auto":
        return None, None
    mode, _ = resolve_calibration("auto", snn, graph, options.steps, DEFAULT_CALIB_SAMPLES)
    if mode != "advanced" or _small(*_size(snn)):
        return None, None
    if available <= DEFAULT_CALIB_SAMPLES:
        return None, (f"auto: advanced on a deep network; {available} calibration samples in all: "
                      f"{min(available, DEFAULT_CALIB_SAMPLES)} used")
    neurons = _calibrated(snn, graph)[1]
    steps = options.steps + latency_steps(snn)
    over = []
    for count, bound in AUTO_MORE_CALIB_SAMPLES:
        more = min(count, available)
        work = neurons * more * steps
        if work <= bound:
            return more, (f"auto: advanced on a deep network; {neurons:,} calibrated neurons × {more} samples × "
                          f"(T + L) = {work:,} neuron·sample·steps (at most {bound:,}): {more} samples")
        over.append(f"{more} samples would cost {work:,} neuron·sample·steps (> {bound:,})")
    return None, f"auto: advanced on a deep network; {', '.join(over)}: {DEFAULT_CALIB_SAMPLES}"


@small_pages()
def to_snn(graph: Graph, calib: np.ndarray, options: Options) -> Graph:
    """The float SNN: an ANN is converted (netx needs reset to zero); an SNN keeps its neurons."""
    if any(op.neuron for _, op in graph.nodes()):
        return pipeline.run(graph, pipeline.spiking())
    reset = {"netx": Reset.ZERO, "signed": Reset.SIGNED}.get(spike_mode(options), Reset.SUBTRACT)
    v_init = 0.0 if options.target == "netx" else 0.5  # netx's neurons start at v = 0
    # equal delays on every path when asked (passes.equalize_delays; not for netx, whose neurons
    # start at 0 and whose biases integrate from step 0 anyway)
    mode = equalize_mode(options.equalize_delays) if options.target != "netx" else "off"
    passes = pipeline.convert(calib, options.percentile, reset=reset, mode=options.threshold, steps=options.steps,
                              v_init=v_init, equalize=mode == "on")
    snn = pipeline.run(graph, passes)
    return choose_delays(graph, snn, calib, options.steps) if mode == "auto" else snn


EQUALIZE_MODES = ("auto", "on", "off")
# --equalize-delays auto compares the two float SNNs on the calibration data up to this many
# neurons (ResNet-20: 190,538; ResNet-18 at 224x224, 2.5 M, keeps its delays without the runs)
EQUALIZE_AUTO_NEURONS = 400_000
EQUALIZE_AUTO_SAMPLES = 128  # of the calibration samples (ResNet-20, 256 of them: agreement 87 vs 64 % at
# T=8, 93 vs 98 % at T=16: far apart either way)


SPIKE_MODES = ("auto", "signed", "binary")
SPIKES_WHY = {
    "signed": "a spike sent on early excitation is taken back (-1) once later inhibition brings v to 0 or "
              "below, so each neuron's spikes so far follow its charge so far, as the ANN's ReLU does "
              "(Reset.SIGNED; Loihi 2 graded spikes, a count per neuron)",
    "binary": "0/1 spikes, reset by subtraction",
    "netx": "0/1 spikes, reset to zero (netx's CUBA neuron)",
}


def spikes_report(options: Options, is_ann: bool, layers: list[dict]) -> dict:
    """report.json ``spikes``: what ``--spikes`` gave a converted ANN (``mode``; "trained" for a
    model that came spiking, whose neurons are its own), why, and the −1 spikes among the spikes
    the fixed-point network sent on the evaluation data (``LayerStats``)."""
    mode = spike_mode(options) if is_ann else "trained"
    out = {"option": options.spikes, "mode": mode,
           "why": SPIKES_WHY.get(mode, "the model's own neurons (--spikes applies to converted ANNs)")}
    sent = sum(layer.get("overflow", {}).get("spikes", 0) for layer in layers)
    if sent:
        out |= {"spikes_sent": int(sent), "negative_spikes": int(sum(
            layer.get("negative_spikes", 0) for layer in layers))}
    return out


def spike_mode(options: Options) -> str:
    """What ``--spikes`` means for this compile: "netx" (binary, reset to zero: netx's CUBA
    neuron), "signed" (Reset.SIGNED) or "binary" (reset by subtraction). auto is signed on the
    loihi2 target, the default, and binary for nir (NIR's IF has no signed spikes, so another
    library would run the file as binary neurons), for netx, and where model.nir is written for
    snnTorch or Rockpool (their readers take binary neurons only).

    Signed spikes take back a spike a neuron sent on early excitation once later inhibition has
    brought its v to 0 or below, so its spikes so far follow its charge so far, as the ANN's
    ReLU does, instead of its running maximum. Measured (benchmarks/results/fidelity.md,
    "Signed spikes"): torchvision's MobileNetV2 at T=16 with the default calibration, −2.18 ±
    0.72 pp from its ANN with binary spikes, −0.24 ± 0.24 with signed ones, on 413 samples no
    calibration saw (agreement with the ANN 97.58 → 99.76 %)."""
    if options.spikes not in SPIKE_MODES:
        raise SnnCompileError(f"--spikes must be one of {', '.join(SPIKE_MODES)}, not '{options.spikes}'")
    if options.target == "netx":
        if options.spikes == "signed":
            raise SnnCompileError("--spikes signed: netx's CUBA neuron sends binary spikes and resets to 0; "
                                  "use --target loihi2 or --spikes binary")
        return "netx"
    if options.spikes == "auto":  # (snnTorch's and Rockpool's NIR readers take binary neurons only)
        return "signed" if options.target == "loihi2" and options.nir_flavor in ("nir", "snncompile") else "binary"
    return options.spikes


def equalize_mode(value: bool | str) -> str:
    if value is True or value is False:
        return "on" if value else "off"
    if value not in EQUALIZE_MODES:
        raise SnnCompileError(f"--equalize-delays must be one of {', '.join(EQUALIZE_MODES)}, not '{value}'")
    return value


def choose_delays(ann_graph: Graph, snn: Graph, calib: np.ndarray, steps: int) -> Graph:
    """--equalize-delays auto: where T <= L, the converted SNN with relay layers on its shorter
    paths, or without, whichever float SNN is closer to the ANN on the calibration data (class agreement,
    then the output's mean squared error within 2 % agreement, as passes.calibrate.closest_outputs).
    Relays help where the evidence is short (ResNet-20 at T=8: float SNN 59 -> 86 % on the test
    split) and cost where the mismatched paths' head start helps (T=16: 98 -> 91 %)."""
    from snncompile.passes.calibrate import closest_outputs
    from snncompile.passes.equalize_delays import EqualizeDelays

    def noted(graph: Graph, info: dict) -> Graph:
        builder = graph.edit()
        builder.metadata = {**builder.metadata, "delays": {"mode": "auto", **info}}
        return builder.build()

    def measured(candidates: dict[str, Graph]) -> dict:
        """The float SNNs on up to EQUALIZE_AUTO_SAMPLES calibration samples against the ANN:
        ``closest_outputs``' choice and measurements, and how many samples."""
        sample = calib[:EQUALIZE_AUTO_SAMPLES]
        outputs = {name: float_snn.predict(graph, sample, steps + latency_steps(graph)) / steps
                   for name, graph in candidates.items()}
        _, why = closest_outputs(ann.forward(ann_graph, sample).numpy(), outputs)
        return {**why, "samples": len(sample)}

    depth = latency_steps(snn)
    neurons = sum(int(np.prod(snn.shape(n))) for n, op in snn.nodes() if op.neuron)
    if steps > depth:
        # more steps of evidence than synaptic layers: the shorter paths' head start has helped on
        # every model measured (ResNet-20 from T=16 with L=19, the digits ResNet at every T), so the
        # relayed network is not run; the float SNN's agreement with the ANN is still measured
        # (one run), for --calibrate auto (resolve_calibration)
        info = {"equalized": False, "why": (
            f"T={steps} > L={depth}: paths of different depth keep their delays (measured only where "
            "T <= L; --equalize-delays on relays them)")}
        if neurons <= EQUALIZE_AUTO_NEURONS:
            info.update(measured({"delays kept": snn}))
        return noted(snn, info)
    if neurons > EQUALIZE_AUTO_NEURONS:
        return noted(snn, {"equalized": False, "why": (
            f"{neurons:,} neurons > {EQUALIZE_AUTO_NEURONS:,}: not simulated to choose; paths of different "
            "depth keep their delays (--equalize-delays on relays them)")})
    relayed = pipeline.run(snn, (EqualizeDelays(),))
    info = relayed.metadata.get("delays", {})
    if not info.get("equalized"):  # (a path mixes spikes with host values, or too many relays)
        return noted(snn, info)
    if not info.get("relay_neurons"):
        return noted(snn, {**info, "why": "every path into a neuron is equally deep already"})
    why = measured({"relayed": relayed, "delays kept": snn})
    if why["kept"] == "relayed":
        return noted(relayed, {**info, **why})
    return noted(snn, {"equalized": False, "relay_neurons": info["relay_neurons"], **why,
                       "why": "the float SNN with its delays was closer to the ANN on the calibration data"})


@small_pages()
def fixed_point(snn: Graph, calib: np.ndarray, options: Options, ann: Graph | None = None,
                timings: dict | None = None) -> tuple[Graph, Placement]:
    """Quantize the float SNN for Loihi 2 (and calibrate it against ``ann`` when asked), then
    place it on ``options.chips`` chips (raises ResourceError when it does not fit); each phase's
    seconds go to ``timings``."""
    phase = progress.phases(options.progress, timings)
    if options.chips < 1:
        raise SnnCompileError(f"chips must be at least 1, got {options.chips}")
    if options.calibrate not in CALIBRATIONS:
        raise SnnCompileError(f"--calibrate must be one of {', '.join(CALIBRATIONS)}, not '{options.calibrate}'")
    bias_exp = 6 if options.target == "netx" else None
    mode, why = resolve_calibration(options.calibrate, snn, ann, options.steps, len(calib))
    with phase("quantize"):
        # then each neuron starts depth·bias lower so its bias waits for its input (passes.latency;
        # netx files hold no initial potential)
        fixed_graph = pipeline.run(snn, (pipeline.Quantize(data=calib, steps=options.steps, target=LOIHI2,
                                                           bias_exp=bias_exp, exponents=bias_exp is None),
                                         CompensateDelay(enabled=options.target != "netx", float_graph=snn)))
    t0 = time.perf_counter()
    calibration = None
    if mode == "light" and ann is not None:
        calibration = BiasCorrection(ann=ann, data=calib, steps=options.steps, bias_exp=bias_exp,
                                     progress=options.progress)
    elif mode == "advanced" and ann is not None:
        # netx cannot hold an initial membrane potential: no potential initialization there
        calibration = AdvancedCalibration(ann=ann, data=calib, steps=options.steps, bias_exp=bias_exp,
                                          potential_init=options.target != "netx",
                                          iterations=options.calib_iterations, progress=options.progress)
    if calibration is not None:
        # a graph that cannot fit fails before minutes of calibration (the placement is redone
        # below on the calibrated weights)
        Partition(target=LOIHI2, chips=options.chips)(fixed_graph)
        with phase("calibrate"):
            fixed_graph = pipeline.run(fixed_graph, (calibration,))
    builder = fixed_graph.edit()
    builder.metadata = {**builder.metadata, "calibration": {
        "mode": mode if calibration is not None else "none",
        "requested": options.calibrate, "samples": len(calib), **({"why": why} if why else {}),
        "seconds": round(time.perf_counter() - t0, 3) if calibration is not None else 0.0,
        "in_fixed_point": True,
        # advanced's readout weight calibration (passes.calibrate): output error before/after,
        # kept (its seconds stay in the graph's metadata: report.json holds one timing here)
        **({"readout": {k: v for k, v in readout.items() if k != "seconds"}}
           if (readout := fixed_graph.metadata.get("advanced_calibration", {}).get("readout")) else {}),
    }}
    fixed_graph = builder.build()
    with phase("place"):
        return fixed_graph, Partition(target=LOIHI2, chips=options.chips)(fixed_graph)


def sweep_steps(graph: Graph, ds, options, steps_list, *, progress: bool = False) -> list[dict]:
    """For each T: convert and quantize at T (on the calibration samples ``convert`` gives at that
    T), then the float SNN's and the reference simulator's test accuracy. ``options`` is an
    Options; the calibration data is ``ds.train``, the test split ``ds.test``."""
    from snncompile.runtime import progress as report_progress
    from snncompile.backends import reference
    from snncompile.sim import snn as float_snn

    rows = []
    for steps in report_progress.track(steps_list, "sweep", progress, unit="step counts", note="T={}".format):
        opts = dataclasses.replace(options, steps=int(steps), progress=False)
        snn, calib = convert(graph, ds.train.x, opts)
        run_steps = opts.steps + latency_steps(snn)
        choice = snn.metadata["calib_samples"]
        row = {"steps": opts.steps, "calib_samples": choice["samples"], "calib_mixups": choice.get("mixups", 0),
               "float_snn_accuracy": accuracy(float_snn.predict(snn, ds.test.x, run_steps), ds.test.y),
               "snn_accuracy": None}
        if options.target != "nir":
            fixed_graph, _ = fixed_point(snn, calib, opts, graph)
            logits, _ = reference.predict(fixed_graph, ds.test.x, run_steps, device=options.device,
                                          progress=progress)
            row["snn_accuracy"] = accuracy(logits, ds.test.y)
        rows.append(row)
    return rows


CALIBRATIONS = ("auto", "none", "light", "advanced")
# --calibrate auto: advanced up to this many neurons (the digits models, 7-14 s of calibration with mixups on
# 2 cores, the best or within one test sample of it at every T: benchmarks/results/fidelity.md)
AUTO_ADVANCED_NEURONS = 50_000
# ... and up to this many spiking layers (each costs 300 Adam steps and several fixed-point runs:
# the digits models have 3 to 7; a 32×32 MobileNet-V2 with 52 took minutes)
AUTO_ADVANCED_LAYERS = 12
# ... and up to this many weights (Adam on a 64×64 AlexNet's 57 M took minutes in CI)
AUTO_ADVANCED_WEIGHTS = 1_000_000
# Beyond those, advanced still runs where the float SNN falls short of the ANN (or, at T ≤ L, the
# readout's synaptic depth, where that was not measured) and its cost, which grows with
# neurons × calibration samples, stays in minutes: up to
# this many neuron·samples. ResNet-20 (188k neurons, 256 samples: 48 M) at T=4 / 8: 153 / 167 s of
# calibration, 51.7 → 91.7 % and 91.7 → 95 % on 120 test samples (benchmarks/results/fidelity.md);
# at T=16 and 32 its float SNN agrees with the ANN on 96 and 98 % (no calibration: 98.3 / 97.5 %,
# ANN 96.7 %). At T > L it runs where the float SNN measurably falls short: torchvision's
# MobileNetV2 at T=64 > L=35 agrees on 89 %: none 88.9 %, advanced 94.4 % (216 s), ANN 94.7 %
AUTO_ADVANCED_NEURON_SAMPLES = 2**26
# ... and up to this many calibrated layers: each costs 300 Adam steps and about six layer
# simulations whatever its size. torchvision's MobileNetV2 (width 0.25, trained on digits32, 36
# calibrated layers, 256 samples) at T=32 ≤ L=35: 185 s, 69.4 → 94.2 % (ANN 94.7 %; light 84.2 %)
AUTO_ADVANCED_DEEP_LAYERS = 64
# ... unless the float SNN already agrees with the ANN on this share of the calibration samples
# (measured by choose_delays on up to 128 of them, at any T). ResNet-20: 56 / 84 / 96 % at
# T=4 / 8 / 16; advanced lifted T=4 and 8 by 40 and 3.3 pp and scored at T=16 what no
# calibration scores (98.3 %)
AUTO_ADVANCED_AGREEMENT = 0.95
# ... and at T ≤ L (short evidence) unless it agrees on this share. ResNet-20 at T=16 ≤ L=19
# agrees on 97 %: no calibration and advanced (207 s) score 96.67 / 96.39 % on the 360 test samples
# (ANN 96.67 %), but on the 1,181 train samples no calibration saw they agree with the ANN on
# 96.78 / 98.81 % (SNN − ANN −1.35 ± 0.46 / −0.76 ± 0.30 pp; benchmarks/fidelity.py --unseen,
# benchmarks/results/fidelity.md "Accuracy differences with their errors"). At T=32 > L it agrees
# on 97 % too, and advanced (250 s) keeps the uncalibrated graph: the same accuracy on both sets.
AUTO_ADVANCED_AGREEMENT_SHORT = 0.99
# Where the float SNN measurably falls short (its agreement with the ANN below
# AUTO_ADVANCED_AGREEMENT) but advanced is beyond its limits, light (bias correction, no Adam;
# it keeps the uncalibrated graph where that is closer to the ANN on the calibration data) runs
# up to this many neuron·samples: its cost is about one fixed-point run of each layer and a
# commit. MobileNetV2 at T=32: 24 s, none 69.4 → light 84.2 %; ResNet-20: 40–56 s for 48 M
# neuron·samples (benchmarks/results/fidelity.md)
AUTO_LIGHT_NEURON_SAMPLES = 2**27


def _size(snn: Graph) -> tuple[list[str], int, int]:
    """(spiking layers, neurons, weights) of ``snn``."""
    layers = [n for n, op in snn.nodes() if op.neuron]
    neurons = sum(int(np.prod(snn.shape(n))) for n in layers)
    weights = sum(int(np.size(op.weight)) for _, op in snn.nodes() if getattr(op, "weight", None) is not None)
    return layers, neurons, weights


def _calibrated(snn: Graph, ann: Graph) -> tuple[list[str], int]:
    """(the spiking layers calibration visits, their neurons): those of ``ann``, not relays
    (passes.equalize_delays)."""
    layers = [n for n, op in snn.nodes() if op.neuron and n in ann]
    return layers, sum(int(np.prod(snn.shape(n))) for n in layers)


def _small(layers: list[str], neurons: int, weights: int) -> bool:
    """Within --calibrate auto's small limits (advanced whatever the float SNN does); ``_size``'s figures."""
    return neurons <= AUTO_ADVANCED_NEURONS and weights <= AUTO_ADVANCED_WEIGHTS and len(layers) <= AUTO_ADVANCED_LAYERS


def resolve_calibration(requested: str, snn: Graph, ann: Graph | None, steps: int | None = None,
                        samples: int | None = None) -> tuple[str, str | None]:
    """(the calibration to run, why) for ``--calibrate requested``; only ``auto`` chooses (with
    ``steps``, T, and the calibration ``samples`` for the short-evidence rule)."""
    if requested != "auto":
        return requested, None
    if ann is None or any(op.neuron for _, op in ann.nodes()):
        return "none", "auto: a spiking model is compiled as trained (calibration needs an ANN)"
    layers, neurons, weights = _size(snn)
    size = f"{neurons:,} neurons, {weights:,} weights in {len(layers)} layers"
    limits = f"{AUTO_ADVANCED_NEURONS:,} neurons, {AUTO_ADVANCED_WEIGHTS:,} weights, {AUTO_ADVANCED_LAYERS} layers"
    if _small(layers, neurons, weights):
        return "advanced", f"auto: {size} (at most {limits}): advanced"
    calibrated, calibrated_neurons = _calibrated(snn, ann)
    work = calibrated_neurons * (samples or 0)
    if steps is None or samples is None:
        return "none", f"auto: {size} (beyond {limits}): none (advanced would cost minutes)"
    depth = latency_steps(snn)
    delays = snn.metadata.get("delays", {})
    agree = delays.get("agreement", {}).get(delays.get("kept"))
    short = f"T={steps} ≤ L={depth} (short evidence)" if steps <= depth else f"T={steps} > L={depth}"
    if agree is not None:  # the float SNN's class agreement with the ANN, measured by choose_delays
        short += f", float SNN agrees with the ANN on {agree:.0%} of {delays.get('samples')} calibration samples"
    elif steps > depth:
        return "none", f"auto: {size} (beyond {limits}); {short}: none"
    needed = AUTO_ADVANCED_AGREEMENT_SHORT if steps <= depth else AUTO_ADVANCED_AGREEMENT
    if agree is not None and agree >= needed:
        return "none", (f"auto: {size}; {short} (at least {needed:.0%}): none "
                        "(advanced would cost minutes for little)")
    if (weights <= AUTO_ADVANCED_WEIGHTS and len(calibrated) <= AUTO_ADVANCED_DEEP_LAYERS
            and work <= AUTO_ADVANCED_NEURON_SAMPLES):
        return "advanced", (f"auto: {size}; {short}; {work:,} neuron·samples (at most "
                            f"{AUTO_ADVANCED_NEURON_SAMPLES:,}): advanced (minutes)")
    beyond = (f"{len(calibrated)} calibrated layers, {weights:,} weights, {work:,} neuron·samples: beyond "
              f"advanced's {AUTO_ADVANCED_DEEP_LAYERS} layers, {AUTO_ADVANCED_WEIGHTS:,} weights, "
              f"{AUTO_ADVANCED_NEURON_SAMPLES:,} neuron·samples")
    if agree is None:  # not measured (passes.equalize_delays off, or too large to simulate twice)
        return "none", f"auto: {size}; {short}; {beyond}: none"
    if work <= AUTO_LIGHT_NEURON_SAMPLES:
        return "light", f"auto: {size}; {short}; {beyond}: light (bias correction)"
    return "none", (f"auto: {size}; {short}; {beyond} and light's {AUTO_LIGHT_NEURON_SAMPLES:,}: none "
                    "(fewer --calib-samples would allow light)")


def load_data(graph: Graph, options: Options) -> datasets.Dataset:
    """The evaluation and calibration data of ``options`` for ``graph``, checked against its input
    shape and output count before any work starts."""
    (inp,) = graph.input_names()
    outputs = graph.output_names()
    classes = int(np.prod(graph.shape(outputs[0]))) if len(outputs) == 1 else None
    ds = datasets.load(options.data, graph.shape(inp), calib_spec=options.calib_data, classes=classes)
    if (options.min_accuracy_ratio is not None or options.max_accuracy_drop is not None) and ds.test.y is None:
        raise SnnCompileError(f"{options.data}: the fidelity gate needs labels ('y') in the evaluation data")
    return ds


def fidelity_gate(report: Report, options: Options) -> dict | None:
    """The gate's verdict (also stored in report.json as ``fidelity_gate``), or None when no
    gate was asked for. The reference accuracy is the ANN's, or the float SNN's for a model that
    was already spiking."""
    if options.min_accuracy_ratio is None and options.max_accuracy_drop is None:
        return None
    d = report.data
    snn = d["snn_accuracy"] if d["snn_accuracy"] is not None else d["float_snn_accuracy"]
    ref_name, ref = ("ANN", d["ann_accuracy"]) if d["ann_accuracy"] is not None else \
        ("float SNN", d["float_snn_accuracy"])
    verdict = {"reference": ref_name, "reference_accuracy": ref, "snn_accuracy": snn, "failures": []}
    if ref is None or snn is None:
        verdict["failures"].append("accuracy not available")
    else:
        if options.min_accuracy_ratio is not None:
            ratio = snn / ref if ref else 0.0
            verdict["min_accuracy_ratio"] = options.min_accuracy_ratio
            if ratio < options.min_accuracy_ratio:
                verdict["failures"].append(f"SNN/{ref_name} accuracy ratio {ratio:.4f} < {options.min_accuracy_ratio}")
        if options.max_accuracy_drop is not None:
            drop = 100 * (ref - snn)
            verdict["max_accuracy_drop"] = options.max_accuracy_drop
            if drop > options.max_accuracy_drop:
                paired = (d["fidelity"].get("accuracy_drop") if ref_name == "ANN" and d["snn_accuracy"] is not None
                          else None)
                interval = "" if not paired else ", 95 % interval {:.2f} … {:.2f} pp".format(*paired["interval_95_pp"])
                verdict["failures"].append(f"accuracy drop {drop:.2f} pp > {options.max_accuracy_drop} pp "
                                           f"({ref_name} {100 * ref:.2f} %, SNN {100 * snn:.2f} %{interval})")
    verdict["passed"] = not verdict["failures"]
    return verdict


def inspect_model(model: str | Path | Graph, options: Options = Options()) -> Inspection:
    """Compile ``model`` to Loihi 2 fixed point and place it on cores; writes nothing.

    Calibration runs only where asked for by name (``calibrate`` light or advanced): under
    ``auto`` the graph is the uncalibrated conversion (the same neurons, layers and cores; a
    calibration moves weights and biases, a few weights to or from 0) and ``calibration`` says
    what a compile would run and why. Advanced calibration of a deep network takes minutes
    (MobileNetV2 at 32×32: 4 min on 1,024 samples), which a look at the layers and cores need
    not wait for."""
    graph = prepare(model if isinstance(model, Graph) else load_model(model, options), options)
    ds = load_data(graph, options)
    auto = options.calibrate == "auto"
    run = dataclasses.replace(options, calibrate="none") if auto else options
    snn, calib = convert(graph, ds.train.x, run)
    note = None
    if auto:
        mode, why = resolve_calibration("auto", snn, graph, options.steps, len(calib))
        note = f"{mode} ({why})"
    fixed_graph, placement = fixed_point(snn, calib, run, graph)
    return Inspection(graph, snn, fixed_graph, placement, note)


def compile_model(model: str | Path | Graph, outdir: str | Path, options: Options = Options()) -> Compiled:
    """Compile ``model`` for ``options.target``, check it on the data, write outputs to ``outdir``.

    loihi2: fixed point, reference simulator on the test split, Lava on ``samples`` samples,
    model.nir; netx: the same with reset to zero and biases netx can hold, plus model.net;
    nir: the float SNN only (model.nir). Every target writes report.json and report.md.
    loihi2 and netx also place the fixed-point graph on ``chips`` Loihi 2 chips (ResourceError,
    before anything runs, when it does not fit) and report the resources.
    Outputs are written to a temporary folder first and moved into ``outdir`` only when everything
    succeeded: a failure leaves no half-written output.
    """
    if options.target not in TARGETS:
        raise SnnCompileError(f"unknown target '{options.target}'; choose one of {', '.join(TARGETS)}")
    for name in ("steps", "samples", "calib_samples"):
        if getattr(options, name) is not None and int(getattr(options, name)) < 1:
            raise SnnCompileError(f"Options.{name} must be at least 1, got {getattr(options, name)} "
                                  f"(the CLI's --{name.replace('_', '-')})")
    check_outdir(outdir, inputs=(model, options.data, options.calib_data))
    timings = {}
    # each phase's start, progress and seconds; log lines held back until the checks below pass
    phase = progress.phases(options.progress, timings, hold=True)
    with phase("load"):
        original = model if isinstance(model, Graph) else load_model(model, options)
        graph = prepare(original, options)
        ds = load_data(graph, options)

    with phase("convert"):
        snn, calib = convert(graph, ds.train.x, options)
        is_ann = not any(op.neuron for _, op in graph.nodes())
    # --steps T is T steps of evidence at the readout; every run lasts T + L (passes.latency)
    latency = latency_steps(snn)
    run_steps = options.steps + latency
    fixed_graph, placement = None, None
    if options.target != "nir":
        fixed_graph, placement = fixed_point(snn, calib, options, graph, timings)
        if options.strict:
            with phase("quantize check"):  # values clipped by quantization: fail before any run
                _check_overflows(fixed_graph, {})
    if not is_ann:  # a spiking model (NIR, trained SNN) read with the wrong dt is silent: refuse it
        from snncompile.sim import activity

        with phase("activity"):
            activity.check(snn, calib, run_steps, allow=options.allow_silent)

    with phase("ANN"):
        ann_logits = ann.forward(graph, ds.test.x).numpy() if is_ann else None
    with phase("float SNN"):
        # in batches, float32: the approximate path (spike counts when the last layer spikes)
        float_logits = float_snn.predict(snn, ds.test.x, run_steps, progress=options.progress)

    snn_logits, stats, comparison = None, {}, None
    if fixed_graph is not None:
        from snncompile.backends import reference

        with phase("reference"):
            snn_logits, stats = reference.predict(
                fixed_graph, ds.test.x, run_steps, device=options.device, progress=options.progress
            )
            if options.strict:
                _check_overflows(fixed_graph, stats)  # before Lava runs: fail fast

        with phase("Lava"):
            check = ds.test.x[: options.samples]
            encoded = encode_inputs(fixed_graph, check)
            ref_trace = reference.run(fixed_graph, check, run_steps, device=options.device).trace
            from snncompile.backends.lava import run_lava

            lava_trace = run_lava(fixed_graph, check, run_steps, encoded=encoded, progress=options.progress)
            comparison = compare(ref_trace, lava_trace)

    activations, weight_errors, sweep = {}, {}, None
    if fixed_graph is not None:
        from snncompile.report import diagnostics

        with phase("diagnostics"):
            weight_errors = diagnostics.weight_error(snn, fixed_graph)
            if is_ann and options.activation_samples:
                activations = diagnostics.activation_comparison(
                    graph, fixed_graph, ds.test.x[: options.activation_samples], run_steps,
                    device=options.device)
    if options.sweep_steps:
        with phase("sweep"):
            sweep = sweep_steps(graph, ds, options, options.sweep_steps,
                                            progress=options.progress)

    progress.release()
    real = snn.metadata["calib_samples"]["samples"]  # (the mixups convert added are not samples)
    report = build_report(
        options=options, float_graph=graph, snn_graph=snn, fixed_graph=fixed_graph,
        ann_accuracy=accuracy(ann_logits, ds.test.y) if is_ann else None,
        float_snn_accuracy=accuracy(float_logits, ds.test.y),
        snn_accuracy=None if snn_logits is None else accuracy(snn_logits, ds.test.y),
        ann_logits=ann_logits, snn_logits=None if snn_logits is None else snn_logits / options.steps,
        labels=ds.test.y, stats=stats, comparison=comparison, test_samples=len(ds.test), calib_samples=real,
        timings=timings, placement=placement, activations=activations, weight_errors=weight_errors,
        sweep=sweep, latency=(fixed_graph if fixed_graph is not None else snn).metadata.get("latency")
        or {"steps": latency}, run_steps=run_steps, data_info=ds.describe(real) | {
            "accuracies": "every accuracy is measured on the evaluation data; calibration (thresholds, "
                          "fixed-point ranges, bias/weight calibration) saw only the calibration data"},
    )
    # the calibration samples used and why (convert: 256, or 1,024 or 512 on a deep network under auto)
    report.data["calib_samples_choice"] = snn.metadata.get("calib_samples")
    report.data["fidelity_gate"] = fidelity_gate(report, options)
    report.data["delays"] = snn.metadata.get("delays") or {
        "equalized": False, "why": ("--equalize-delays off: paths of different depth keep their delays"
                                    if options.target != "netx" else "netx: no relays")}
    report.data["spikes"] = spikes_report(options, is_ann, report.data.get("layers") or [])
    if graph is not original:  # --maxpool avg changed the ANN: its accuracy before and after
        report.data["maxpool"] = {
            **graph.metadata.get("maxpool", {}),
            "ann_accuracy_before": accuracy(ann.forward(original, ds.test.x).numpy(), ds.test.y),
            "ann_accuracy_after": report.data.get("ann_accuracy"),
        }
    check_x = ds.test.x[: options.samples] if fixed_graph is not None else None
    with phase("write"):
        files = _write_outputs(Path(outdir), snn, fixed_graph, report, options, check_x=check_x,
                               run_steps=run_steps)
    report.data["timings_s"]["write_s"] = round(timings["write_s"], 3)  # for the summary; not in report.json
    return Compiled(graph, snn, fixed_graph, report, files, placement)


def _check_overflows(fixed_graph: Graph, stats: dict) -> None:
    """``strict``: any clipped or wrapped value (quantization or simulation) is an error."""
    from snncompile.errors import OverflowLimitError
    from snncompile.report.build import overflow_counts, overflow_summary

    found = overflow_summary(overflow_counts(fixed_graph, stats))
    if found:
        raise OverflowLimitError(f"--strict: values clipped or wrapped in {len(found)} layer(s): "
                                 f"{'; '.join(found)}; nothing written (lower the input range or the "
                                 "steps, or drop --strict to accept and count them)")


def check_outdir(outdir: str | Path, inputs: tuple = ()) -> Path:
    """Refuse, before any work, an output folder that cannot be written or replaced whole
    (``snncompile.runtime.outdir.check``: ``/``, links, files, read-only, holding the inputs or files
    snncompile did not write)."""
    from snncompile.runtime import outdir as folders

    return folders.check(outdir, tuple(p for p in inputs if isinstance(p, (str, Path))))


def _write_outputs(outdir: Path, snn: Graph, fixed_graph: Graph | None, report: Report, options: Options,
                   check_x: np.ndarray | None = None, run_steps: int | None = None):
    """Write every file into a staging folder beside ``outdir``, then put it in ``outdir``'s
    place whole (``snncompile.runtime.outdir.write``): no file of an earlier run stays beside the new
    ones, and on any failure or interrupt ``outdir`` is left as it was (or absent)."""
    from snncompile.runtime import outdir as folders
    from snncompile.backends import nir as nir_backend

    def fill(staging: Path) -> dict[str, Path]:
        files = {"nir": nir_backend.write(snn, staging / "model.nir", flavor=options.nir_flavor)}
        if options.target == "netx":
            from snncompile.backends import netx

            files["netx"] = netx.write(fixed_graph, staging / "model.net")
        if fixed_graph is not None and check_x is not None:
            # the run bundle: the Lava graph and the compared samples, replayable without the model
            from snncompile.backends import bundle

            files.update(bundle.write(fixed_graph, staging, steps=run_steps or options.steps, x=check_x))
            files["run_on_loihi"] = bundle.write_script(staging)
            files["lava_fastconv"] = staging / bundle.HELPER_NAME  # the runner's, beside it
        files.update(write_report(report, staging))
        return files

    return folders.write(check_outdir(outdir), fill)
