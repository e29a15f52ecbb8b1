"""Data-parallel accuracy sweeps of the exact simulator over torch.distributed.

Each rank simulates one contiguous shard of the samples and the ranks sum their correct counts
and totals with ``all_reduce``. The simulator's integers do not depend on the batch (DESIGN §5),
so the accuracy equals the one-process result exactly, for any number of ranks.

This module needs only the IR and the simulator; compiling a model file and the command line,
which need the frontends and passes, are in ``snncompile.report.sweep``:

    torchrun --nproc-per-node 2 -m snncompile.report.sweep MODEL --steps 32 [--device cpu]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from snncompile.ir.graph import Graph
from snncompile.sim import fixed


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def __str__(self) -> str:
        return f"{self.value:.6f} ({self.correct}/{self.total})"


def shard(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n`` samples; the shares cover each sample once."""
    return slice(n * rank // world, n * (rank + 1) // world)


def count_correct(graph: Graph, x: np.ndarray, y: np.ndarray, steps: int, *, batch_size: int = 256,
                  device: str | None = None) -> Accuracy:
    """Correct predictions (argmax of the readout, first index on ties) among ``x`` in this process."""
    correct = 0
    for start in range(0, len(x), batch_size):
        result = fixed.simulate(graph, x[start:start + batch_size], steps, device=device, record=False)
        predicted = np.argmax(fixed.output_values(graph, result), axis=1)
        correct += int(np.sum(predicted == y[start:start + batch_size]))
    return Accuracy(correct, len(x))


def sweep(graph: Graph, x: np.ndarray, y: np.ndarray, steps: int, *, batch_size: int = 256,
          device: str | None = None) -> Accuracy:
    """Accuracy of ``graph`` on all of (x, y), every rank of the default process group (if one
    is initialised) simulating its shard; every rank passes the same full ``x`` and ``y``."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} samples but {len(y)} labels")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    part = shard(len(x), rank, world)
    local = count_correct(graph, x[part], y[part], steps, batch_size=batch_size, device=device)
    if world == 1:
        return local
    where = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    counts = torch.tensor([local.correct, local.total], dtype=torch.int64, device=where)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    correct, total = counts.tolist()
    return Accuracy(int(correct), int(total))
