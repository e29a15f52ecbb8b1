"""Command line: ``snncompile MODEL --target loihi2 -o OUTDIR [--steps T] [--data ...] [--chips N]``,
and ``snncompile inspect MODEL [--data ...] [--steps T] [--chips N]``: the fixed-point IR as a table
with the Loihi 2 cores of every layer (compiles, runs nothing, writes nothing).

``inspect`` is a first word, not a subparser, so that ``snncompile MODEL ...`` keeps working as it
always has; a model file named ``inspect`` is given as ``./inspect``.
"""

from __future__ import annotations

import argparse
import sys

from snncompile.errors import SnnCompileError

EXIT_USER_ERROR = 2


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


MODEL_HELP = "a torch.export.save file (any name, e.g. model.pt), a .onnx or a .nir file"


def _common(p: argparse.ArgumentParser) -> None:
    """Options shared by compiling and inspecting."""
    p.add_argument("--steps", type=_positive, default=32, help="time steps per sample (default 32)")
    p.add_argument("--data", default="digits", help="'digits' or a .npz file with x (and y)")
    p.add_argument("--calib-samples", type=_positive, default=256, help="calibration samples (default 256)")
    p.add_argument("--threshold", choices=["max", "percentile", "mse"], default="max",
                   help="threshold balancing: max activation (default), a percentile of it, or the "
                   "calibration paper's MSE grid search for the given steps")
    p.add_argument("--percentile", type=float, default=99.99,
                   help="the percentile for --threshold percentile (default 99.99)")
    p.add_argument("--calibrate", choices=["none", "light"], default="none",
                   help="light: per-channel bias correction measured in Loihi 2 fixed point")
    p.add_argument("--chips", type=_positive, default=1,
                   help="Loihi 2 chips the model must fit on (default 1; 128 cores each)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="snncompile",
        description="Compile a PyTorch ReLU network to a spiking network for Intel Loihi 2, "
        "check it on data with the exact reference simulator, and verify Lava computes the same bits.",
        epilog="Also: snncompile inspect MODEL [--data ...] [--steps T] [--chips N] prints the "
        "fixed-point IR and the Loihi 2 cores of every layer.",
    )
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--target", choices=["loihi2", "netx", "nir"], default="loihi2",
                   help="loihi2 (default): fixed point, checked on Lava; netx: also write a lava-dl "
                   "model.net (reset to zero); nir: the float SNN as model.nir only")
    p.add_argument("-o", "--outdir", default="out", help="folder for model.nir, report.json, report.md")
    _common(p)
    p.add_argument("--samples", type=_positive, default=4, help="samples run on Lava and compared (default 4)")
    p.add_argument("--device", default=None, help="reference simulator device: cpu or cuda (default: cuda if present)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="snncompile inspect",
        description="Compile a model to Loihi 2 fixed point and print its IR as a table (name, op, "
        "shape, neurons, synapses, cores); runs no simulation and writes no file.",
    )
    p.add_argument("model", help=MODEL_HELP)
    _common(p)
    return p


def inspect(argv: list[str]) -> int:
    args = inspect_parser().parse_args(argv)
    from snncompile.api import Options, inspect_model
    from snncompile.report import ir_table

    options = Options(steps=args.steps, data=args.data, calib_samples=args.calib_samples,
                      percentile=args.percentile, threshold=args.threshold, calibrate=args.calibrate,
                      chips=args.chips, progress=False)
    try:
        result = inspect_model(args.model, options)
    except SnnCompileError as exc:
        print(f"snncompile: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(ir_table(result.fixed_graph, result.placement))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["inspect"]:
        return inspect(argv[1:])
    args = parser().parse_args(argv)
    from snncompile.api import Options, compile_model

    options = Options(
        target=args.target, steps=args.steps, data=args.data, samples=args.samples,
        calib_samples=args.calib_samples, percentile=args.percentile, threshold=args.threshold,
        calibrate=args.calibrate, device=args.device,
        progress=not args.no_progress and sys.stderr.isatty(), chips=args.chips,
    )
    try:
        compiled = compile_model(args.model, args.outdir, options)
    except SnnCompileError as exc:
        print(f"snncompile: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(compiled.report.summary())
    print("wrote " + ", ".join(str(p) for p in compiled.files.values()))
    bit_exact = compiled.report.data["bit_exact"]
    return 0 if bit_exact is None or bit_exact["mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
