"""Fidelity of plain conversion (max balancing, no calibration): ANN vs fixed-point SNN accuracy
on the digits test split for several time-step counts. Prints a markdown table.

    .venv/bin/python benchmarks/fidelity.py [--model examples/digits_cnn.pt2] [--steps 8 16 32 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from snncompile.api import accuracy, load_model
from snncompile.backends import reference
from snncompile.data import load
from snncompile.passes import pipeline
from snncompile.sim.ann import forward


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
    print(f"model {args.model}, {len(ds.test)} test samples, {len(calib)} calibration samples\n")
    print("| steps | ANN acc | SNN acc (fixed point) | SNN/ANN | saturations | compile s | simulate s |")
    print("|---|---|---|---|---|---|---|")
    for steps in args.steps:
        t0 = time.perf_counter()
        fixed_graph = pipeline.run(graph, pipeline.loihi2(calib, steps))
        t1 = time.perf_counter()
        logits, stats = reference.predict(fixed_graph, ds.test.x, steps, device=args.device, progress=False)
        t2 = time.perf_counter()
        snn_acc = accuracy(logits, ds.test.y)
        sat = sum(s.saturations for s in stats.values())
        print(f"| {steps} | {100 * ann_acc:.2f} % | {100 * snn_acc:.2f} % | {snn_acc / ann_acc:.3f} | "
              f"{sat} | {t1 - t0:.2f} | {t2 - t1:.2f} |")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
