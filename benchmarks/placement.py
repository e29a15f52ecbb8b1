"""Placement at real size: ResNet-20 and VGG-16 at 32x32, ResNet-18 at 224x224 (issue 16).

Each model goes through the compiler's stages (load, convert, quantize) on random data, then the
partition pass alone is timed, each model in a fresh process so that peak RSS is its own.
Writes benchmarks/results/placement.md.

    .venv/bin/python benchmarks/placement.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = (("ResNet-20", "ResNet20", 32), ("VGG-16", "VGG16", 32), ("ResNet-18", "resnet18", 224))


def one(constructor: str, size: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from snncompile import api
    from snncompile.frontends.torch import from_module
    from snncompile.ir import LoihiNeuron
    from snncompile.passes import pipeline
    from snncompile.passes.partition import Partition
    from snncompile.targets.loihi2 import LOIHI2
    from tests.zoo import models

    model = getattr(models, constructor)() if hasattr(models, constructor) else models.torchvision_model(constructor)
    model = models.randomize_batchnorm(model.eval())
    calib = np.random.default_rng(0).random((2, 3, size, size)).astype("float32")
    options = api.Options(maxpool="avg", calib_samples=2, progress=False, chips=1024)
    graph = from_module(model, torch.zeros(1, 3, size, size))
    snn = api.to_snn(api.prepare(graph, options), calib, options)
    fixed = pipeline.run(snn, (pipeline.Quantize(data=calib, steps=32),))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    placement = Partition(target=LOIHI2, chips=1024)(fixed)
    seconds = time.perf_counter() - start
    neurons = sum(int(np.prod(fixed.shape(n))) for n in fixed.find(LoihiNeuron))
    return {"neurons": neurons, "params": sum(p.numel() for p in model.parameters()),
            "cores": placement.cores_used, "lower_bound": placement.lower_bound,
            "terms": placement.lower_bound_terms(), "ratio": placement.ratio, "seconds": seconds,
            "rss_before_gb": before, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(one(sys.argv[1], int(sys.argv[2]))))
        return
    rows = ["| model | input | params | neurons | cores | lower bound (neurons / bytes / fan-in / fan-out) | "
            "ratio | partition s | peak RSS before / after partition (GB) |", "|---|---|---|---|---|---|---|---|---|"]
    for label, constructor, size in MODELS:
        out = subprocess.run([sys.executable, __file__, constructor, str(size)], capture_output=True, text=True,
                             check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        t = r["terms"]
        rows.append(f"| {label} | {size}x{size} | {r['params']:,} | {r['neurons']:,} | {r['cores']} | "
                    f"{r['lower_bound']} ({t['neurons']} / {t['synapse_bytes']} / {t['fan_in']} / {t['fan_out']}) | "
                    f"{r['ratio']:.3f} | {r['seconds']:.2f} | {r['rss_before_gb']:.2f} / {r['rss_gb']:.2f} |")
        print(rows[-1], flush=True)
    text = ("# Placement on Loihi 2 cores\n\n"
            "`benchmarks/placement.py`: each model compiled (random weights, BatchNorm randomized, 2 random "
            "calibration samples) to the fixed-point graph, then `Partition(chips=1024)` alone timed; one process "
            "per model, on this machine's 2 shared cores. Peak RSS is the process's (the compile before the "
            "partition included). Lower bound: max over resources of the unsplit need / the per-core limit.\n\n"
            + "\n".join(rows) + "\n")
    (ROOT / "benchmarks" / "results" / "placement.md").write_text(text)


if __name__ == "__main__":
    main()
