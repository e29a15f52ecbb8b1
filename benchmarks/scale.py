"""At real size (issue 16): compile time, memory, latency and placement of deep networks.

For the CIFAR ResNet-20 (32×32, trained: examples/digits32_resnet20.pt2), the CIFAR VGG-16 (32×32)
and torchvision's ResNet-18 (224×224), each in a fresh process so peak RSS is its own:
params, neurons, synaptic layers, latency steps (L), torch.export seconds and ``inspect`` seconds
in the same process and their ratio, peak RSS, cores, lower bound and ratio. For the models named
by ``--full`` (default: ResNet-20) the full default compile (``--target loihi2 --samples 1``, on
digits upsampled to 32×32×3) broken down by phase, with its accuracies. Then compile time at three
widths of one family (ResNet-20 at ¼, ½ and full width… and 2×) to show growth.

    .venv/bin/python benchmarks/scale.py [--full resnet20,vgg16] [--skip-growth]

Writes benchmarks/results/scale.md; every measured row is also printed as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scale.md"

CHILD = r"""
import json, resource, sys, time, warnings
sys.path.insert(0, {root!r})
warnings.simplefilter("ignore")
import numpy as np, torch
from tests.zoo import models
from snncompile import api
from snncompile.ir.ops import FixedConv2d, FixedDense, LoihiNeuron

name, size, mode, channels, tmp = {name!r}, {size}, {mode!r}, {channels!r}, {tmp!r}
torch.manual_seed(0)
if name == "resnet20" and channels is None:
    model = torch.export.load({root!r} + "/examples/digits32_resnet20.pt2").module()
    model = models.ResNet20()
    model.load_state_dict(torch.export.load({root!r} + "/examples/digits32_resnet20.pt2").state_dict)
elif name == "resnet20":
    model = models.randomize_batchnorm(models.ResNet20(channels=tuple(channels)))
elif name == "vgg16":
    model = models.randomize_batchnorm(models.VGG16())
else:
    model = models.randomize_batchnorm(models.torchvision_model(name))
model = model.eval()
row = dict(model=name, size=size, channels=channels, params=sum(p.numel() for p in model.parameters()))
if size == 32:
    data = models.write_digits32(tmp + "/digits32.npz")
else:
    rng = np.random.default_rng(0)
    data = tmp + "/random.npz"
    np.savez(data, x=rng.random((2, 3, size, size), dtype=np.float32),
             x_train=rng.random((2, 3, size, size), dtype=np.float32))
t0 = time.perf_counter()
program = torch.export.export(model, (torch.zeros(1, 3, size, size),))
row["export_s"] = time.perf_counter() - t0
pt2 = tmp + "/model.pt2"
torch.export.save(program, pt2)
del program
options = dict(data=data, maxpool="avg", chips=1024, progress=False)
if size != 32:
    options["calib_samples"] = 2
if mode == "inspect":
    t0 = time.perf_counter()
    result = api.inspect_model(pt2, api.Options(**options))
    row["inspect_s"] = time.perf_counter() - t0
    fixed, placement = result.fixed_graph, result.placement
else:
    t0 = time.perf_counter()
    compiled = api.compile_model(pt2, tmp + "/out", api.Options(**options, samples=1))
    row["compile_s"] = time.perf_counter() - t0
    fixed, placement = compiled.fixed_graph, compiled.placement
    d = compiled.report.data
    row.update(phases={{k: round(v, 1) for k, v in d["timings_s"].items()}}, ann=d["ann_accuracy"],
               float_snn=d["float_snn_accuracy"], snn=d["snn_accuracy"], mismatches=d["bit_exact"]["mismatches"],
               steps=d["steps"], test_samples=d["test_samples"])
row.update(
    neurons=sum(int(np.prod(fixed.shape(n))) for n, op in fixed.nodes() if isinstance(op, LoihiNeuron)),
    synaptic_layers=sum(isinstance(op, (FixedConv2d, FixedDense)) for _, op in fixed.nodes()),
    latency_steps=fixed.metadata.get("latency", {{}}).get("steps"),
    cores=placement.cores_used, lower_bound=placement.lower_bound,
)
row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps(row))
"""


def measure(name: str, size: int, mode: str, channels=None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        code = CHILD.format(root=str(ROOT), name=name, size=size, mode=mode, channels=channels, tmp=tmp)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=7200)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return {"model": name, "size": size, "mode": mode, "channels": channels, "error": tail}
    return json.loads(lines[-1]) | {"mode": mode}


def _ratio(a, b):
    return f"{a / b:.1f}" if a and b else "–"


def render(rows: list[dict]) -> str:
    inspect = [r for r in rows if r.get("mode") == "inspect" and r.get("channels") is None]
    full = [r for r in rows if r.get("mode") == "full"]
    growth = [r for r in rows if r.get("mode") == "inspect" and r.get("channels") is not None]
    out = [
        "# At real size: compile time, memory, latency, placement",
        "",
        f"`.venv/bin/python benchmarks/scale.py` on {platform.machine()}, {os.cpu_count()} CPU(s), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; one fresh process per row (peak RSS its own); "
        "torch.export and `inspect` timed in the same process, export first. ResNet-20 is the trained "
        "examples/digits32_resnet20.pt2; VGG-16 and ResNet-18 are untrained (BatchNorm statistics randomized). "
        "L: latency steps (synaptic layers from the host to the readout); every run lasts T + L steps.",
        "",
        "## Inspect (load, convert, quantize, place; nothing simulated)",
        "",
        "| model | input | params | neurons | synaptic layers | L | torch.export s | inspect s | inspect / export "
        "| peak RSS GB | cores | lower bound | cores / bound |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in inspect:
        if "error" in r:
            out.append(f"| {r['model']} | {r['size']}×{r['size']} | error: {r['error']} |" + " |" * 10)
            continue
        out.append(f"| {r['model']} | {r['size']}×{r['size']} | {r['params'] / 1e6:.2f} M | {r['neurons']:,} "
                   f"| {r['synaptic_layers']} | {r['latency_steps']} | {r['export_s']:.1f} | {r['inspect_s']:.1f} "
                   f"| {_ratio(r['inspect_s'], r['export_s'])} | {r['peak_rss_gb']:.2f} | {r['cores']} "
                   f"| {r['lower_bound']} | {r['cores'] / r['lower_bound']:.2f} |")
    if full:
        out += ["", "## Full default compile (`--target loihi2 --samples 1`, digits upsampled to 32×32×3)", "",
                "| model | test samples | T + L | ANN | float SNN | SNN (fixed point) | Lava mismatches | total s "
                "| peak RSS GB | seconds by phase |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in full:
            if "error" in r:
                out.append(f"| {r['model']} | error: {r['error']} |" + " |" * 8)
                continue
            phases = ", ".join(f"{k.removesuffix('_s')} {v}" for k, v in r["phases"].items())
            out.append(f"| {r['model']} | {r['test_samples']} | {r['steps']} + {r['latency_steps']} "
                       f"| {100 * r['ann']:.2f} % | {100 * r['float_snn']:.2f} % | {100 * r['snn']:.2f} % "
                       f"| {r['mismatches']} | {r['compile_s']:.0f} | {r['peak_rss_gb']:.2f} | {phases} |")
    if growth:
        out += ["", "## Growth: `inspect` of ResNet-20 at four widths (untrained)", "",
                "| channels | params | neurons | inspect s | peak RSS GB | cores |", "|---|---:|---:|---:|---:|---:|"]
        for r in growth:
            if "error" in r:
                out.append(f"| {r['channels']} | error: {r['error']} |" + " |" * 4)
                continue
            out.append(f"| {tuple(r['channels'])} | {r['params'] / 1e6:.2f} M | {r['neurons']:,} | {r['inspect_s']:.1f} "
                       f"| {r['peak_rss_gb']:.2f} | {r['cores']} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", default="resnet20", help="models to compile in full (comma-separated; '' for none)")
    parser.add_argument("--skip-growth", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    jobs = [("resnet20", 32, "inspect", None), ("vgg16", 32, "inspect", None), ("resnet18", 224, "inspect", None)]
    jobs += [(m, 32, "full", None) for m in args.full.split(",") if m]
    if not args.skip_growth:
        jobs += [("resnet20", 32, "inspect", c) for c in ([4, 8, 16], [8, 16, 32], [16, 32, 64], [32, 64, 128])]
    rows = []
    for job in jobs:
        row = measure(*job)
        print(json.dumps(row), flush=True)
        rows.append(row)
    text = render(rows)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
