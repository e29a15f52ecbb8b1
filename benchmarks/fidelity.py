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
  potential initialization and bias correction, all on the fixed-point graph.

Calibration uses the digits train split (``--calib-samples`` of it); accuracy is measured on the
test split. The models are the bundled examples (examples/train_digits_cnn.py writes them).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from snncompile.api import accuracy, load_model
from snncompile.backends import reference
from snncompile.data import load
from snncompile.ir.ops import IF, Conv2d, Dense
from snncompile.passes import pipeline
from snncompile.passes.calibrate import AdvancedCalibration, BiasCorrection, channel_mean
from snncompile.passes.quantize import Quantize
from snncompile.sim import snn as float_snn
from snncompile.sim.ann import evaluate, forward

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"cnn": "examples/digits_cnn.pt2", "resnet": "examples/digits_resnet.pt2", "mlp": "examples/digits_mlp.pt2"}
MODES = ("none", "light (float)", "light", "advanced")


def float_bias_correction(ann, snn, data, steps):
    """Bias correction on the float SNN (the authors' way), layer by layer; quantized afterwards."""
    layers = [n for n in snn.find(IF) if n in ann]
    targets = evaluate(ann, data, upto=set(layers))
    for layer in layers:
        run = float_snn.simulate(snn, data, steps, delay=1, record=True)
        theta = np.max(snn.op(layer).threshold)
        err = channel_mean(run.spikes[layer].mean(axis=1) * theta - targets[layer].numpy())
        synapse = next(s for s in snn.inputs(layer) if isinstance(snn.op(s), (Dense, Conv2d)))
        op = snn.op(synapse)
        per_channel = np.broadcast_to(err, snn.shape(layer)).reshape(op.weight.shape[0], -1)[:, 0]
        bias = np.zeros(op.weight.shape[0]) if op.bias is None else op.bias
        builder = snn.edit()
        builder.replace(synapse, dataclasses.replace(op, bias=bias - per_channel))
        snn = builder.build()
    return snn


def run_mode(mode, ann, snn, calib, steps):
    """The fixed-point graph for one calibration mode, and the seconds calibration took."""
    quantize = Quantize(data=calib, steps=steps)
    t0 = time.perf_counter()
    if mode == "light (float)":
        fixed = pipeline.run(float_bias_correction(ann, snn, calib, steps), (quantize,))
        return fixed, time.perf_counter() - t0
    fixed = pipeline.run(snn, (quantize,))
    t0 = time.perf_counter()
    if mode == "light":
        fixed = pipeline.run(fixed, (BiasCorrection(ann=ann, data=calib, steps=steps),))
    elif mode == "advanced":
        fixed = pipeline.run(fixed, (AdvancedCalibration(ann=ann, data=calib, steps=steps),))
    return fixed, (time.perf_counter() - t0 if mode != "none" else 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["cnn", "resnet"], choices=sorted(MODELS))
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--threshold", default="mse", choices=["max", "percentile", "mse"])
    p.add_argument("--calib-samples", type=int, default=1024)
    p.add_argument("--out", default=None, help="also write the table (with a header) to this file")
    args = p.parse_args()

    lines = [
        f"Digits test split (360 samples); calibration on the first {args.calib_samples} samples of the "
        f"train split; threshold balancing `{args.threshold}`; accuracy of the Loihi 2 fixed-point SNN on "
        "the exact reference simulator (bit-identical to Lava fixed_pt). `calib s`: wall time of the "
        f"calibration alone, {torch.get_num_threads()} torch thread(s), {platform.processor() or platform.machine()}.",
        "",
        "| model | ANN | T | calibrate | SNN acc (fixed point) | SNN − ANN (pp) | calib s |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for key in args.models:
        graph = load_model(ROOT / MODELS[key])
        ds = load("digits", graph.shape(graph.input_names()[0]))
        calib = ds.train.x[: args.calib_samples]
        ann_acc = accuracy(forward(graph, ds.test.x).numpy(), ds.test.y)
        for steps in args.steps:
            snn = pipeline.run(graph, pipeline.convert(calib, mode=args.threshold, steps=steps))
            for mode in args.modes:
                fixed, seconds = run_mode(mode, graph, snn, calib, steps)
                logits, _ = reference.predict(fixed, ds.test.x, steps, device="cpu", progress=False)
                acc = accuracy(logits, ds.test.y)
                row = (f"| {key} | {100 * ann_acc:.2f} % | {steps} | {mode} | {100 * acc:.2f} % | "
                       f"{100 * (acc - ann_acc):+.2f} | {seconds:.1f} |")
                lines.append(row)
                print(row, flush=True)
    if args.out:
        command = "python benchmarks/fidelity.py " + " ".join(sys.argv[1:])
        Path(args.out).write_text(f"# Fidelity: calibration in Loihi 2 fixed point\n\nProduced by `{command}`.\n\n"
                                  + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
