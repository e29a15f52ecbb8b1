"""How much a figure of benchmarks/fidelity.py depends on which calibration samples were used,
and whether an option moves it by more than that: one model and T, the float SNN and the
Loihi 2 fixed-point SNN per calibration mode, on each of K calibration subsets of the train
split (disjoint blocks, or random draws), all test samples. Prints a markdown table: one row per
subset, then the mean; the fixed point minus the float SNN per mode.

    .venv/bin/python benchmarks/calibration_subsets.py --model resnet --steps 8 --subsets 5
    .venv/bin/python benchmarks/calibration_subsets.py --model resnet --steps 8 --option calib_iterations=1000
    .venv/bin/python benchmarks/calibration_subsets.py --model resnet --steps 8 --samples 1024 --random
    .venv/bin/python benchmarks/calibration_subsets.py --model mobilenetv2 --steps 32 --samples 512 \\
        --subsets 2 --modes advanced

``--option name=value`` sets a field of ``snncompile.compiler.Options`` (threshold=max,
calib_iterations=1000, equalize_delays=on, ...) for the conversion and the calibration alike.
Subset k is train samples [k·n, (k+1)·n) (``--offset`` shifts the blocks), or with ``--random`` n
samples drawn without replacement with seed k. ``calib s``: the calibration alone (its report).
Each mode is converted as the compiler converts a calibration set of that size for it
(``compiler.convert``): advanced on a digits model adds as many mixups as samples
(``--option calib_mixup=off``: none); the float SNN column is the conversion of the subset alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fidelity import MODELS, run_mode, splits, subset_conversion, total_steps  # noqa: E402

from snncompile.api import accuracy, load_model  # noqa: E402
from snncompile.backends import reference  # noqa: E402
from snncompile.compiler import Options  # noqa: E402
from snncompile.sim import snn as float_snn  # noqa: E402
from snncompile.sim.ann import forward  # noqa: E402


def option(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    if name not in Options.__dataclass_fields__ or not value:
        raise argparse.ArgumentTypeError(f"'{text}': expected NAME=VALUE with NAME a field of Options")
    if name in ("steps", "calibrate", "progress"):
        raise argparse.ArgumentTypeError(f"'{text}': set {name} with this script's own arguments")
    return name, int(value) if value.lstrip("-").isdigit() else value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--steps", type=int, required=True, help="T, steps of evidence")
    p.add_argument("--modes", nargs="+", default=["none", "advanced"], choices=["none", "light", "advanced"])
    p.add_argument("--samples", type=int, default=256, help="calibration samples per subset")
    p.add_argument("--subsets", type=int, default=5)
    p.add_argument("--offset", type=int, default=0, help="the first subset starts at this train sample")
    p.add_argument("--random", action="store_true", help="draw each subset at random (seed k) instead")
    p.add_argument("--option", type=option, action="append", default=[], metavar="NAME=VALUE")
    args = p.parse_args()

    graph = load_model(ROOT / MODELS[args.model])
    xtr, x, y = splits(args.model, graph)
    needed = args.samples if args.random else args.offset + args.subsets * args.samples
    if needed > len(xtr):
        p.error(f"{args.subsets} subsets of {args.samples} from {args.offset} need {needed} train samples; "
                f"there are {len(xtr)}")
    ann_acc = 100 * accuracy(forward(graph, x).numpy(), y)
    extra = dict(args.option)
    print(f"{args.model}, T={args.steps}, {args.subsets} subsets of {args.samples} calibration samples"
          f"{' (random)' if args.random else f' from train sample {args.offset}'}, options {extra or 'default'}, "
          f"{len(x)} test samples, ANN {ann_acc:.2f} %\n")
    head = "| subset | float SNN | " + " | ".join(f"{m} | {m} − float (pp) | {m} calib s" for m in args.modes) + " |"
    print(head + "\n" + "|---" * (2 + 3 * len(args.modes)) + "|", flush=True)
    rows = []
    for k in range(args.subsets):
        if args.random:
            calib = xtr[np.sort(np.random.default_rng(k).choice(len(xtr), args.samples, replace=False))]
        else:
            start = args.offset + k * args.samples
            calib = xtr[start:start + args.samples]
        options = Options(steps=args.steps, progress=False, **extra)
        plain = subset_conversion(graph, calib, dataclasses.replace(options, calibrate="none"))
        scores = float_snn.simulate(plain[0], x, total_steps(plain[0], args.steps), delay=1).scores()
        row = [100 * accuracy(next(iter(scores.values())), y)]
        for mode in args.modes:
            # the compiler's conversion of the subset for this --calibrate: the same float SNN, or
            # one on the subset and its mixups where compiler.mixup_samples adds them
            mode_snn, mode_calib = subset_conversion(graph, calib, dataclasses.replace(options, calibrate=mode), plain)
            fixed, seconds = run_mode(mode, graph, mode_snn, mode_calib, args.steps, **extra)
            # its own T + L: the delay choice may relay differently on the mixups
            logits, _ = reference.predict(fixed, x, total_steps(mode_snn, args.steps), device="cpu", progress=False)
            acc = 100 * accuracy(logits, y)
            row += [acc, acc - row[0], seconds]
        rows.append(row)
        print(f"| {k} | {cells(row)} |", flush=True)
    print(f"| mean | {cells(np.mean(rows, axis=0))} |")


def cells(row) -> str:
    """float SNN %, then per mode: accuracy %, − float (pp), calibration s."""
    return " | ".join(f"{v:.2f}" if i % 3 == 1 or i == 0 else f"{v:+.2f}" if i % 3 == 2 else f"{v:.1f}"
                      for i, v in enumerate(row))


if __name__ == "__main__":
    main()
