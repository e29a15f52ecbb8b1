"""The compiler's Python API: load, convert, quantize, simulate, verify against Lava, report."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snncompile import data as datasets
from snncompile.errors import ModelLoadError, SnnCompileError
from snncompile.ir.ops import Reset
from snncompile.ir.graph import Graph
from snncompile.passes import pipeline
from snncompile.passes.calibrate import BiasCorrection
from snncompile.passes.partition import Partition, Placement
from snncompile.report import Report, build_report, write_report
from snncompile.sim import ann
from snncompile.sim import snn as float_snn
from snncompile.sim.ann import encode_inputs
from snncompile.sim.trace import compare
from snncompile.targets.loihi2 import LOIHI2


@dataclass(frozen=True)
class Options:
    target: str = "loihi2"
    steps: int = 32
    data: str = "digits"
    samples: int = 4  # samples run on Lava and compared bit for bit
    calib_samples: int = 256
    percentile: float = 100.0
    threshold: str = "max"  # threshold balancing: max | percentile | mse (passes.convert)
    calibrate: str = "none"  # none | light (bias correction in fixed point, passes.calibrate)
    device: str | None = None
    progress: bool = True
    chips: int = 1  # Loihi 2 chips the model must fit on (loihi2 and netx targets)


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


FRONTENDS = {".onnx": "snncompile.frontends.onnx", ".nir": "snncompile.frontends.nir"}
TARGETS = ("loihi2", "netx", "nir")


def load_model(path: str | Path) -> Graph:
    """A float IR graph from a model file: ``.onnx`` (ONNX), ``.nir`` (NIR), anything else a
    ``torch.export.save`` file."""
    import importlib

    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: model file not found")
    module = FRONTENDS.get(path.suffix.lower(), "snncompile.frontends.torch")
    return importlib.import_module(module).load_model(path)


def accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def to_snn(graph: Graph, calib: np.ndarray, options: Options) -> Graph:
    """The float SNN: an ANN is converted (netx needs reset to zero); an SNN keeps its neurons."""
    if any(op.neuron for _, op in graph.nodes()):
        return pipeline.run(graph, (pipeline.fuse_linear,))
    reset = Reset.ZERO if options.target == "netx" else Reset.SUBTRACT
    passes = pipeline.convert(calib, options.percentile, reset=reset, mode=options.threshold, steps=options.steps)
    return pipeline.run(graph, passes)


def _fixed_point(snn: Graph, calib: np.ndarray, options: Options, ann: Graph | None = None) -> tuple[Graph, Placement]:
    """Quantize the float SNN for Loihi 2 (and calibrate it against ``ann`` when asked), then
    place it on ``options.chips`` chips (raises ResourceError when it does not fit)."""
    if options.chips < 1:
        raise SnnCompileError(f"chips must be at least 1, got {options.chips}")
    if options.calibrate not in ("none", "light"):
        raise SnnCompileError(f"--calibrate must be none or light, not '{options.calibrate}'")
    bias_exp = 6 if options.target == "netx" else None
    passes = (pipeline.Quantize(data=calib, steps=options.steps, target=LOIHI2, bias_exp=bias_exp),)
    if options.calibrate == "light" and ann is not None:
        passes += (BiasCorrection(ann=ann, data=calib, steps=options.steps, bias_exp=bias_exp,
                                  progress=options.progress),)
    fixed_graph = pipeline.run(snn, passes)
    return fixed_graph, Partition(target=LOIHI2, chips=options.chips)(fixed_graph)


def inspect_model(model: str | Path | Graph, options: Options = Options()) -> Inspection:
    """Compile ``model`` to Loihi 2 fixed point and place it on cores; runs nothing, writes nothing."""
    graph = model if isinstance(model, Graph) else load_model(model)
    (inp,) = graph.input_names()
    ds = datasets.load(options.data, graph.shape(inp))
    calib = ds.train.x[: options.calib_samples]
    snn = to_snn(graph, calib, options)
    fixed_graph, placement = _fixed_point(snn, calib, options, graph)
    return Inspection(graph, snn, fixed_graph, placement)


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
    timings = {}
    t0 = time.perf_counter()
    graph = model if isinstance(model, Graph) else load_model(model)
    (inp,) = graph.input_names()
    ds = datasets.load(options.data, graph.shape(inp))
    calib = ds.train.x[: options.calib_samples]
    timings["load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    snn = to_snn(graph, calib, options)
    is_ann = snn is not graph and not any(op.neuron for _, op in graph.nodes())
    fixed_graph, placement = None, None
    if options.target != "nir":
        fixed_graph, placement = _fixed_point(snn, calib, options, graph)
    timings["compile_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ann_logits = ann.forward(graph, ds.test.x).numpy() if is_ann else None
    float_run = float_snn.simulate(snn, ds.test.x, options.steps, delay=1)
    float_logits = next(iter(float_run.outputs.values()))
    timings["float_snn_s"] = time.perf_counter() - t0

    snn_logits, stats, comparison = None, {}, None
    if fixed_graph is not None:
        from snncompile.backends import reference

        t0 = time.perf_counter()
        snn_logits, stats = reference.predict(
            fixed_graph, ds.test.x, options.steps, device=options.device, progress=options.progress
        )
        timings["reference_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        check = ds.test.x[: options.samples]
        encoded = encode_inputs(fixed_graph, check)
        ref_trace = reference.run(fixed_graph, check, options.steps, device=options.device).trace
        from snncompile.backends.lava import run_lava

        lava_trace = run_lava(fixed_graph, check, options.steps, encoded=encoded, progress=options.progress)
        comparison = compare(ref_trace, lava_trace)
        timings["lava_s"] = time.perf_counter() - t0

    report = build_report(
        options=options, float_graph=graph, snn_graph=snn, fixed_graph=fixed_graph,
        ann_accuracy=accuracy(ann_logits, ds.test.y) if is_ann else None,
        float_snn_accuracy=accuracy(float_logits, ds.test.y),
        snn_accuracy=None if snn_logits is None else accuracy(snn_logits, ds.test.y),
        ann_logits=ann_logits, snn_logits=None if snn_logits is None else snn_logits / options.steps,
        stats=stats, comparison=comparison, test_samples=len(ds.test), calib_samples=len(calib),
        timings=timings, placement=placement,
    )
    files = _write_outputs(Path(outdir), snn, fixed_graph, report, options)
    return Compiled(graph, snn, fixed_graph, report, files, placement)


def _write_outputs(outdir: Path, snn: Graph, fixed_graph: Graph | None, report: Report, options: Options):
    from snncompile.backends import nir as nir_backend

    outdir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".snncompile-", dir=outdir))
    try:
        files = {"nir": nir_backend.write(snn, staging / "model.nir")}
        if options.target == "netx":
            from snncompile.backends import netx

            files["netx"] = netx.write(fixed_graph, staging / "model.net")
        files.update(write_report(report, staging))
        final = {}
        for key, path in files.items():
            target = outdir / path.name
            path.replace(target)
            final[key] = target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
