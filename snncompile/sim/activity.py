"""Silence and saturation check: a spiking network that says nothing on the calibration data.

A network whose spiking layer never fires (or fires at every step everywhere) on the calibration
samples has a chance accuracy whatever follows; the usual cause is a wrong time step (a NIR file
read with the wrong ``dt`` scales every weight by it). ``check`` runs the float SNN on a few
calibration samples and raises ``SilentNetworkError`` naming the first such layer in topological
order and the dt assumption behind it (the frontend records it in the graph's metadata as ``dt``
and ``dt_source``), or, with ``allow=True``, returns the finding for the caller to print.

Silent: no spike in the layer on any sample at any step. Saturated: every neuron of the layer
fires at every step of every sample. Integrators (readouts) never spike and are not checked.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import IF, LIF
from snncompile.sim import snn as float_snn

CHECK_SAMPLES = 64  # calibration samples simulated: enough to see a layer fire, cheap on 2 cores


class SilentNetworkError(SnnCompileError):
    """A spiking layer is silent or saturated on the calibration data (exit code 2)."""


@dataclass(frozen=True)
class Finding:
    layer: str
    state: str  # "silent" | "saturated"
    rate: float  # mean spikes per neuron per step
    samples: int
    steps: int
    assumption: str

    def __str__(self) -> str:
        what = "never fires" if self.state == "silent" else "fires at every step in every neuron"
        return (f"layer '{self.layer}' is {self.state} on the calibration data (it {what} over "
                f"{self.samples} samples x {self.steps} steps; mean rate {self.rate:.3f}); {self.assumption}")


def assumption(graph: Graph) -> str:
    meta = graph.metadata
    if meta.get("frontend") == "nir":
        return (f"the NIR file was read with dt = {meta.get('dt'):g} ({meta.get('dt_source')}; producer "
                f"recognised: {meta.get('nir_producer')}); if that is not the exporter's step, give --nir-dt, "
                "or pass --allow-silent to go on anyway")
    return ("check the model's weights, thresholds and the input scale, or pass --allow-silent to go on anyway")


def find(graph: Graph, x: np.ndarray, steps: int, delay: int = 1) -> Finding | None:
    """The first silent or saturated spiking layer of ``graph`` on ``x``, or None."""
    layers = graph.find((IF, LIF))
    if not layers or len(x) == 0:
        return None
    x = np.asarray(x)[:CHECK_SAMPLES]
    run = float_snn.simulate(graph, x, steps, delay=delay, record=True)
    for name in graph.order():
        if name not in layers:
            continue
        spikes = run.spikes[name]
        rate = float(spikes.mean())
        if not spikes.any():
            return Finding(name, "silent", rate, len(x), steps, assumption(graph))
        if spikes.all():
            return Finding(name, "saturated", rate, len(x), steps, assumption(graph))
    return None


def check(graph: Graph, x: np.ndarray, steps: int, allow: bool = False, delay: int = 1) -> Finding | None:
    """Raise SilentNetworkError for a silent or saturated layer; with ``allow`` return it instead."""
    finding = find(graph, x, steps, delay=delay)
    if finding is None:
        return None
    source = graph.metadata.get("source", "model")
    if not allow:
        raise SilentNetworkError(f"{source}: {finding}")
    print(f"snncompile: WARNING (--allow-silent): {source}: {finding}", file=sys.stderr)
    return finding
