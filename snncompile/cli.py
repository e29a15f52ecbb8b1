"""Command line: ``snncompile MODEL --target loihi2 -o OUTDIR [--steps T] [--data ...] [--chips N]``,
and ``snncompile inspect MODEL [--data ...] [--steps T] [--chips N]``: the fixed-point IR as a table
with the Loihi 2 cores of every layer (compiles, runs nothing, writes nothing).

``snncompile verify OUTDIR [--against recording.npz]`` (snncompile/report/verify.py) replays a run
bundle on the reference simulator and compares it bit for bit with Lava or a recording.

``inspect`` and ``verify`` are first words, not subparsers, so that ``snncompile MODEL ...`` keeps working as it
always has; a model file named ``inspect`` is given as ``./inspect``.

Exit codes (README, "Exit codes"): 0 success; 1 Lava and the reference simulator disagree;
2 bad input (model, data, flags: one line on stderr, nothing written); 3 the fidelity gate
failed; 4 ``--strict`` found clipped or wrapped values. Every error is one line on stderr starting
``snncompile: error:``; ``--json`` also prints it on stdout as ``{"error": ..., "exit_code": ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings

from snncompile.errors import SnnCompileError
from snncompile.runtime.device import device_arg

EXIT_OK = 0
EXIT_MISMATCH = 1  # Lava and the reference simulator computed different bits
EXIT_USER_ERROR = 2  # bad input: model, data or flags (SnnCompileError.exit_code)
EXIT_FIDELITY = 3  # the fidelity gate (accuracy ratio / drop) failed
EXIT_STRICT = 4  # --strict: something was clipped or wrapped (OverflowLimitError.exit_code)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); SIGTERM gives 143 (snncompile/runtime/interrupts.py)

MAX_STEPS = 10_000  # time steps per sample
MAX_SAMPLES = 10_000  # samples compared on Lava; calibration samples
MAX_SWEEP = 32  # step counts in --sweep-steps
MAX_INPUT_VALUES = 1 << 24  # --input-shape: values in one sample (64 MiB as float32)


class UsageError(SnnCompileError):
    """A command-line flag is missing or malformed (argparse's own errors, as one line)."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are SnnCompileErrors: one line, handled like every other error."""

    def error(self, message):
        raise UsageError(f"{message} (see snncompile --help)")


def _limited(maximum: int):
    def parse(text: str) -> int:
        value = _positive(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def _number(low: float, high: float, low_open: bool = False, what: str = "a number"):
    """A float parser for [low, high] ((low, high] with ``low_open``); nan is refused."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        inside = (low < value if low_open else low <= value) and value <= high  # False for nan
        if not inside:
            raise argparse.ArgumentTypeError(f"must be {what} in {interval}, got '{text}'")
        return value

    parse.__name__ = "number"
    return parse


_percentile = _number(0, 100, low_open=True)
_ratio = _number(0, 1)
_points = _number(0, 100, what="percentage points")


def _arch(text: str) -> str:
    where, _, factory = text.rpartition(":")
    if not where or not factory.isidentifier():
        raise argparse.ArgumentTypeError(f"must be package.module:factory or path/to/file.py:factory, got '{text}'")
    return text


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 or d > 1 << 20 for d in dims):
        raise argparse.ArgumentTypeError(f"must be positive sizes separated by commas (e.g. 1,8,8), got '{text}'")
    values = 1
    for d in dims:
        values *= d
    if values > MAX_INPUT_VALUES:  # refused before anything is allocated
        raise argparse.ArgumentTypeError(f"{text} is {values} values per sample, more than {MAX_INPUT_VALUES}")
    return dims


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _steps_list(text: str) -> tuple[int, ...]:
    """'4,8,16,32' -> (4, 8, 16, 32): each a positive integer."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text}")
    values = tuple(sorted(set(values)))
    if values[-1] > MAX_STEPS or len(values) > MAX_SWEEP:  # each T is a conversion and a test run
        raise argparse.ArgumentTypeError(f"at most {MAX_SWEEP} step counts, each at most {MAX_STEPS}, got {text}")
    return values


MODEL_HELP = ("a model file, told by its content: torch.export.save (recommended), TorchScript, "
              "a state_dict with --arch, ONNX or NIR")


def _common(p: argparse.ArgumentParser) -> None:
    """Options shared by compiling and inspecting."""
    p.add_argument("--steps", type=_limited(MAX_STEPS), default=32,
                   help=f"time steps per sample (default 32, at most {MAX_STEPS})")
    p.add_argument("--data", default="digits",
                   help="evaluation data: 'digits' (its test split) or a .npz with x (and y); without "
                   "--calib-data a .npz is split: a seeded fifth calibrates, the rest evaluates")
    p.add_argument("--calib-data", default=None, metavar="SPEC",
                   help="calibration data: 'digits' (its train split) or a .npz with x (default: "
                   "digits' train split, or the calibration part of --data)")
    p.add_argument("--calib-samples", type=_limited(MAX_SAMPLES), default=None,
                   help="calibration samples (default 256; 1024 or 512 where --calibrate auto runs advanced on "
                   "a network beyond its small limits and calibrated neurons x samples x (T + L) stays within "
                   "3 G or 1.5 G: torchvision's MobileNetV2 1024 up to T=32, 256 at T=64; report.json: "
                   "calib_samples_choice)")
    p.add_argument("--calib-mixup", choices=["auto", "on", "off"], default="auto",
                   help="also calibrate on as many blends of two calibration samples as samples (auto: where "
                   "advanced calibrates a network within auto's small limits on the default samples; "
                   "report.json: calib_samples_choice)")
    p.add_argument("--threshold", choices=["max", "percentile", "mse"], default="mse",
                   help="threshold balancing: mse (default): per channel, the threshold among "
                   "max·(1 − 0.01 i) whose T-step rate, clipped, is closest to the activations (the "
                   "calibration paper's search for the given --steps); max: the largest activation; "
                   "percentile: a percentile of it")
    p.add_argument("--percentile", type=_percentile, default=99.99,
                   help="the percentile for --threshold percentile (default 99.99)")
    p.add_argument("--maxpool", choices=["error", "avg"], default="error",
                   help="MaxPool2d has no spiking form: error (default) refuses it; avg replaces it with "
                        "AvgPool2d of the same window (report.json: ANN accuracy before and after)")
    p.add_argument("--calibrate", choices=["auto", "none", "light", "advanced"], default="auto",
                   help="calibration measured in Loihi 2 fixed point: light = per-channel bias "
                   "correction; advanced = layer-wise weight calibration (Adam), potential "
                   "initialization and bias correction; each keeps the uncalibrated graph where "
                   "that is closer to the ANN. auto (default): advanced up to 50,000 neurons, 1 M weights and 12 layers; "
                   "beyond, where the float SNN agrees with the ANN on < 95 %% of the calibration samples "
                   "(measured at any T; unmeasured: where T <= L), advanced within 1 M weights, 64 layers, "
                   "2**26 neuron-samples, else light within 2**27; none otherwise (report.json: calibration.why)")
    p.add_argument("--equalize-delays", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
                   help="relay layers make every path into a neuron equally deep, so the SNN is the "
                   "delay-free one shifted by its depth (ResNet-20 at T=8: float SNN 59 -> 86 %%; costs "
                   "neurons, +52 %% there, and is worse at T=16 there; see passes/equalize_delays.py). "
                   "auto (default): where T <= L, relayed or not, whichever float SNN is closer to the ANN "
                   "on the calibration data (up to 400,000 neurons; report.json: delays); a bare flag means on")
    p.add_argument("--spikes", choices=["auto", "signed", "binary"], default="auto",
                   help="the converted neurons' spikes: signed = reset by subtraction plus a -1 spike that takes "
                   "back one sent too early (a count per neuron, Loihi 2 graded spikes; MobileNetV2 at T=16: "
                   "-0.24 instead of -2.18 pp from the ANN on unseen samples); binary = 0/1 spikes, reset by "
                   "subtraction. auto (default): signed for --target loihi2, binary for nir and netx")
    p.add_argument("--calib-iterations", type=_limited(100_000), default=300,
                   help="Adam steps per layer for --calibrate advanced (default 300)")
    p.add_argument("--chips", type=_limited(1024), default=1,
                   help="Loihi 2 chips the model must fit on (default 1; 128 cores each)")
    p.add_argument("--arch", type=_arch, default=None, metavar="MODULE:FACTORY",
                   help="for a state_dict: package.module:factory or path/to/file.py:factory, a "
                   "function returning the nn.Module the weights fill (imports and runs that code)")
    p.add_argument("--trust-code", "--trust-pickle", dest="trust_pickle", action="store_true",
                   help="load model files whose loading runs their own code: a whole pickled nn.Module "
                   "(torch.save(model)) or a TorchScript archive; only for files you trust "
                   "(--trust-pickle is the older name)")
    p.add_argument("--nir-dt", type=_number(1e-12, 1e6, low_open=True), default=None, metavar="DT",
                   help="a NIR file's time step (default: its metadata, else its producer's convention)")
    p.add_argument("--nir-reset", choices=["zero", "subtract"], default=None,
                   help="a NIR file's reset where it records none (snnTorch's exporter drops it)")
    p.add_argument("--input-shape", type=_shape, default=None, metavar="C,H,W",
                   help="one sample's shape, for TorchScript and state_dict models (default: from "
                   "--data or the first layer)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="snncompile",
        description="Compile a PyTorch ReLU network to a spiking network for Intel Loihi 2, "
        "check it on data with the exact reference simulator, and verify Lava computes the same bits.",
        epilog="Also: snncompile inspect MODEL [--data ...] [--steps T] [--chips N] prints the "
        "fixed-point IR and the Loihi 2 cores of every layer; snncompile verify OUTDIR [--against "
        "recording.npz] compares a compiled OUTDIR's run bundle bit for bit (see snncompile verify --help).",
    )
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--target", choices=["loihi2", "netx", "nir"], default="loihi2",
                   help="loihi2 (default): fixed point, checked on Lava; netx: also write a lava-dl "
                   "model.net (reset to zero); nir: the float SNN as model.nir only")
    p.add_argument("-o", "--outdir", default="out", help="folder for model.nir, report.json, report.md")
    _common(p)
    p.add_argument("--samples", type=_limited(MAX_SAMPLES), default=4,
                   help="samples run on Lava and compared (default 4)")
    p.add_argument("--sweep-steps", type=_steps_list, default=(), metavar="T1,T2,...",
                   help="also convert at each of these step counts and report (and plot) the test "
                   "accuracy against T, e.g. 4,8,16,32")
    p.add_argument("--device", type=device_arg, default=None,
                   help="reference simulator device: cpu or cuda (default: cuda if present)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (bars on a terminal, timestamped lines otherwise)")
    p.add_argument("--min-accuracy-ratio", type=_ratio, default=None, metavar="R",
                   help="fidelity gate: exit 3 when SNN accuracy / ANN accuracy (float SNN for a "
                   "spiking model) is below R, e.g. 0.98")
    p.add_argument("--max-accuracy-drop", type=_points, default=None, metavar="PP",
                   help="fidelity gate: exit 3 when the SNN is more than PP percentage points below the ANN")
    p.add_argument("--nir-flavor", choices=["nir", "snntorch", "rockpool", "snncompile"], default="nir",
                   help="whom model.nir is for: nir (default: sinabs, norse, SpikingJelly), snntorch, "
                   "rockpool (MLPs), snncompile (lossless, our own reader)")
    p.add_argument("--allow-silent", action="store_true",
                   help="a spiking model silent or saturated on the calibration data: warn instead of exit 2")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 4) when any weight, bias, threshold or state value is clipped or wrapped")
    p.add_argument("--json", action="store_true",
                   help="print report.json (or the error) on stdout as one JSON document, nothing else")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors (no progress either)")
    p.add_argument("--version", action="version", version=f"snncompile {version()}")
    return p


def version() -> str:
    """The installed package's version (its metadata), else the source tree's."""
    from importlib import metadata

    try:
        return metadata.version("snncompile")
    except metadata.PackageNotFoundError:
        from snncompile.runtime.version import __version__

        return __version__


def inspect_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="snncompile inspect",
        description="Compile a model to Loihi 2 fixed point and print its IR as a table (name, op, "
        "shape, neurons, synapses, cores); writes no file. Calibration runs only when --calibrate names "
        "it (light, advanced): under auto the table is the uncalibrated graph and a line on stderr says "
        "what a compile would run.",
    )
    p.add_argument("model", help=MODEL_HELP)
    _common(p)
    return p


def _fail(exc: SnnCompileError, as_json: bool = False) -> int:
    """Report an error: one line on stderr (and a JSON document on stdout); its exit code."""
    message = " ".join(str(exc).split())
    code = getattr(exc, "exit_code", EXIT_USER_ERROR)
    print(f"snncompile: error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}))
    return code


def inspect(argv: list[str]) -> int:
    try:
        args = inspect_parser().parse_args(argv)
    except UsageError as exc:
        return _fail(exc)
    from snncompile.compiler import Options, inspect_model
    from snncompile.report.build import ir_table

    options = Options(steps=args.steps, data=args.data, calib_data=args.calib_data,
                      calib_iterations=args.calib_iterations, calib_samples=args.calib_samples,
                      calib_mixup=args.calib_mixup, percentile=args.percentile, threshold=args.threshold,
                      calibrate=args.calibrate,
                      chips=args.chips, progress=False, arch=args.arch, trust_pickle=args.trust_pickle,
                      input_shape=args.input_shape, nir_dt=args.nir_dt, nir_reset=args.nir_reset,
                      maxpool=args.maxpool, equalize_delays=args.equalize_delays, spikes=args.spikes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = inspect_model(args.model, options)
    except SnnCompileError as exc:
        return _fail(exc)
    if result.calibration:
        print(f"snncompile: inspect: no calibration run; a compile would run {result.calibration}",
              file=sys.stderr)
    print(ir_table(result.fixed_graph, result.placement))
    return 0


def main(argv: list[str] | None = None) -> int:
    import os

    from snncompile.runtime import interrupts

    as_json = "--json" in (sys.argv[1:] if argv is None else argv)
    if argv is None:  # the program itself (not a caller's thread): Ctrl-C and SIGTERM end it cleanly
        interrupts.install(as_json)
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (`snncompile inspect m.pt | head`): no traceback, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (KeyboardInterrupt, interrupts.Interrupted) as exc:
        interrupts.handling()
        interrupts.stop_children()  # Lava's actors: nothing is left running or joined at exit
        if argv is None:
            # leave now: Python's exit would join child processes, and one cut off mid-fork can
            # keep it waiting
            code = interrupts.report()
            sys.stdout.flush()
            os._exit(code)
        print("snncompile: interrupted", file=sys.stderr)  # a caller's KeyboardInterrupt
        return getattr(exc, "exit_code", EXIT_INTERRUPTED)
    except Exception as exc:  # a bug or an unforeseen input: still one line, exit 2
        if argv is None and interrupts.signalled():  # a library's error on the way out of a signal
            interrupts.handling()
            interrupts.stop_children()
            code = interrupts.report()
            sys.stdout.flush()
            os._exit(code)
        if os.environ.get("SNNCOMPILE_TRACEBACK"):
            raise
        first = (str(exc).strip().splitlines() or ["no message"])[0][:300]
        return _fail(SnnCompileError(f"internal error ({type(exc).__name__}: {first}); set "
                                     "SNNCOMPILE_TRACEBACK=1 to see where"), as_json=as_json)


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["inspect"]:
        return inspect(argv[1:])
    if argv[:1] == ["verify"]:
        from snncompile.report.verify import main as verify_main

        return verify_main(argv[1:])
    try:
        args = parser().parse_args(argv)
    except UsageError as exc:
        return _fail(exc, as_json="--json" in argv)
    from snncompile.compiler import Options, compile_model

    options = Options(
        target=args.target, steps=args.steps, data=args.data, calib_data=args.calib_data, samples=args.samples,
        calib_iterations=args.calib_iterations, min_accuracy_ratio=args.min_accuracy_ratio,
        max_accuracy_drop=args.max_accuracy_drop,
        calib_samples=args.calib_samples, calib_mixup=args.calib_mixup, percentile=args.percentile,
        threshold=args.threshold, sweep_steps=args.sweep_steps,
        calibrate=args.calibrate, device=args.device,
        progress=not (args.no_progress or args.quiet), chips=args.chips,
        arch=args.arch, trust_pickle=args.trust_pickle, input_shape=args.input_shape, strict=args.strict,
        nir_dt=args.nir_dt, nir_reset=args.nir_reset, nir_flavor=args.nir_flavor, allow_silent=args.allow_silent,
        maxpool=args.maxpool, equalize_delays=args.equalize_delays, spikes=args.spikes,
    )
    try:
        # with --json, stdout carries the one JSON document: stray prints go to stderr
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext(), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # library deprecation notes are not the user's business
            compiled = compile_model(args.model, args.outdir, options)
    except SnnCompileError as exc:
        return _fail(exc, as_json=args.json)
    bit_exact = compiled.report.data["bit_exact"]
    code = EXIT_OK if bit_exact is None or bit_exact["mismatches"] == 0 else EXIT_MISMATCH
    if args.json:
        print(compiled.files["report_json"].read_text().strip())
    elif not args.quiet:
        print(compiled.report.summary())
        print("wrote " + ", ".join(str(p) for p in compiled.files.values()))
    if code == EXIT_MISMATCH:
        print(f"snncompile: error: Lava and the reference simulator disagree: {bit_exact['mismatches']} "
              f"mismatches (first: {bit_exact['first_mismatch']})", file=sys.stderr)
        return code
    gate = compiled.report.data.get("fidelity_gate")
    if gate and not gate["passed"]:
        print(f"snncompile: error: fidelity gate failed: {'; '.join(gate['failures'])} "
              f"(report written to {args.outdir})", file=sys.stderr)
        return EXIT_FIDELITY
    return code


if __name__ == "__main__":
    sys.exit(main())
