"""``snncompile verify OUTDIR [--against recording.npz]``: replay a run bundle and compare bits.

Without ``--against`` the bundled samples run on the reference simulator and on Lava's fixed_pt
models (every neuron layer); with it, on the reference only, compared with the layers a
recording holds (written by OUTDIR/run_on_loihi.py, on a board or in simulation). Each value is
one (sample, step, neuron) spike or membrane v; the first divergence is the earliest step, then
layer order, then spikes before v, then sample, then neuron index.

``verify`` returns a plain dict (what report writers render); ``main`` prints it and exits 0
when identical (or when the fraction of differing values is within ``--tolerance``), 1 when
not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from snncompile.backends import bundle as bundles
from snncompile.errors import SnnCompileError
from snncompile.ir.ops import LoihiNeuron

EXIT_USER_ERROR = 2
RECORDING_SCHEMA = "snncompile-recording"
RECORDING_VERSION = 1
LAVA_SIM = "Loihi2SimCfg(select_tag='fixed_pt')"


class VerifyError(SnnCompileError):
    """A recording does not match its bundle, or verify's options are invalid."""


# ---------------------------------------------------------------------------------------------
# Reading a recording.


def load_recording(path: str | Path, bundle: bundles.Bundle) -> tuple[dict, list[int], dict]:
    """(meta, sample ids, {layer: (spikes, v)}) of a recording.npz, checked against ``bundle``."""
    path = Path(path)
    if not path.is_file():
        raise VerifyError(f"{path}: recording not found; write it with OUTDIR/run_on_loihi.py --out {path.name}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise VerifyError(f"{path}: not a readable .npz recording ({exc}); write it with run_on_loihi.py") from None
    try:
        meta = json.loads(str(arrays["meta"]))
    except (KeyError, ValueError):
        raise VerifyError(f"{path}: no 'meta' entry; not written by run_on_loihi.py") from None
    if not isinstance(meta, dict) or meta.get("schema") != RECORDING_SCHEMA:
        raise VerifyError(f"{path}: meta.schema is not '{RECORDING_SCHEMA}'; not written by run_on_loihi.py")
    if meta.get("version") != RECORDING_VERSION:
        raise VerifyError(f"{path}: recording version {meta.get('version')!r}, this snncompile reads "
                          f"{RECORDING_VERSION}; record again with this bundle's run_on_loihi.py")
    graph = bundle.graph
    neurons = graph.find(LoihiNeuron)
    try:
        layers, steps = list(meta["layers"]), int(meta["steps"])
        ids = np.asarray(arrays["sample_ids"])
    except (KeyError, TypeError, ValueError) as exc:
        raise VerifyError(f"{path}: meta or sample_ids malformed ({exc}); record again") from None
    if not layers:
        raise VerifyError(f"{path}: records no layer")
    unknown = [k for k in layers if k not in neurons]
    if unknown:
        raise VerifyError(f"{path}: layer(s) {', '.join(unknown)} not in the bundle's neuron layers "
                          f"({', '.join(neurons)}); verify against the OUTDIR that wrote the script")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or len(ids) == 0:
        raise VerifyError(f"{path}: sample_ids must be a non-empty 1-D integer array; record again")
    missing = [int(i) for i in ids if int(i) not in set(bundle.sample_ids.tolist())]
    if missing:
        raise VerifyError(f"{path}: sample ids {missing} are not in the bundle's samples "
                          f"{bundle.sample_ids.tolist()}; verify against the OUTDIR that wrote the script")
    if steps < 1:
        raise VerifyError(f"{path}: steps must be positive, got {steps}")
    traces = {}
    for layer in layers:
        want = (len(ids), steps, *graph.shape(layer))
        pair = []
        for quantity in ("spikes", "v"):
            key = f"{quantity}/{layer}"
            if key not in arrays:
                raise VerifyError(f"{path}: '{key}' missing; the recording is incomplete, record again")
            arr = arrays[key]
            if arr.shape != want:
                raise VerifyError(f"{path}: '{key}' has shape {arr.shape}, the bundle needs {want} "
                                  "(samples, steps, *layer shape)")
            if not np.issubdtype(arr.dtype, np.integer):
                raise VerifyError(f"{path}: '{key}' holds {arr.dtype}, not integers")
            pair.append(arr)
        traces[layer] = tuple(pair)
    return meta, [int(i) for i in ids], traces


# ---------------------------------------------------------------------------------------------
# Comparing.


def compare_layers(expected: dict, got: dict, layers: list[str], sample_ids: list[int], steps: int) -> dict:
    """Per-layer agreement of two {layer: (spikes, v)} dicts (samples, steps, *shape)."""
    result_layers = {}
    first, first_key = None, None
    total = differing = 0
    for li, layer in enumerate(layers):
        entry = {"compared": 0, "differing": 0, "spikes_differing": 0, "v_differing": 0,
                 "per_step": [0] * steps}
        for qi, quantity in enumerate(("spikes", "v")):
            a = np.asarray(expected[layer][qi], dtype=np.int64)[:, :steps]
            b = np.asarray(got[layer][qi], dtype=np.int64)[:, :steps]
            diff = a != b
            count = int(diff.sum())
            entry["compared"] += diff.size
            entry["differing"] += count
            entry[f"{quantity}_differing"] = count
            if not count:
                continue
            per_step = diff.reshape(diff.shape[0], steps, -1).sum(axis=(0, 2))
            entry["per_step"] = [int(x) + y for x, y in zip(per_step, entry["per_step"])]
            step = int(np.flatnonzero(per_step)[0])
            sample, *neuron = (int(i) for i in np.argwhere(diff[:, step])[0])
            key = (step, li, qi, sample, tuple(neuron))
            if first_key is None or key < first_key:
                first_key = key
                at = (sample, step, *neuron)
                first = {"layer": layer, "step": step, "sample": int(sample_ids[sample]),
                         "neuron": tuple(neuron), "quantity": quantity,
                         "expected": int(a[at]), "got": int(b[at])}
        total += entry["compared"]
        differing += entry["differing"]
        result_layers[layer] = entry
    return {"layers": result_layers, "compared": total, "differing": differing, "first_divergence": first}


def _trace_pairs(trace, layers):
    return {k: (trace.spikes[k], trace.v[k]) for k in layers}


def verify(outdir: str | Path, against: str | Path | None = None, tolerance: float = 0.0,
           samples: int | None = None, device: str | None = None, progress: bool = False) -> dict:
    """Replay the run bundle in ``outdir`` on the reference simulator and compare it with
    ``against`` (a recording.npz) or, when None, with Lava fixed_pt on the bundled samples.

    ``tolerance``: the largest fraction of differing values that still passes (0: identical).
    ``progress``: report Lava's run per sample on stderr (snncompile.runtime.progress).
    Returns keys identical, passed, tolerance, against, run_config, samples, sample_ids, steps,
    compared, differing, layers {name: {compared, differing, spikes_differing, v_differing,
    per_step}}, first_divergence (None or {layer, step, sample, neuron, quantity, expected, got})
    and summary ("identical" or "differs in N of M values").
    """
    from snncompile.sim import fixed

    if not 0 <= tolerance <= 1:
        raise VerifyError(f"--tolerance is a fraction of the compared values, 0 to 1; got {tolerance}")
    try:
        full = bundles.load(outdir)
    except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:  # a hand-edited bundle
        raise VerifyError(f"{outdir}: a malformed run bundle ({type(exc).__name__}: {exc}); compile the "
                          "model again") from None
    if samples is not None and not 1 <= samples <= len(full.sample_ids):
        raise VerifyError(f"--samples must be between 1 and {len(full.sample_ids)} (the bundled samples)")
    graph = full.graph
    if against is None:
        from snncompile.backends.lava import run_lava

        chosen = full.select(samples)
        steps = chosen.steps
        layers = graph.find(LoihiNeuron)
        lava = run_lava(graph, chosen.x, steps, encoded=chosen.encoded, progress=progress)
        got, run_cfg, against_name = _trace_pairs(lava, layers), LAVA_SIM, "lava"
    else:
        meta, rec_ids, got = load_recording(against, full)
        index = [int(np.flatnonzero(full.sample_ids == i)[0]) for i in rec_ids]
        if samples is not None:
            index = index[:samples]
            got = {k: (s[:samples], v[:samples]) for k, (s, v) in got.items()}
        encoded = {k: (m[index], e[index], 0) for k, (m, e, _) in full.encoded.items()}
        chosen = bundles.Bundle(graph, int(meta["steps"]), full.x[index], full.sample_ids[index], encoded)
        steps, layers = chosen.steps, list(got)
        order = {n: i for i, n in enumerate(graph.order())}
        layers.sort(key=order.__getitem__)
        run_cfg, against_name = str(meta.get("run_config", "unknown")), str(against)
    ref = fixed.simulate(graph, chosen.x, steps, device=device, encoded=chosen.encoded).trace
    ids = [int(i) for i in chosen.sample_ids]
    result = compare_layers(_trace_pairs(ref, layers), got, layers, ids, steps)
    identical = result["differing"] == 0
    fraction = result["differing"] / result["compared"] if result["compared"] else 0.0
    summary = "identical" if identical else f"differs in {result['differing']} of {result['compared']} values"
    return {
        "identical": identical,
        "passed": identical or fraction <= tolerance,
        "tolerance": float(tolerance),
        "against": against_name,
        "run_config": run_cfg,
        "samples": len(ids),
        "sample_ids": ids,
        "steps": steps,
        **result,
        "summary": summary,
    }


# ---------------------------------------------------------------------------------------------
# Text and command line.


def format_result(result: dict, outdir: str | Path = "") -> str:
    """The verification section as text: one line per layer, the first divergence, a summary."""
    lines = [f"verify {outdir}: reference simulator vs {result['against']} ({result['run_config']}), "
             f"{result['samples']} sample(s) x {result['steps']} steps"]
    width = max(12, *(len(k) for k in result["layers"]))
    lines.append(f"  {'layer':<{width}}  {'values':>9}  {'differing':>9}  first differing step")
    for name, entry in result["layers"].items():
        steps = [t for t, c in enumerate(entry["per_step"]) if c]
        first = str(steps[0]) if steps else "-"
        lines.append(f"  {name:<{width}}  {entry['compared']:>9}  {entry['differing']:>9}  {first}")
    first = result["first_divergence"]
    if first is not None:
        neuron = ", ".join(str(i) for i in first["neuron"])
        lines.append(f"first divergence: layer {first['layer']}, step {first['step']}, sample {first['sample']}, "
                     f"neuron ({neuron}), {first['quantity']}: expected {first['expected']}, got {first['got']}")
        for name, entry in result["layers"].items():
            if entry["differing"]:
                lines.append(f"  differing values per step, {name}: {' '.join(map(str, entry['per_step']))}")
    summary = result["summary"]
    if not result["identical"] and result["passed"]:
        summary += f" (within tolerance {result['tolerance']:g})"
    lines.append(f"summary: {summary}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are VerifyErrors: one line, exit code 2."""

    def error(self, message):
        raise VerifyError(f"{message} (see snncompile verify --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="snncompile verify",
        description="Replay OUTDIR's run bundle on the reference simulator and compare every value: "
        "with Lava fixed_pt (default) or with a recording.npz written by OUTDIR/run_on_loihi.py.",
    )
    p.add_argument("outdir", help="a folder written by snncompile --target loihi2 (or netx)")
    p.add_argument("--against", default=None, help="recording.npz from run_on_loihi.py (a board or its simulation)")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="largest fraction of differing values that still exits 0 (default 0: identical)")
    p.add_argument("--samples", type=int, default=None, help="compare only the first N samples")
    from snncompile.runtime.device import device_arg

    p.add_argument("--device", type=device_arg, default=None, help="reference simulator device: cpu or cuda")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress of the Lava run on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser().parse_args(argv)
        result = verify(args.outdir, args.against, args.tolerance, args.samples, args.device,
                        progress=not args.no_progress)
    except SnnCompileError as exc:
        message = " ".join(str(exc).split())
        print(f"snncompile: error: {message}", file=sys.stderr)
        if "--json" in argv:
            print(json.dumps({"error": message, "exit_code": EXIT_USER_ERROR}))
        return EXIT_USER_ERROR
    from snncompile.report.html import write_verify

    written = write_verify(result, args.outdir)  # the report's verify section, as a page of its own
    if args.json:
        print(json.dumps(result, indent=2, default=list))
    else:
        print("wrote " + ", ".join(str(p) for p in written.values()))
        print(format_result(result, args.outdir))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
