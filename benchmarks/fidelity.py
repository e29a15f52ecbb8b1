"""Fidelity of conversion with and without calibration: ANN vs Loihi 2 fixed-point SNN accuracy on
the digits test split, per model, time steps T and calibration mode. Prints a markdown table.

    .venv/bin/python benchmarks/fidelity.py [--models cnn resnet] [--steps 4 8 16 32 64] \
        [--threshold mse] [--calib-samples 1024] [--out benchmarks/results/fidelity.md]

Calibration modes (snncompile/passes/calibrate.py), all measured on the fixed-point graph:

- none: threshold balancing only;
- light: bias correction, computed on the fixed-point graph (what ``--calibrate light`` does);
- light (float): the same bias correction computed on the *float* SNN and then quantized, as the
  authors' code would do it: the difference to ``light`` is what calibrating in fixed point buys;
- advanced: weight calibration (Adam, weights rounded to the chip's format inside the loop),
  potential initialization and bias correction, all on the fixed-point graph;
- auto: what the compiler's default (``--calibrate auto``, ``compiler.resolve_calibration``)
  chooses for the model and T; the row says which it ran.

Calibration uses the digits train split (``--calib-samples`` of it); accuracy is measured on the
test split. The models are the bundled examples (examples/train_digits_cnn.py writes them).

Each row also has the float SNN (the same conversion, no quantization, the chip's delays) and the
peer: SpikingJelly 2.0's ``ann2snn`` (``RateCodingRecipe``: Max, 99.9 %, and channel-wise with
half threshold, float, no synaptic delay) on the same trained weights, calibration samples and
steps; its best mode per model and T beside ours with the difference. ``--gap`` adds the
fixed-point-vs-float breakdown: the float SNN with one quantized quantity (weights, thresholds,
biases, initial potentials) put back from the fixed-point graph at a time.

Runs last T + L steps (``passes.latency``: T steps of evidence at the readout) for our graphs; the
peer, without delays, runs T.

``--timing`` adds, per row, how far each calibrated layer's spike counts are from its rate model's
count from the same delivered inputs (``passes.calibrate.layer_timing``): what the spike timing costs,
layer by layer. ``--ideal`` adds, per conversion, the accuracy of its ideal T-step rate model (``ideal_rates``: each
IF layer's spike count for a constant input, no timing): what T levels per neuron alone cost,
beside the float SNN, which adds the spike timing. ``--unseen`` adds, per row, SNN − ANN with its
paired standard error on the test split and on the train samples no calibration saw, both sets
as a 95 % interval, and ours − SpikingJelly there: what one 360-sample test split can and cannot
resolve. ``--model-file KEY=PATH`` runs a benchmark
model's rows on another trained instance of it (examples/train_*.py on another machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from snncompile.api import accuracy, load_model
from snncompile.compiler import (DEFAULT_CALIB_SAMPLES, Options, convert, mixup_samples, more_samples,
                                 resolve_calibration)
from snncompile.backends import reference
from snncompile.data import load
from snncompile.ir.ops import IF, Conv2d, Dense, FixedConv2d, FixedDense, effective_weight
from snncompile.passes import pipeline
from snncompile.passes.calibrate import channel_gain, channel_mean, layer_timing
from snncompile.passes.quantize import Quantize
from snncompile.report.build import paired_difference, paired_interval
from snncompile.sim import snn as float_snn
from snncompile.sim.ann import evaluate, forward

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"cnn": "examples/digits_cnn.pt2", "resnet": "examples/digits_resnet.pt2", "vgg": "examples/digits_vgg.pt2",
          "mlp": "examples/digits_mlp.pt2", "resnet20": "examples/digits32_resnet20.pt2",
          "mobilenetv2": "examples/digits32_mobilenetv2.pt2"}
DIGITS32 = ("resnet20", "mobilenetv2")  # trained on digits upsampled to 32×32×3
# SpikingJelly 2.0's RateCodingRecipe converts nn.ReLU modules only (rate_coding.py
# ``_matches_relu``: ``type(...) is nn.ReLU``): MobileNetV2's ReLU6 would stay an analog
# activation, so it has no peer figure
NO_PEER = {"mobilenetv2": "SpikingJelly's ann2snn converts nn.ReLU only; MobileNetV2's ReLU6 would stay analog"}
PEER_MODES = (("Max", False, False), ("99.9%", False, False), ("99.9%", True, True), ("Max", True, True))
MODES = ("none", "light (float)", "light", "advanced", "auto")
CALIBRATE_OF = {"light (float)": "light"}  # the compiler's --calibrate whose conversion a mode uses


def float_bias_correction(ann, snn, data, steps):
    """Bias correction on the float SNN (the authors' way), layer by layer; quantized afterwards."""
    layers = [n for n in snn.find(IF) if n in ann]
    targets = evaluate(ann, data, upto=set(layers))
    for layer in layers:
        run = float_snn.simulate(snn, data, steps, delay=1, record=True)
        theta = np.max(snn.op(layer).threshold)
        rate = run.spikes[layer].mean(axis=1) * theta * channel_gain(snn, layer)  # in the ANN's units
        err = channel_mean(rate - targets[layer].numpy()) / channel_gain(snn, layer)
        synapse = next(s for s in snn.inputs(layer) if isinstance(snn.op(s), (Dense, Conv2d)))
        op = snn.op(synapse)
        per_channel = np.broadcast_to(err, snn.shape(layer)).reshape(op.weight.shape[0], -1)[:, 0]
        bias = np.zeros(op.weight.shape[0]) if op.bias is None else op.bias
        builder = snn.edit()
        builder.replace(synapse, dataclasses.replace(op, bias=bias - per_channel))
        snn = builder.build()
    return snn


def run_mode(mode, ann, snn, calib, steps, **options):
    """The fixed-point graph for one calibration mode (the compiler's own quantize, delay
    compensation and calibration, with any further ``Options`` fields), and the seconds
    calibration took."""
    from snncompile.compiler import Options, fixed_point

    if mode == "light (float)":
        t0 = time.perf_counter()
        fixed = pipeline.run(float_bias_correction(ann, snn, calib, steps), (Quantize(data=calib, steps=steps),))
        return fixed, time.perf_counter() - t0
    fixed, _ = fixed_point(snn, calib, Options(steps=steps, calibrate=mode, progress=False, **options), ann)
    return fixed, fixed.metadata["calibration"]["seconds"]


def splits(key, graph, train_labels=False):
    """(train x, test x, test y) of the data ``key``'s model was trained on: digits, or for
    DIGITS32 digits upsampled to 32×32×3 (tests/zoo/models.py), the same split; with
    ``train_labels``, (train x, train y, test x, test y)."""
    if key in DIGITS32:
        sys.path.insert(0, str(ROOT))
        from tests.zoo.models import digits32

        xtr, ytr, xte, yte = digits32()
    else:
        ds = load("digits", graph.shape(graph.input_names()[0]))
        xtr, ytr, xte, yte = ds.train.x, ds.train.y, ds.test.x, ds.test.y
    return (xtr, ytr, xte, yte) if train_labels else (xtr, xte, yte)


def total_steps(snn, steps):
    try:
        from snncompile.passes.latency import latency_steps
    except ImportError:  # before the latency contract: T steps in all
        return steps
    return steps + latency_steps(snn)


MODEL_FILES: dict[str, Path] = {}  # --model-file: another trained instance of a benchmark model


def model_path(key) -> Path:
    """The trained model file of ``key``: the bundled one, or the one --model-file gave."""
    return MODEL_FILES.get(key, ROOT / MODELS[key])


def ideal_rates(snn, x, steps) -> np.ndarray:
    """The float SNN's output with every IF layer replaced by its ideal rate model over ``steps``
    steps: for a constant input current c per step, clip(floor((steps·c + v_init)/θ), 0, steps)
    spikes, passed on as a rate (spikes / steps); relays (reset to zero, fed by one 0/1 spike
    train) pass their input on. No spike timing, no delays: what ``steps`` levels per neuron
    alone cost, against the float SNN (which adds the timing) and the ANN."""
    from snncompile.ir.ops import IF, Add, Concat, Input, Integrator, Reset
    from snncompile.sim.ann import UNARY

    values = {}
    with torch.no_grad():
        for name, op in snn.nodes():
            args = [values[i] for i in snn.inputs(name)]
            total = (args[0] if len(args) == 1 else torch.stack(args).sum(0)) if args else None
            if isinstance(op, Input):
                values[name] = torch.as_tensor(x, dtype=torch.float64)
            elif isinstance(op, IF) and op.reset is Reset.ZERO:
                values[name] = torch.clamp(total, 0, 1)
            elif isinstance(op, IF):
                shape = snn.shape(name)
                theta = torch.as_tensor(np.broadcast_to(op.threshold, shape).copy(), dtype=torch.float64)
                v0 = torch.as_tensor(np.broadcast_to(op.v_init, shape).copy(), dtype=torch.float64)
                values[name] = torch.clamp(torch.floor((steps * total + v0) / theta), 0, steps) / steps
            elif isinstance(op, (Integrator, Add)):
                values[name] = total
            elif isinstance(op, Concat):
                values[name] = torch.cat(args, dim=1)
            elif type(op) in UNARY:
                values[name] = UNARY[type(op)](op, args[0])
            elif len(args) == 1:  # the Output
                values[name] = args[0]
            else:
                raise ValueError(f"node '{name}': {op.kind.value} has no ideal rate model here")
    (out,) = snn.output_names()
    return values[out].numpy()


def torch_module(key):
    """The trained nn.Module of a bundled model (its architecture from examples/train_digits_cnn.py)."""
    if key == "mobilenetv2":  # examples/train_mobilenetv2.py: torchvision's own constructor
        sys.path.insert(0, str(ROOT / "examples"))
        from train_mobilenetv2 import make_mobilenetv2

        module = make_mobilenetv2()
        module.load_state_dict(torch.export.load(model_path(key)).state_dict)
        return module.eval()
    if key == "resnet20":  # examples/train_resnet20.py: the test zoo's CIFAR ResNet-20
        sys.path.insert(0, str(ROOT))
        from tests.zoo.models import ResNet20

        module = ResNet20()
        module.load_state_dict(torch.export.load(model_path(key)).state_dict)
        return module.eval()
    sys.path.insert(0, str(ROOT / "examples"))
    import train_digits_cnn as train

    module = {"cnn": train.make_cnn, "vgg": train.make_vgg, "mlp": train.make_mlp, "resnet": train.ResNet}[key]()
    module.load_state_dict(torch.export.load(model_path(key)).state_dict)
    return module.eval()


def spikingjelly_modes(key, calib, x, y, steps_list, predictions=False):
    """SpikingJelly 2.0 ann2snn per T and mode of PEER_MODES: {T: {mode: accuracy}}; with
    ``predictions``, {T: {mode: predicted classes}} (``y`` unused)."""
    import contextlib
    import io

    from spikingjelly.activation_based import ann2snn, functional

    accs = {steps: {} for steps in steps_list}
    data = torch.tensor(calib, dtype=torch.float32)
    loader = [(data[i:i + 64], None) for i in range(0, len(data), 64)]
    xt = torch.tensor(x, dtype=torch.float32)
    for mode, channel_wise, half in PEER_MODES:
        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
            recipe = ann2snn.RateCodingRecipe(loader, mode=mode, channel_wise=channel_wise, half_threshold=half)
            snn = ann2snn.Converter(recipe).convert(torch_module(key))
        name = f"{mode}{' channel-wise θ/2' if channel_wise else ''}"
        for steps in steps_list:
            functional.reset_net(snn)
            out = 0
            with torch.no_grad():
                for _ in range(steps):
                    out = out + snn(xt)
            classes = out.argmax(1).numpy()
            accs[steps][name] = classes if predictions else float(np.mean(classes == y))
    return accs


def spikingjelly_best(key, calib, x, y, steps_list):
    """SpikingJelly 2.0 ann2snn per T: {T: (best accuracy, its mode)} over PEER_MODES (the first
    of equals)."""
    best = {}
    for steps, modes in spikingjelly_modes(key, calib, x, y, steps_list).items():
        name = max(modes, key=lambda m: modes[m])
        best[steps] = (modes[name], name)
    return best


def paired(ours, theirs, y) -> tuple[float, float]:
    """``report.build.paired_difference`` in pp: mean and standard error of the per-sample
    difference in correctness, ours − theirs, on the same samples."""
    mean, se = paired_difference(ours, theirs, y)
    return 100 * mean, 100 * se


def _pm(mean_se: tuple[float, float]) -> str:
    return f"{mean_se[0]:+.2f} ± {mean_se[1]:.2f}"


def mode_conversion(graph, train, options, plain=None):
    """``compiler.convert(graph, train, options)``: the float SNN and calibration samples the
    compiler gives ``options.calibrate``. ``plain`` is convert's result for --calibrate none with
    the same options (the first 256 or --calib-samples samples, nothing added); it is returned
    as it is where neither ``more_samples`` nor ``mixup_samples`` has anything to say for this
    mode, so that the modes sharing one conversion (none and light always) convert once (a
    MobileNetV2 conversion takes 50-80 s)."""
    if plain is not None:
        snn = plain[0]
        if not any(more_samples(graph, snn, len(train), options)) and not any(mixup_samples(graph, snn, options)):
            return plain
    return convert(graph, train, options)


def subset_conversion(graph, calib, options, plain=None):
    """``mode_conversion`` of one calibration subset ``calib`` as the whole calibration set (the
    subset, or with mixups where the compiler adds them: ``options.calib_samples`` None stands
    for a subset of the default size)."""
    if options.calib_samples is None and len(calib) != DEFAULT_CALIB_SAMPLES:
        options = dataclasses.replace(options, calib_samples=len(calib))
    return mode_conversion(graph, calib, options, plain)


def spread(args) -> list[str]:
    """Accuracy over ``args.calib_subsets`` disjoint calibration subsets of the train split (the
    same test split): ours per calibration mode and SpikingJelly per mode, mean and range, and
    SpikingJelly's best mode picked on the test split per subset (what the main table's `SJ best`
    is). One calibration subset's numbers move by single test samples; this says by how many."""
    lines = ["", f"Spread over {args.calib_subsets} disjoint calibration subsets of {args.calib_samples} train "
             "samples each (same test split): mean accuracy % (min – max).", "",
             "| model | T | ANN | " + " | ".join(f"ours {m}" for m in args.modes) + " | SJ "
             + " | SJ ".join(f"{m}{' channel-wise θ/2' if cw else ''}" for m, cw, _ in PEER_MODES)
             + " | SJ best on test, per subset |", "|---" * (4 + len(args.modes) + len(PEER_MODES)) + "|"]
    print("\n".join(lines), flush=True)

    def cell(values):
        v = 100 * np.asarray(values)
        return f"{v.mean():.2f} ({v.min():.2f} – {v.max():.2f})"

    for key in args.models:
        graph = load_model(model_path(key))
        xtr, x, y = splits(key, graph)
        ann_acc = accuracy(forward(graph, x).numpy(), y)
        ours = {(steps, m): [] for steps in args.steps for m in args.modes}
        peer = {steps: [] for steps in args.steps}
        for k in range(args.calib_subsets):
            calib = xtr[k * args.calib_samples:(k + 1) * args.calib_samples]
            peer_k = spikingjelly_modes(key, calib, x, y, args.steps)
            for steps in args.steps:
                peer[steps].append(peer_k[steps])
                options = Options(steps=steps, threshold=args.threshold, equalize_delays=args.equalize_delays)
                plain = subset_conversion(graph, calib, dataclasses.replace(options, calibrate="none"))
                for mode in args.modes:
                    # the compiler's conversion of this subset for this --calibrate (its mixups where
                    # compiler.mixup_samples adds them)
                    snn, mode_calib = subset_conversion(graph, calib, dataclasses.replace(
                        options, calibrate=CALIBRATE_OF.get(mode, mode)), plain)
                    fixed, _ = run_mode(mode, graph, snn, mode_calib, steps)
                    logits, _ = reference.predict(fixed, x, total_steps(snn, steps), device="cpu", progress=False)
                    ours[steps, mode].append(accuracy(logits, y))
        for steps in args.steps:
            names = list(peer[steps][0])
            row = (f"| {key} | {steps} | {100 * ann_acc:.2f} | " + " | ".join(cell(ours[steps, m]) for m in args.modes)
                   + " | " + " | ".join(cell([p[n] for p in peer[steps]]) for n in names)
                   + f" | {cell([max(p.values()) for p in peer[steps]])} |")
            lines.append(row)
            print(row, flush=True)
    return lines


def dequantized(snn, fixed, parts):
    """The float SNN with ``parts`` (weights, thresholds, biases, v_init) taken from the fixed graph."""
    from snncompile.ir.ops import BiasEncoder, LoihiNeuron

    b = snn.edit()
    for layer in fixed.find(LoihiNeuron):
        op = fixed.op(layer)
        if layer not in snn:
            continue
        unit = op.v_scale / 64  # integer weight units per float unit
        synapses = [s for s in fixed.inputs(layer) if not isinstance(fixed.op(s), BiasEncoder)]
        if "weights" in parts:
            for s in synapses:
                b.replace(s, dataclasses.replace(b.op(s), weight=effective_weight(fixed.op(s)) / unit))
        new = {}
        if "thresholds" in parts and not op.readout:
            new["threshold"] = np.full(op.vth.shape, float(op.vth.max()) / unit)
        if "v_init" in parts:
            new["v_init"] = op.v_init / op.v_scale
        if "biases" in parts and synapses:
            bias = op.bias_format.decode(op.bias_mant, op.bias_exp) / op.v_scale
            per_channel = bias.reshape(bias.shape[0], -1)[:, 0] if bias.ndim == 3 else bias
            for s in synapses:
                b.replace(s, dataclasses.replace(b.op(s), bias=per_channel if s == synapses[0] else None))
        if new:
            b.replace(layer, dataclasses.replace(b.op(layer), **new))
    return b.build()


def perturbed(snn, fixed, rng):
    """The float SNN with every synapse's weights moved by an independent uniform draw in
    ±½ of its fixed-point weight step (in float units): a perturbation as large as the
    quantization's rounding, in random directions. Its accuracy spread over draws is how much
    sub-step weight changes alone move the float SNN."""
    from snncompile.ir.ops import LoihiNeuron

    b = snn.edit()
    for layer in fixed.find(LoihiNeuron):
        op = fixed.op(layer)
        if layer not in snn:
            continue
        unit = op.v_scale / 64
        for s in fixed.inputs(layer):
            fop = fixed.op(s)
            if s not in snn or not isinstance(fop, (FixedConv2d, FixedDense)):
                continue
            step = fop.weight_format.step * 2.0 ** int(np.max(fop.weight_exp)) / unit
            w = b.op(s).weight
            b.replace(s, dataclasses.replace(b.op(s), weight=w + rng.uniform(-step / 2, step / 2, w.shape)))
    return b.build()


GAP_PARTS = (("weights",), ("thresholds",), ("biases",), ("v_init",), ("weights", "thresholds", "biases", "v_init"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["cnn", "resnet", "vgg"], choices=sorted(MODELS))
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--modes", nargs="+", default=["none", "light", "advanced"], choices=MODES)
    p.add_argument("--threshold", default="mse", choices=["max", "percentile", "mse"])
    p.add_argument("--calib-samples", type=int, default=None,
                   help="calibration samples (default: the compiler's, 256, or 512 where compiler.convert "
                   "gives a deep network more)")
    p.add_argument("--test-samples", type=int, default=None, help="the first N test samples (default: all)")
    p.add_argument("--no-peer", action="store_true", help="skip SpikingJelly")
    p.add_argument("--spikes", default="auto", choices=["auto", "signed", "binary"],
                   help="the converted neurons' spikes (compiler.spike_mode; auto: signed, as the compiler's default)")
    p.add_argument("--equalize-delays", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
                   help="relay layers on the shorter paths (passes.equalize_delays): auto (the compiler's "
                   "default: relayed where the float SNN is closer to the ANN on the calibration data), "
                   "on, off")
    p.add_argument("--gap", action="store_true", help="also print the fixed-vs-float breakdown (mode none); with "
                   "--unseen, also fixed − float paired per sample on the test and the unseen samples")
    p.add_argument("--noise", type=int, default=0, metavar="K",
                   help="with --gap: also the float SNN's accuracy range over K draws of ±½-step weight noise")
    p.add_argument("--calib-subsets", type=int, default=0, metavar="K",
                   help="instead of the main table: the spread over K disjoint calibration subsets (digits models)")
    p.add_argument("--out", default=None, help="also write the tables (with a header) to this file")
    p.add_argument("--model-file", action="append", default=[], metavar="KEY=PATH",
                   help="another trained instance of a benchmark model (same architecture and data), "
                   "e.g. mobilenetv2=/tmp/m.pt2 from examples/train_mobilenetv2.py; repeatable")
    p.add_argument("--timing", action="store_true",
                   help="also print, per row, how each calibrated layer's spike counts on the test split differ "
                        "from its rate model's count from the same delivered inputs (passes.calibrate.layer_timing)")
    p.add_argument("--unseen", action="store_true",
                   help="also print, per row, SNN − ANN on the test split and on the train samples no calibration "
                        "saw (those after the calibration samples), each ± its standard error (paired per sample), "
                        "both splits together as a 95 %% interval, and ours − SpikingJelly's test-best mode on the "
                        "unseen samples")
    p.add_argument("--ideal", action="store_true",
                   help="also print, per conversion, the accuracy of its ideal T-step rate model (no spike "
                   "timing: what T levels per neuron alone cost)")
    args = p.parse_args()
    for item in args.model_file:
        key, sep, path = item.partition("=")
        if not sep or key not in MODELS or not Path(path).is_file():
            p.error(f"--model-file {item}: expected KEY=PATH with KEY one of {', '.join(sorted(MODELS))} "
                    "and PATH an existing file")
        MODEL_FILES[key] = Path(path)
    if args.calib_subsets:
        args.calib_samples = args.calib_samples or DEFAULT_CALIB_SAMPLES
        lines = spread(args)
        if args.out:
            command = "python benchmarks/fidelity.py " + " ".join(sys.argv[1:])
            Path(args.out).write_text(f"Produced by `{command}`.\n" + "\n".join(lines) + "\n")
        return

    lines = [
        "Digits test split; calibration on the first "
        + (f"{args.calib_samples} samples" if args.calib_samples else
           "256 samples (the compiler's default; 512 where it gives a deep network more: noted per row)")
        + " of the train split; "
        f"threshold balancing `{args.threshold}` with the defaults (θ/2 initial potential, per-channel "
        "balancing); accuracy of the Loihi 2 fixed-point SNN on the exact reference simulator "
        "(bit-identical to Lava fixed_pt). `float`: the float SNN of the same conversion. `SJ best`: "
        "SpikingJelly 2.0 ann2snn's best mode (float, no delay) at the same T. `calib s`: wall time of "
        f"the calibration alone, {torch.get_num_threads()} torch thread(s).",
        "",
        "| model | ANN | T | float SNN | calibrate | SNN (fixed point) | SNN − ANN (pp) | SJ best | ours − SJ (pp) | calib s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    gap_lines = ["", "Fixed point vs float SNN (calibrate none), one quantized quantity at a time:", "",
                 "| model | T | float | " + " | ".join("+".join(g) if len(g) == 1 else "all" for g in GAP_PARTS)
                 + " | fixed |" + (f" float, ±½-step weight noise ({args.noise} draws) |" if args.noise else ""),
                 "|---" * (len(GAP_PARTS) + 4 + bool(args.noise)) + "|"]
    ideal_lines = ["", "The ideal T-step rate model of each conversion (`ideal_rates`: no spike timing), "
                   "beside its float SNN and the ANN, test split:", "",
                   "| model | T | calibration samples | ANN | ideal rate model | float SNN |", "|---|---|---|---|---|---|"]
    timing_lines = ["", "Spike timing per row (`--timing`, `passes.calibrate.layer_timing` on the test split): "
                    "per calibrated layer, T steps after its input arrives, the share of (sample, neuron) pairs whose "
                    "count differs from the rate model's clamp(⌊(v − 1) / (vth·64)⌋, 0, T) of the same delivered "
                    "inputs, above (more) and below it (fewer), and the mean difference in spikes; means over the "
                    "layers, and the layer furthest off:", "",
                    "| model | T | calibrate | layers | off | more | fewer | mean difference (spikes) | mean count | "
                    "layer most off: off, mean difference |", "|---|---|---|---|---|---|---|---|---|---|"]
    unseen_lines = ["", "Accuracy differences with their standard errors (`--unseen`): per sample, correct (1) or "
                    "not (0), ours less the ANN's (or SpikingJelly's), on the test split and on the train samples "
                    "no calibration saw (those after the calibration samples; the ANNs were trained on them, so "
                    "there the difference is nearly all disagreement with the ANN); ± one standard error of the "
                    "mean difference; `both`: the two sets together, mean ± 1.96 standard errors (±3/n where no "
                    "sample differs, the rule of three). `SJ, unseen`: "
                    "SpikingJelly's mode that was best on the test split at that T, on the same unseen samples.", "",
                    "| model | T | calibrate | test: SNN − ANN (pp) | unseen samples | unseen: SNN − ANN (pp) | "
                    "unseen: agreement with the ANN | both: SNN − ANN, 95 % interval (pp) | SJ, unseen: ours − SJ (pp) |",
                    "|---|---|---|---|---|---|---|---|---|"]
    quant_lines = ["", "Fixed point − float SNN, paired per sample (`--gap --unseen`, calibrate none: the same "
                   "conversion, T and delays): correct (1) or not (0), the fixed point's less the float SNN's, on the "
                   "test split and on the train samples after the calibration samples, ± one standard error; `both`: "
                   "the two sets together, mean ± 1.96 standard errors (±3/n where no sample differs).", "",
                   "| model | T | test: fixed − float (pp) | unseen samples | unseen: fixed − float (pp) | "
                   "unseen: fixed and float agree | both: fixed − float, 95 % interval (pp) |",
                   "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for key in args.models:
        graph = load_model(model_path(key))
        if key in MODEL_FILES:
            print(f"  ({key}: the model in {MODEL_FILES[key]}, not the bundled {MODELS[key]})", flush=True)
        xtr, ytr, xte, yte = splits(key, graph, train_labels=True)
        x, y = xte[: args.test_samples], yte[: args.test_samples]
        ann_pred = forward(graph, x).numpy().argmax(1)
        ann_acc = float(np.mean(ann_pred == y))
        peer_calib = xtr[: args.calib_samples or DEFAULT_CALIB_SAMPLES]
        peer = {} if args.no_peer or key in NO_PEER else spikingjelly_best(key, peer_calib, x, y, args.steps)
        unseen_ann = {}  # calibration samples n -> the ANN's classes on train samples n:
        peer_unseen = None  # SpikingJelly's classes on the train samples its calibration did not see
        if key in NO_PEER and not args.no_peer:
            print(f"  ({key}: no SpikingJelly figure: {NO_PEER[key]})", flush=True)
        for steps in args.steps:
            conversions = {}  # (samples, mixups) -> (snn, calib, float accuracy): modes given the same samples
            options = Options(steps=steps, threshold=args.threshold, equalize_delays=args.equalize_delays,
                              calib_samples=args.calib_samples, spikes=args.spikes)
            plain = convert(graph, xtr, dataclasses.replace(options, calibrate="none"))
            for mode in args.modes:
                # the compiler's conversion for this --calibrate (compiler.convert), so that
                # --equalize-delays auto, the calibration sample count and the mixups choose as they do
                snn, calib = mode_conversion(graph, xtr, dataclasses.replace(
                    options, calibrate=CALIBRATE_OF.get(mode, mode)), plain)
                choice = snn.metadata["calib_samples"]
                samples = (choice["samples"], choice.get("mixups", 0))
                if samples not in conversions:
                    # not the count asked for: the compiler's rule gave more, or mixups (or the train
                    # split has fewer)
                    if choice.get("why"):
                        print(f"  ({key}, T={steps}, {mode}: {samples[0]} calibration samples"
                              f"{f' + {samples[1]} mixups' if samples[1] else ''}: {choice['why']})", flush=True)
                    relays = snn.metadata.get("delays", {})
                    if relays.get("equalized") and relays.get("relay_neurons"):
                        print(f"  ({key}, T={steps}: relayed, {relays['relay_neurons']:,} relay neurons)", flush=True)
                    picked, why = resolve_calibration("auto", snn, graph, steps, len(calib))
                    print(f"  ({key}, T={steps}: --calibrate auto picks {picked}: {why})", flush=True)
                    run = float_snn.simulate(snn, x, total_steps(snn, steps), delay=1)
                    float_scores = next(iter(run.scores().values()))
                    conversions[samples] = snn, calib, accuracy(float_scores, y), np.asarray(float_scores).argmax(1)
                    if args.ideal:
                        row = (f"| {key} | {steps} | {samples[0]}{f' + {samples[1]} mixups' if samples[1] else ''} | "
                               f"{100 * ann_acc:.2f} % | {100 * accuracy(ideal_rates(snn, x, steps), y):.2f} % | "
                               f"{100 * conversions[samples][2]:.2f} % |")
                        ideal_lines.append(row)
                        print(f"  (ideal rate model: {row})", flush=True)
                snn, calib, float_acc, float_pred = conversions[samples]
                ours_u = None  # (--unseen) the fixed point's classes on the unseen samples
                run_steps = total_steps(snn, steps)
                fixed, seconds = run_mode(mode, graph, snn, calib, steps)
                logits, _ = reference.predict(fixed, x, run_steps, device="cpu", progress=False)
                acc = accuracy(logits, y)
                if mode == "auto":  # what the default chose
                    mode = f"auto ({fixed.metadata['calibration']['mode']})"
                if samples[0] != (args.calib_samples or DEFAULT_CALIB_SAMPLES):
                    mode += f", {samples[0]} samples"
                if samples[1]:
                    mode += f", + {samples[1]} mixups"
                sj = peer.get(steps)
                sj_cells = (f"{100 * sj[0]:.2f} % ({sj[1]}) | {100 * (acc - sj[0]):+.2f}" if sj else "— | —")
                row = (f"| {key} | {100 * ann_acc:.2f} % | {steps} | {100 * float_acc:.2f} % | {mode} | "
                       f"{100 * acc:.2f} % | {100 * (acc - ann_acc):+.2f} | {sj_cells} | {seconds:.1f} |")
                lines.append(row)
                print(row, flush=True)
                if args.timing:
                    timing = layer_timing(fixed, graph, x, steps)
                    worst = max(timing, key=lambda k: timing[k]["off"])

                    def mean(field):
                        return float(np.mean([v[field] for v in timing.values()]))

                    row = (f"| {key} | {steps} | {mode} | {len(timing)} | {100 * mean('off'):.1f} % | "
                           f"{100 * mean('more'):.1f} % | {100 * mean('fewer'):.1f} % | {mean('mean'):+.3f} | "
                           f"{mean('count'):.2f} | {worst}: {100 * timing[worst]['off']:.1f} %, "
                           f"{timing[worst]['mean']:+.3f} |")
                    timing_lines.append(row)
                    print(f"  (timing: {row})", flush=True)
                if args.unseen:
                    n = samples[0]
                    xu, yu = xtr[n:], ytr[n:]
                    test = paired(logits.argmax(1), ann_pred, y)
                    if len(xu):
                        if n not in unseen_ann:
                            unseen_ann[n] = forward(graph, xu).numpy().argmax(1)
                        ours_u, _ = reference.predict(fixed, xu, run_steps, device="cpu", progress=False)
                        ours_u = ours_u.argmax(1)
                        unseen = paired(ours_u, unseen_ann[n], yu)
                        *_, low, high = paired_interval(np.concatenate([logits.argmax(1), ours_u]),
                                                        np.concatenate([ann_pred, unseen_ann[n]]), np.concatenate([y, yu]))
                        cells = (f"{len(xu)} | {_pm(unseen)} | {100 * np.mean(ours_u == unseen_ann[n]):.2f} % | "
                                 f"{100 * low:+.2f} … {100 * high:+.2f} |")
                        sj_unseen = "—"
                        if sj and n == len(peer_calib):
                            if peer_unseen is None:
                                peer_unseen = spikingjelly_modes(key, peer_calib, xu, None, args.steps, predictions=True)
                            sj_unseen = f"{_pm(paired(ours_u, peer_unseen[steps][sj[1]], yu))} ({sj[1]})"
                        cells += f" {sj_unseen} |"
                    else:
                        cells = "0 | — | — | — | — |"
                    row = f"| {key} | {steps} | {mode} | {_pm(test)} | " + cells
                    unseen_lines.append(row)
                    print(f"  (unseen: {row})", flush=True)
                if args.gap and mode == "none":
                    cells = []
                    # (not ``plain``: that is the calibrate-none conversion the later modes reuse)
                    quantized = pipeline.run(snn, (Quantize(data=calib, steps=steps),))  # no delay compensation
                    for parts in GAP_PARTS:
                        run = float_snn.simulate(dequantized(snn, quantized, parts), x, run_steps, delay=1)
                        cells.append(f"{100 * accuracy(next(iter(run.scores().values())), y):.2f}")
                    noise = ""
                    if args.noise:
                        rng = np.random.default_rng(0)
                        accs = [accuracy(next(iter(float_snn.simulate(perturbed(snn, quantized, rng), x, run_steps,
                                                                      delay=1).scores().values())), y)
                                for _ in range(args.noise)]
                        noise = f" {100 * min(accs):.2f} – {100 * max(accs):.2f} (mean {100 * np.mean(accs):.2f}) |"
                    gap_lines.append(f"| {key} | {steps} | {100 * float_acc:.2f} | " + " | ".join(cells)
                                     + f" | {100 * acc:.2f} |" + noise)
                    if args.unseen:
                        # the quantization's own loss, paired per sample: the fixed point's class less
                        # the float SNN's (same conversion, same T and delays), correct 1 or not 0
                        test = paired(logits.argmax(1), float_pred, y)
                        cells = "0 | — | — | — |"
                        if ours_u is not None:
                            float_u = np.asarray(next(iter(float_snn.simulate(
                                snn, xu, run_steps, delay=1).scores().values()))).argmax(1)
                            *_, low, high = paired_interval(np.concatenate([logits.argmax(1), ours_u]),
                                                            np.concatenate([float_pred, float_u]), np.concatenate([y, yu]))
                            cells = (f"{len(xu)} | {_pm(paired(ours_u, float_u, yu))} | "
                                     f"{100 * np.mean(ours_u == float_u):.2f} % | {100 * low:+.2f} … {100 * high:+.2f} |")
                        row = f"| {key} | {steps} | {_pm(test)} | " + cells
                        quant_lines.append(row)
                        print(f"  (fixed − float: {row})", flush=True)
    if args.gap:
        print("\n".join(gap_lines), flush=True)
        lines += gap_lines
    if args.gap and args.unseen:
        print("\n".join(quant_lines), flush=True)
        lines += quant_lines
    if args.ideal:
        print("\n".join(ideal_lines), flush=True)
        lines += ideal_lines
    if args.timing:
        print("\n".join(timing_lines), flush=True)
        lines += timing_lines
    if args.unseen:
        print("\n".join(unseen_lines), flush=True)
        lines += unseen_lines
    if args.out:
        command = "python benchmarks/fidelity.py " + " ".join(sys.argv[1:])
        Path(args.out).write_text(f"# Fidelity: conversion and calibration in Loihi 2 fixed point\n\nProduced by "
                                  f"`{command}`.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
