"""Which real architectures lower to Loihi 2, and what they cost: benchmarks/results/zoo.md.

Every model is built by its own constructor (torchvision's, weights=None, BatchNorm statistics
randomized so folding is exercised; the calibration paper's CIFAR ResNet-20 and VGG-16), exported
with torch.export, and compiled to placed Loihi 2 fixed point by the API of ``snncompile inspect``
(``--maxpool avg``, as many chips as it needs), each in a fresh process so that its peak memory is
its own. Columns: lowers (or the one-line refusal), parameters, neurons, synaptic layers (fixed-point
synapse ops), relay populations, cores, chips, torch.export seconds, inspect seconds, peak RSS.

    .venv/bin/python benchmarks/zoo.py [--size 224] [--models resnet18,vgg16_bn]
    .venv/bin/python benchmarks/zoo.py --from-log run1.log run2.log   # the table from printed rows

Each measured row is printed as one JSON line; ``--from-log`` renders the table from such lines
(later rows of a model replace earlier ones), for a zoo measured in several runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "zoo.md"
MODELS_224 = ("resnet18", "resnet34", "vgg11_bn", "vgg16_bn", "alexnet", "mobilenet_v2", "squeezenet1_1",
              "densenet121", "efficientnet_b0", "regnet_x_400mf")
MODELS_32 = ("resnet20", "vgg16")

CHILD = r"""
import json, resource, sys, time, warnings
sys.path.insert(0, {root!r})
warnings.simplefilter("ignore")
import numpy as np, torch
from tests.zoo import models
from snncompile import api
from snncompile.errors import SnnCompileError
from snncompile.ir.ops import FixedConv2d, FixedDense, LoihiNeuron

name, size = {name!r}, {size}
torch.manual_seed(0)
if name == "resnet20":
    model = models.ResNet20()
elif name == "vgg16":
    model = models.VGG16()
else:
    model = models.torchvision_model(name)
model = models.randomize_batchnorm(model.eval())
params = sum(p.numel() for p in model.parameters())
rng = np.random.default_rng(0)
data = {tmp!r}
np.savez(data, x=rng.random((2, 3, size, size), dtype=np.float32),
         x_train=rng.random((2, 3, size, size), dtype=np.float32))
row = dict(model=name, size=size, params=params)
t0 = time.perf_counter()
program = torch.export.export(model, (torch.zeros(1, 3, size, size),))
row["export_s"] = time.perf_counter() - t0
torch.export.save(program, {pt2!r})
del program
t0 = time.perf_counter()
try:
    result = api.inspect_model({pt2!r}, api.Options(data=data, maxpool="avg", calib_samples=2, chips=1024,
                                                    progress=False))
except SnnCompileError as exc:
    row.update(lowers=False, error=str(exc))
else:
    fixed, placement = result.fixed_graph, result.placement
    row.update(
        lowers=True,
        neurons=sum(int(np.prod(fixed.shape(n))) for n, op in fixed.nodes() if isinstance(op, LoihiNeuron)),
        synaptic_layers=sum(isinstance(op, (FixedConv2d, FixedDense)) for _, op in fixed.nodes()),
        relays=len(result.snn_graph.metadata.get("linear_regions", {{}}).get("relays", [])),
        cores=placement.cores_used, chips=placement.chips_used, lower_bound=placement.lower_bound,
    )
row["inspect_s"] = time.perf_counter() - t0
row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps(row))
"""


def measure(name: str, size: int, tmp: Path) -> dict:
    code = CHILD.format(root=str(ROOT), name=name, size=size, tmp=str(tmp / f"{name}.npz"),
                        pt2=str(tmp / f"{name}.pt2"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [
            "killed (SIGKILL: out of memory?)" if proc.returncode == -9 else f"exit {proc.returncode}"])[-1]
        return {"model": name, "size": size, "lowers": False, "error": f"crashed: {tail}"}
    return json.loads(lines[-1])


def table(rows: list[dict]) -> str:
    head = ("| model | input | lowers | params | neurons | synaptic layers | relays | cores | lower bound | chips "
            "| torch.export s | inspect s | inspect / export | peak RSS GB |")
    out = [head, "|" + "|".join("---" for _ in range(14)) + "|"]
    for r in rows:
        if r.get("lowers"):
            out.append(f"| {r['model']} | {r['size']}×{r['size']} | yes | {r['params'] / 1e6:.1f} M "
                       f"| {r['neurons']:,} | {r['synaptic_layers']} | {r['relays']} | {r['cores']} "
                       f"| {r['lower_bound']} | {r['chips']} | {r['export_s']:.1f} | {r['inspect_s']:.1f} "
                       f"| {r['inspect_s'] / r['export_s']:.1f} | {r['peak_rss_gb']:.2f} |")
        else:
            error = r.get("error", "?").replace("|", "/")
            if len(error) > 300:
                error = error[:300] + " …"
            out.append(f"| {r['model']} | {r['size']}×{r['size']} | no: {error} | "
                       + " | ".join("" for _ in range(11)) + " |")
    return "\n".join(out)


def main() -> None:
    import platform
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", default=None, help="comma-separated; default: the whole zoo")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--from-log", nargs="+", default=None, metavar="LOG")
    args = parser.parse_args()
    rows = []
    if args.from_log:
        by_model = {}
        for log in args.from_log:
            for line in Path(log).read_text().splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    by_model[row["model"], row["size"]] = row
        order = [(m, 224) for m in MODELS_224] + [(m, 32) for m in MODELS_32]
        rows = [by_model[k] for k in order if k in by_model] + [r for k, r in by_model.items() if k not in order]
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [] if args.from_log else [(m, args.size) for m in (args.models.split(",") if args.models else MODELS_224)]
        if not args.models and not args.from_log:
            jobs += [(m, 32) for m in MODELS_32]
        for name, size in jobs:
            row = measure(name, size, Path(tmp))
            print(json.dumps(row), flush=True)
            rows.append(row)
    text = (f"# Model zoo: what lowers to Loihi 2, and its cost\n\n"
            f"`.venv/bin/python benchmarks/zoo.py` on {platform.machine()}, {__import__('os').cpu_count()} "
            "CPU(s); one fresh process per model; `inspect` level (load, --maxpool avg, convert, quantize, "
            "place; nothing simulated); untrained weights with randomized BatchNorm statistics, two random "
            "calibration samples.\n\n" + table(rows) + "\n")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
