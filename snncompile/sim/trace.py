"""What a time-stepped run records: every neuron's spikes and membrane, every step."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Trace:
    """Per neuron node: ``spikes`` (samples, steps, *shape) int8 and ``v`` (same) int64.

    ``v`` is the membrane after the step's reset, as Lava's Monitor reads it.
    ``outputs`` maps Output node names to the value read at the end (samples, *shape).
    """

    steps: int
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.v)


@dataclass(frozen=True)
class Mismatch:
    layer: str
    step: int
    index: tuple[int, ...]
    what: str  # "spikes" or "v"


@dataclass(frozen=True)
class Comparison:
    samples: int
    layers: int
    steps: int
    mismatches: int
    first_mismatch: Mismatch | None

    def as_dict(self) -> dict:
        first = None
        if self.first_mismatch is not None:
            m = self.first_mismatch
            first = {"layer": m.layer, "step": m.step, "index": list(m.index), "what": m.what}
        return {
            "samples": self.samples,
            "layers": self.layers,
            "steps": self.steps,
            "mismatches": self.mismatches,
            "first_mismatch": first,
        }


def compare(a: Trace, b: Trace) -> Comparison:
    """Element-wise comparison of two traces over the samples both hold.

    A mismatch is one (sample, step, neuron) where spikes or v differ; ``first_mismatch`` is the
    earliest step (then layer order, then index), with ``index`` = (sample, *neuron index).
    """
    if set(a.v) != set(b.v):
        raise ValueError(f"traces cover different layers: {sorted(a.v)} vs {sorted(b.v)}")
    n = min(next(iter(a.v.values())).shape[0], next(iter(b.v.values())).shape[0]) if a.v else 0
    steps = min(a.steps, b.steps)
    total = 0
    first: Mismatch | None = None
    for layer in a.v:
        for what, da, db in (("spikes", a.spikes, b.spikes), ("v", a.v, b.v)):
            diff = np.asarray(da[layer][:n, :steps]) != np.asarray(db[layer][:n, :steps])
            if what == "v":
                # count a neuron-step once even if both spikes and v differ
                diff &= np.asarray(a.spikes[layer][:n, :steps]) == np.asarray(b.spikes[layer][:n, :steps])
            total += int(diff.sum())
            if diff.any():
                idx = np.argwhere(diff)  # rows (sample, step, *neuron)
                sample, step, *rest = (int(i) for i in idx[np.argmin(idx[:, 1])])
                cand = Mismatch(layer, step, (sample, *rest), what)
                if first is None or cand.step < first.step:
                    first = cand
    return Comparison(samples=n, layers=len(a.v), steps=steps, mismatches=total, first_mismatch=first)
