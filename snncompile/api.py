"""The compiler's Python API: load, convert, quantize, simulate, verify against Lava, report."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snncompile import data as datasets
from snncompile.errors import ModelLoadError
from snncompile.ir.graph import Graph
from snncompile.passes import pipeline
from snncompile.report import Report, build_report, write_report
from snncompile.sim import ann
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
    device: str | None = None
    progress: bool = True


@dataclass
class Compiled:
    """Everything one compilation produced."""

    float_graph: Graph
    snn_graph: Graph
    fixed_graph: Graph
    report: Report
    files: dict[str, Path] = field(default_factory=dict)


def load_model(path: str | Path) -> Graph:
    """A float IR graph from a model file (torch.export files; more frontends by suffix)."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: model file not found")
    from snncompile.frontends.torch import load_model as load_torch

    return load_torch(path)


def accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def compile_model(model: str | Path | Graph, outdir: str | Path, options: Options = Options()) -> Compiled:
    """Compile ``model`` for Loihi 2, check it on the data, and write the outputs to ``outdir``.

    Outputs (model.nir, report.json, report.md) are written to a temporary folder first and moved
    into ``outdir`` only when everything succeeded: a failure leaves no half-written output.
    """
    timings = {}
    t0 = time.perf_counter()
    graph = model if isinstance(model, Graph) else load_model(model)
    (inp,) = graph.input_names()
    ds = datasets.load(options.data, graph.shape(inp))
    calib = ds.train.x[: options.calib_samples]
    timings["load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    snn = pipeline.run(graph, pipeline.convert(calib, options.percentile))
    fixed_graph = pipeline.run(snn, (pipeline.Quantize(data=calib, steps=options.steps, target=LOIHI2),))
    timings["compile_s"] = time.perf_counter() - t0

    from snncompile.backends import reference

    t0 = time.perf_counter()
    ann_logits = ann.forward(graph, ds.test.x).numpy()
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
        ann_accuracy=accuracy(ann_logits, ds.test.y), snn_accuracy=accuracy(snn_logits, ds.test.y),
        ann_logits=ann_logits, snn_logits=snn_logits / options.steps, stats=stats,
        comparison=comparison, test_samples=len(ds.test), calib_samples=len(calib), timings=timings,
    )
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".snncompile-", dir=outdir))
    try:
        from snncompile.backends import nir as nir_backend

        files = {"nir": nir_backend.write(snn, staging / "model.nir")}
        files.update(write_report(report, staging))
        final = {}
        for key, path in files.items():
            target = outdir / path.name
            path.replace(target)
            final[key] = target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Compiled(graph, snn, fixed_graph, report, final)
