"""Residual connection types on Loihi 2: accuracy, cost and bit agreement with Lava.

    python examples/train_spiking_resnet.py                  # the four LIF models
    python examples/train_spiking_resnet.py --neuron if --connections membrane_add
    python benchmarks/residual.py                            # writes benchmarks/results/residual.md

For each examples/spiking_resnet_<connection>_<neuron>.pt2 it runs ``api.compile_model`` with
``--target loihi2`` at the model's trained T (digits test split, 360 samples): float SNN accuracy
(``sim.snn``, one step of delay per synapse, the trained semantics), fixed-point accuracy
(reference simulator), Lava fixed_pt vs reference on ``--samples`` samples (spikes and v, every
layer, every step), and, separately, the same Lava check at ``--lava-steps`` (default 16).
Neurons and synapses are counted on the fixed-point graph (synapses = non-zero weights times the
positions they are applied at); "residual cost" is what the connections add (passes.residual).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snncompile import api  # noqa: E402
from snncompile.backends import reference  # noqa: E402
from snncompile.backends.lava import run_lava  # noqa: E402
from snncompile.data import digits  # noqa: E402
from snncompile.ir import FixedConv2d, FixedDense, LoihiNeuron  # noqa: E402
from snncompile.passes.residual import synapse_count  # noqa: E402
from snncompile.sim.ann import encode_inputs  # noqa: E402
from snncompile.sim.trace import compare  # noqa: E402

LOWERING = {
    "membrane_add": "identity shortcut synapses onto the block's output neurons",
    "sew_add": "synapse fan-in: one copy of each reading synapse per addend (binary spikes)",
    "sew_iand": "relay neuron per position (+1 from x, -1 from a, threshold 0.5, no memory)",
    "dense_add": "identity synapses from every earlier output onto each later block's neurons",
}


def costs(graph) -> tuple[int, int]:
    """(neurons, synapses) of a fixed-point graph."""
    neurons = sum(int(np.prod(graph.shape(n))) for n in graph.find(LoihiNeuron))
    synapses = sum(synapse_count(graph.op(s), graph.shape(graph.inputs(s)[0]))
                   for s in graph.find((FixedDense, FixedConv2d)))
    return neurons, synapses


def row(path: Path, steps: int, samples: int, lava_steps: int, outdir: Path) -> dict:
    connection, neuron = path.stem.removeprefix("spiking_resnet_").rsplit("_", 1)
    start = time.perf_counter()
    options = api.Options(target="loihi2", steps=steps, samples=samples, progress=False, device="cpu")
    compiled = api.compile_model(path, outdir / path.stem, options)
    d = compiled.report.data
    fixed = compiled.fixed_graph
    x = digits().test.x[:samples]
    ref = reference.run(fixed, x, lava_steps, device="cpu").trace
    long_check = compare(ref, run_lava(fixed, x, lava_steps, encoded=encode_inputs(fixed, x)))
    neurons, synapses = costs(fixed)
    extra = fixed.metadata.get("residual", [])
    return {
        "connection": connection, "neuron": neuron,
        "float": d["float_snn_accuracy"], "fixed": d["snn_accuracy"],
        "neurons": neurons, "synapses": synapses,
        "extra_neurons": sum(e["extra_neurons"] for e in extra),
        "extra_synapses": sum(e["extra_synapses"] for e in extra),
        "lava": d["bit_exact"], "lava_long": long_check.as_dict(),
        "saturations": sum(layer["saturations"] for layer in d["layers"]),
        "seconds": time.perf_counter() - start,
    }


def table(rows: list[dict], steps: int) -> str:
    lines = [
        "# Residual connections on Loihi 2 (digits 8x8, spiking ResNet: stem + 2 blocks, 8 channels)",
        "",
        f"Produced by `python benchmarks/residual.py` from the models of `examples/train_spiking_resnet.py`. "
        f"T = {steps} steps (the trained T), 360 test samples. Float SNN: the trained network's own "
        "semantics (one step of delay per synapse); fixed point: Loihi 2 integers on the reference "
        "simulator; Lava: spikes and v of every layer at every step, Lava fixed_pt vs reference "
        "(mismatching values / samples x layers x steps).",
        "",
        "| connection | neuron | float SNN acc. | fixed-point acc. | Δ (pp) | neurons | synapses "
        "| residual cost (neurons / synapses) | Lava vs reference, T | Lava vs reference, 16+ steps "
        "| saturations |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        short, long = r["lava"], r["lava_long"]
        lines.append(
            f"| {r['connection']} | {r['neuron']} | {100 * r['float']:.2f} % | {100 * r['fixed']:.2f} % "
            f"| {100 * (r['fixed'] - r['float']):+.2f} | {r['neurons']} | {r['synapses']} "
            f"| {r['extra_neurons']} / {r['extra_synapses']} "
            f"| {short['mismatches']} / {short['samples']}x{short['layers']}x{short['steps']} "
            f"| {long['mismatches']} / {long['samples']}x{long['layers']}x{long['steps']} "
            f"| {r['saturations']} |")
    lines += ["", "Lowerings (all binary: only 0/1 spikes travel, no graded messages):", ""]
    lines += [f"- **{k}**: {v}" for k, v in LOWERING.items()]
    lines += ["", "lif: leaky (beta 0.9 -> dv = 410), reset to zero (Lava's LIF); if: no leak, reset by "
              "subtraction (our SubtractiveLIF). Neurons include the 10 readout neurons."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "examples")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--lava-steps", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "residual.md")
    args = parser.parse_args(argv)
    paths = sorted(args.models.glob("spiking_resnet_*.pt2"),
                   key=lambda p: (p.stem.endswith("_if"), [c in p.stem for c in LOWERING].index(True)))
    work = Path("/tmp") / "snncompile-residual"
    rows = []
    for path in paths:
        rows.append(row(path, args.steps, args.samples, args.lava_steps, work))
        r = rows[-1]
        print(f"{path.name}: float {r['float']:.4f} fixed {r['fixed']:.4f} lava mismatches "
              f"{r['lava']['mismatches']}+{r['lava_long']['mismatches']} ({r['seconds']:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(rows, args.steps))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
