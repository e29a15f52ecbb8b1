"""The reference target: a thin face over the exact simulator in ``snncompile.sim.fixed``."""

from __future__ import annotations

import numpy as np

from snncompile.runtime import progress as report_progress
from snncompile.ir.graph import Graph
from snncompile.sim import fixed
from snncompile.sim.fixed import FixedResult, LayerStats


def run(graph: Graph, x: np.ndarray, steps: int, device: str | None = None, record: bool = True) -> FixedResult:
    """Simulate a fixed-point graph on ``x``; ``record`` keeps every layer's spikes and v."""
    return fixed.simulate(graph, x, steps, device=device, record=record)


def predict(
    graph: Graph, x: np.ndarray, steps: int, *, device: str | None = None, batch_size: int = 256,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, LayerStats]]:
    """Float outputs (readout v / v_scale) for all of ``x`` in batches, and the summed stats.
    A spiking output layer (not a readout) gives its spike counts instead (sim.snn.readout_kind)."""
    outputs, totals = [], {}
    (out,) = graph.output_names()
    (src,) = graph.inputs(out)
    counted = not graph.op(src).readout
    batches = range(0, len(x), batch_size)
    for start in report_progress.track(batches, "reference", progress, unit="batches"):
        result = fixed.simulate(graph, x[start:start + batch_size], steps, device=device, record=False,
                                count_spikes=counted)
        outputs.append(result.counts[src].astype(np.float64) if counted else fixed.output_values(graph, result))
        for layer, stats in result.stats.items():
            total = totals.setdefault(layer, LayerStats())
            for key in stats.__dataclass_fields__:
                setattr(total, key, getattr(total, key) + getattr(stats, key))
    return np.concatenate(outputs), totals
