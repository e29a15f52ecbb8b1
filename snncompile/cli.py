"""Command line: ``snncompile MODEL --target loihi2 -o OUTDIR [--steps T] [--data ...]``."""

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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="snncompile",
        description="Compile a PyTorch ReLU network to a spiking network for Intel Loihi 2, "
        "check it on data with the exact reference simulator, and verify Lava computes the same bits.",
    )
    p.add_argument("model", help="a torch.export.save file (any name, e.g. model.pt), a .onnx or a .nir file")
    p.add_argument("--target", choices=["loihi2", "netx", "nir"], default="loihi2",
                   help="loihi2 (default): fixed point, checked on Lava; netx: also write a lava-dl "
                   "model.net (reset to zero); nir: the float SNN as model.nir only")
    p.add_argument("-o", "--outdir", default="out", help="folder for model.nir, report.json, report.md")
    p.add_argument("--steps", type=_positive, default=32, help="time steps per sample (default 32)")
    p.add_argument("--data", default="digits", help="'digits' or a .npz file with x (and y)")
    p.add_argument("--samples", type=_positive, default=4, help="samples run on Lava and compared (default 4)")
    p.add_argument("--calib-samples", type=_positive, default=256, help="calibration samples (default 256)")
    p.add_argument("--percentile", type=float, default=100.0,
                   help="activation percentile for threshold balancing (default 100 = max)")
    p.add_argument("--device", default=None, help="reference simulator device: cpu or cuda (default: cuda if present)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from snncompile.api import Options, compile_model

    options = Options(
        target=args.target, steps=args.steps, data=args.data, samples=args.samples,
        calib_samples=args.calib_samples, percentile=args.percentile, device=args.device,
        progress=not args.no_progress and sys.stderr.isatty(),
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
