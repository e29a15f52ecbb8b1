"""Fidelity of conversion without calibration: ANN vs Loihi 2 fixed-point SNN accuracy on the
digits test split, per threshold mode (max, percentile 99.99, mse) and time-step count.
Prints a markdown table.

    .venv/bin/python benchmarks/fidelity.py [--model examples/digits_cnn.pt2] [--steps 8 16 32 64]
"""

from __future__ import annotations

import argparse
import time

from snncompile.api import accuracy, load_model
from snncompile.backends import reference
from snncompile.data import load
from snncompile.passes import pipeline
from snncompile.passes.convert import ConvertReLU
from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.passes.fuse_linear import fuse_linear
from snncompile.passes.quantize import Quantize
from snncompile.sim.ann import forward

MODES = (("max", 100.0), ("percentile", 99.99), ("mse", 100.0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="examples/digits_cnn.pt2")
    p.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--device", default=None)
    args = p.parse_args()

    graph = load_model(args.model)
    ds = load("digits", graph.shape(graph.input_names()[0]))
    calib = ds.train.x[: args.calib_samples]
    ann_acc = accuracy(forward(graph, ds.test.x).numpy(), ds.test.y)
    print(f"model {args.model}: ANN accuracy {100 * ann_acc:.2f} % on {len(ds.test)} test samples; "
          f"{len(calib)} calibration samples; no calibration\n")
    print("| steps | threshold | SNN acc (fixed point) | SNN/ANN | saturations | compile s | simulate s |")
    print("|---|---|---|---|---|---|---|")
    for steps in args.steps:
        for mode, percentile in MODES:
            t0 = time.perf_counter()
            passes = (fold_batchnorm, ConvertReLU(data=calib, percentile=percentile, mode=mode, steps=steps),
                      fuse_linear, Quantize(data=calib, steps=steps))
            fixed_graph = pipeline.run(graph, passes)
            t1 = time.perf_counter()
            logits, stats = reference.predict(fixed_graph, ds.test.x, steps, device=args.device, progress=False)
            t2 = time.perf_counter()
            snn_acc = accuracy(logits, ds.test.y)
            sat = sum(s.saturations for s in stats.values())
            label = f"percentile {percentile}" if mode == "percentile" else mode
            print(f"| {steps} | {label} | {100 * snn_acc:.2f} % | {snn_acc / ann_acc:.3f} | {sat} | "
                  f"{t1 - t0:.2f} | {t2 - t1:.2f} |")


if __name__ == "__main__":
    main()
