"""Accuracy sweep of a model file over a data set, data-parallel under torchrun.

    torchrun --nproc-per-node 2 -m snncompile.report.sweep MODEL --steps 32 [--device cpu]

Without torchrun (no process group) the same command runs as one process. The backend is gloo
on the CPU and nccl on CUDA, where rank r uses GPU ``LOCAL_RANK``. The sharding and the
reduction are ``snncompile.sim.distributed``; this module adds loading and compiling.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from snncompile.compiler import load_model
from snncompile.data import load
from snncompile.errors import DataError
from snncompile.passes import pipeline
from snncompile.sim import fixed
from snncompile.sim.distributed import Accuracy, sweep


def evaluate_model(model: str | Path, steps: int, *, data: str = "digits", calib_samples: int = 256,
                   samples: int | None = None, batch_size: int = 256, device: str | None = None) -> Accuracy:
    """Compile ``model`` for Loihi 2 (``pipeline.loihi2`` on the first ``calib_samples`` training
    samples) and sweep the exact simulator over the test split (its first ``samples``).

    Under a process group rank 0 compiles and sends the graph to the others, so every rank
    simulates the very same integers.
    """
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
    p = argparse.ArgumentParser(prog="python -m snncompile.report.sweep", description=__doc__.splitlines()[0])
    p.add_argument("model", help="a float model file (torch.export .pt2)")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--data", default="digits", help="digits or a .npz with x, y (and x_train)")
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--samples", type=int, default=None, help="first N test samples (default: all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", choices=["cpu", "cuda"], default=fixed.default_device())
    args = p.parse_args(argv)
    device = _init_from_env(args.device)
    done = False
    try:
        acc = evaluate_model(args.model, args.steps, data=args.data, calib_samples=args.calib_samples,
                             samples=args.samples, batch_size=args.batch_size, device=device)
        world = dist.get_world_size() if dist.is_initialized() else 1
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(f"accuracy {acc} steps {args.steps} processes {world} device {args.device}", flush=True)
        done = True
    finally:
        if dist.is_initialized():
            if done:
                dist.barrier()  # every rank reaches the teardown before any leaves
            dist.destroy_process_group()
            if done:
                # A rank still aborted in the interpreter's own teardown now and then (gloo's
                # threads: "terminate called without an active exception", after the result was
                # printed and the group destroyed): a rank whose work is done leaves without it.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)


if __name__ == "__main__":
    main()
