"""Data-parallel accuracy sweeps of the exact simulator over torch.distributed.

Each rank simulates one contiguous shard of the samples and the ranks sum their correct counts
and totals with ``all_reduce``. The simulator's integers do not depend on the batch (DESIGN §5),
so the accuracy equals the one-process result exactly, for any number of ranks.

    torchrun --nproc-per-node 2 -m snncompile.sim.distributed MODEL --steps 32 [--device cpu]

Without torchrun (no process group) the same command runs as one process. The backend is gloo
on the CPU and nccl on CUDA, where rank r uses GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from snncompile.errors import DataError
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


def evaluate_model(model: str | Path, steps: int, *, data: str = "digits", calib_samples: int = 256,
                   samples: int | None = None, batch_size: int = 256, device: str | None = None) -> Accuracy:
    """Compile ``model`` for Loihi 2 (``pipeline.loihi2`` on the first ``calib_samples`` training
    samples) and sweep the exact simulator over the test split (its first ``samples``).

    Under a process group rank 0 compiles and sends the graph to the others, so every rank
    simulates the very same integers.
    """
    # The command-line entry needs the frontend, data and passes, which sit above sim/; importing
    # them here keeps ``sweep`` usable with nothing but the IR and the simulator.
    from snncompile.api import load_model
    from snncompile.data import load
    from snncompile.passes import pipeline

    rank = dist.get_rank() if dist.is_initialized() else 0
    graph = load_model(model)
    ds = load(data, graph.shape(graph.input_names()[0]))
    test = ds.test.head(samples)
    if test.y is None:
        raise DataError(f"{data}: the test split has no labels; an accuracy needs 'y'")
    fixed_graph = [pipeline.run(graph, pipeline.loihi2(ds.train.x[:calib_samples], steps)) if rank == 0 else None]
    if dist.is_initialized():
        dist.broadcast_object_list(fixed_graph, src=0)
    return sweep(fixed_graph[0], test.x, test.y, steps, batch_size=batch_size, device=device)


def _init_from_env(device: str) -> str:
    """Join the process group torchrun describes in the environment; the rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return f"cuda:{local}"
    dist.init_process_group("gloo")
    return device


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m snncompile.sim.distributed", description=__doc__.splitlines()[0])
    p.add_argument("model", help="a float model file (torch.export .pt2)")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--data", default="digits", help="digits or a .npz with x, y (and x_train)")
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--samples", type=int, default=None, help="first N test samples (default: all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", choices=["cpu", "cuda"], default=fixed.default_device())
    args = p.parse_args(argv)
    device = _init_from_env(args.device)
    try:
        acc = evaluate_model(args.model, args.steps, data=args.data, calib_samples=args.calib_samples,
                             samples=args.samples, batch_size=args.batch_size, device=device)
        world = dist.get_world_size() if dist.is_initialized() else 1
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(f"accuracy {acc} steps {args.steps} processes {world} device {args.device}", flush=True)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
