"""Named pipelines (plain tuples of passes) and the runner that verifies after every pass."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from snncompile.errors import GraphError, PassError, SnnCompileError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import Reset
from snncompile.ir.verify import Verifier
from snncompile.passes.convert import ConvertReLU
from snncompile.passes.equalize_delays import EqualizeDelays
from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.passes.linear_regions import LowerLinearRegions
from snncompile.passes.residual import lower_residual
from snncompile.passes.split_concat import split_concat
from snncompile.passes.quantize import Quantize
from snncompile.passes.trim_taps import trim_taps
from snncompile.targets.loihi2 import LOIHI2

Pass = Callable[[Graph], Graph]


def pass_name(p: Pass) -> str:
    return getattr(p, "name", None) or getattr(p, "__name__", type(p).__name__)


def run(graph: Graph, passes: Sequence[Pass], verifier: Verifier | None = None) -> Graph:
    """Apply ``passes`` in order, verifying after each; a failure names the pass and those before."""
    verifier = verifier or Verifier()
    done: list[str] = []
    for p in passes:
        name = pass_name(p)
        try:
            graph = p(graph)
            verifier.check(graph)
        except GraphError as exc:
            raise PassError(f"pass '{name}' (after {done or 'none'}) produced an invalid graph: {exc}") from None
        except SnnCompileError:
            raise
        done.append(name)
    return graph


def convert(data: np.ndarray, percentile: float = 100.0, reset: Reset = Reset.SUBTRACT, mode: str = "max",
            steps: int = 32, v_init: float = 0.5, channel_wise: bool = True,
            equalize: bool = False) -> tuple[Pass, ...]:
    """Float ANN -> float SNN (threshold ``mode``: max | percentile | mse for ``steps`` steps;
    initial potential ``v_init``·θ; per-channel balancing folded into the weights; ``equalize``:
    relay layers make every path into a neuron equally deep, passes.equalize_delays; taps that only
    read padding are zeroed, passes.trim_taps)."""
    return (fold_batchnorm, split_concat, LowerLinearRegions(), trim_taps,
            ConvertReLU(data=data, percentile=percentile, reset=reset, mode=mode, steps=steps, v_init=v_init,
                        channel_wise=channel_wise)) + ((EqualizeDelays(),) if equalize else ())


def spiking() -> tuple[Pass, ...]:
    """A float SNN (neurons already there, e.g. directly trained) -> float SNN ready to quantize:
    residual sums become synapses (passes.residual), pooling and Flatten fold into them, taps that
    only read padding are zeroed (passes.trim_taps)."""
    return (lower_residual, LowerLinearRegions(relays=False), trim_taps)


def loihi2(data: np.ndarray, steps: int, percentile: float = 100.0) -> tuple[Pass, ...]:
    """Float ANN -> Loihi 2 fixed point."""
    return convert(data, percentile) + (Quantize(data=data, steps=steps, target=LOIHI2),)
