"""What happens to MaxPool2d: never silent.

No spiking max-pool is lowered here (a spike-gated or winner-take-all circuit needs extra neuron
populations and changes the rate code; none was measured better than the substitution). So a
MaxPool2d is either refused, with an error that names ``--maxpool avg``, or replaced by an
AvgPool2d of the same window (kernel, stride, padding; zero padding counted, so the pool stays a
plain convolution on the chip). The substitution changes the ANN: ``api`` measures the ANN's
accuracy before and after it on the evaluation data and report.json records both.
"""

from __future__ import annotations

from dataclasses import dataclass

from snncompile.errors import Problem, UnsupportedModelError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import AvgPool2d, MaxPool2d

MAXPOOL_MODES = ("error", "avg")


@dataclass(frozen=True, eq=False)
class SubstituteMaxPool:
    """``mode`` error: refuse every MaxPool2d (one problem each); avg: AvgPool2d, same window."""

    mode: str = "error"
    name: str = "substitute_maxpool"

    def __post_init__(self):
        if self.mode not in MAXPOOL_MODES:
            raise ValueError(f"maxpool mode must be one of {MAXPOOL_MODES}, not {self.mode!r}")

    def __call__(self, graph: Graph) -> Graph:
        pools = graph.find(MaxPool2d)
        if not pools:
            return graph
        problems = []
        builder = graph.edit()
        for name in pools:
            op = graph.op(name)
            if self.mode == "error":
                problems.append(Problem(name, "MaxPool2d", "no spiking max-pool on Loihi 2; pass --maxpool avg "
                                        "to replace it with AvgPool2d of the same window (report.json records "
                                        "the ANN accuracy before and after)"))
            elif op.dilation != (1, 1):
                problems.append(Problem(name, "MaxPool2d", "dilated max-pool has no average-pool equivalent"))
            else:
                builder.replace(name, AvgPool2d(kernel=op.kernel, stride=op.stride, padding=op.padding))
        if problems:
            raise UnsupportedModelError("maxpool", problems)
        builder.metadata = {**builder.metadata, "maxpool": {"mode": self.mode, "replaced": pools}}
        return builder.build()
