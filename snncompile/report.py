"""The compilation report: report.json (machine-readable) and report.md (for people)."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import snncompile
from snncompile.ir.graph import Graph
from snncompile.ir.ops import IF, FixedConv2d, FixedDense, LoihiNeuron


@dataclass
class Report:
    data: dict

    def summary(self) -> str:
        d = self.data
        be = d["bit_exact"]
        ratio = d["fidelity"]["snn_over_ann"]
        lines = [
            f"target: {d['target']}   steps: {d['steps']}   test samples: {d['test_samples']}",
            f"ANN accuracy: {_pct(d['ann_accuracy'])}",
            f"float SNN accuracy: {_pct(d['float_snn_accuracy'])}",
        ]
        if d["snn_accuracy"] is not None:
            lines.append(f"SNN accuracy: {_pct(d['snn_accuracy'])} (Loihi 2 fixed point, reference simulator)"
                         + ("" if ratio is None else f"   SNN/ANN: {ratio:.3f}"))
        if be is not None:
            lines.append(f"Lava fixed_pt vs reference: {be['samples']} samples x {be['layers']} layers x "
                         f"{be['steps']} steps, mismatches: {be['mismatches']}")
            lines.append(f"saturations: {sum(layer['saturations'] for layer in d['layers'])}"
                         + _breakdown(d["layers"]))
        return "\n".join(lines)


def _pct(a) -> str:
    return "n/a" if a is None else f"{100 * a:.2f} %"


def _breakdown(layers: list[dict]) -> str:
    """' (2 v_clipped_low in relu_2, ...)' for the non-zero overflow counters, or ''."""
    parts = [
        f"{count} {kind} in {layer['name']}"
        for layer in layers
        for kind, count in layer["overflow"].items()
        if count and kind not in ("spikes", "saturations")
    ]
    return f" ({', '.join(parts)})" if parts else ""


def _synapses(graph: Graph, neuron: str) -> int:
    total = 0
    for src in graph.inputs(neuron):
        op = graph.op(src)
        if isinstance(op, FixedDense):
            total += int(np.count_nonzero(op.weight))
        elif isinstance(op, FixedConv2d):
            # every output neuron receives a kernel's worth of (in/groups · kH · kW) synapses
            total += int(np.prod(graph.shape(neuron))) * int(np.prod(op.weight.shape[1:]))
    return total


def build_report(*, options, float_graph, snn_graph, fixed_graph, ann_accuracy, float_snn_accuracy,
                 snn_accuracy, ann_logits, snn_logits, stats, comparison, test_samples, calib_samples,
                 timings) -> Report:
    layers = _fixed_layers(fixed_graph, snn_graph, stats, test_samples, options.steps) if fixed_graph else [
        {"name": n, "op": snn_graph.op(n).kind.value, "shape": list(snn_graph.shape(n)),
         "neurons": int(np.prod(snn_graph.shape(n))), "synapses": None,
         "threshold": float(np.max(snn_graph.op(n).threshold)) if hasattr(snn_graph.op(n), "threshold") else None,
         "vth": None, "scale": None, "spike_rate": None, "saturations": 0, "overflow": {}}
        for n, op in snn_graph.nodes() if op.neuron
    ]
    fidelity = {
        "snn_over_ann": None if not ann_accuracy or snn_accuracy is None else snn_accuracy / ann_accuracy,
        "float_snn_over_ann": None if not ann_accuracy else float_snn_accuracy / ann_accuracy,
    }
    if ann_logits is not None and snn_logits is not None:
        err = np.abs(np.asarray(ann_logits) - np.asarray(snn_logits))
        fidelity |= {
            "output_mean_abs_error": float(err.mean()),
            "output_max_abs_error": float(err.max()),
            "agreement_with_ann": float(np.mean(ann_logits.argmax(1) == snn_logits.argmax(1))),
        }
    data = {
        "target": options.target,
        "steps": options.steps,
        "data": options.data,
        "test_samples": test_samples,
        "calib_samples": calib_samples,
        "ann_accuracy": ann_accuracy,
        "float_snn_accuracy": float_snn_accuracy,
        "snn_accuracy": snn_accuracy,
        "fidelity": fidelity,
        "bit_exact": None if comparison is None else comparison.as_dict(),
        "layers": layers,
        "input_encoding": "first layer computed on the host, fed as neuron bias (13-bit mantissa, "
                          "3-bit exponent) every step",
        "readout": "non-spiking neuron (vth at maximum), membrane read after the last step",
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "environment": {
            "snncompile": snncompile.__version__, "python": platform.python_version(),
            "torch": torch.__version__, "device": options.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        },
    }
    return Report(data)


def _fixed_layers(fixed_graph, snn_graph, stats, test_samples, steps) -> list[dict]:
    quant = fixed_graph.metadata.get("quantization", {})
    layers = []
    for name in fixed_graph.find(LoihiNeuron):
        op = fixed_graph.op(name)
        float_op = snn_graph.op(name)
        s = stats[name]
        q = quant.get(name, {})
        neurons = int(np.prod(fixed_graph.shape(name)))
        layers.append({
            "name": name,
            "op": "readout" if op.readout else f"IF ({op.reset.value} reset)",
            "shape": list(fixed_graph.shape(name)),
            "neurons": neurons,
            "synapses": _synapses(fixed_graph, name),
            "threshold": float(np.max(float_op.threshold)) if isinstance(float_op, IF) else None,
            "vth": int(np.max(op.vth)),
            "scale": q.get("scale"),
            "spike_rate": s.spikes / max(1, neurons * test_samples * steps),
            "saturations": s.saturations + q.get("weight_saturated", 0) + q.get("bias_saturated", 0),
            "overflow": s.as_dict() | {
                "weight_saturated": q.get("weight_saturated", 0),
                "bias_quantization_saturated": q.get("bias_saturated", 0),
            },
        })
    return layers


def _md(report: Report) -> str:
    d = report.data
    be = d["bit_exact"]
    fid = d["fidelity"]
    lines = [
        "# snncompile report",
        "",
        f"Target **{d['target']}**, {d['steps']} steps, data `{d['data']}` "
        f"({d['calib_samples']} calibration samples, {d['test_samples']} test samples).",
        "",
        "| | accuracy |",
        "|---|---|",
        f"| ANN (float) | {_pct(d['ann_accuracy'])} |",
        f"| SNN (float, one step of delay per synaptic layer) | {_pct(d['float_snn_accuracy'])} |",
        f"| SNN (Loihi 2 fixed point, reference) | {_pct(d['snn_accuracy'])} |",
        "",
    ]
    if fid.get("snn_over_ann") is not None:
        lines += [f"SNN/ANN accuracy ratio: {fid['snn_over_ann']:.4f}; prediction agreement with the ANN: "
                  f"{_pct(fid.get('agreement_with_ann'))}; mean |ANN − SNN| output error: "
                  f"{fid.get('output_mean_abs_error', float('nan')):.4f}.", ""]
    if be is not None:
        first = be["first_mismatch"]
        lines += [
            "## Bit-exactness: Lava fixed_pt vs reference simulator",
            "",
            f"{be['samples']} samples × {be['layers']} layers × {be['steps']} steps, spikes and membrane "
            f"of every neuron: **{be['mismatches']} mismatches**"
            + ("." if first is None else
               f"; first at layer {first['layer']}, step {first['step']}, index {first['index']}."),
            "",
        ]
    lines += [
        "## Layers",
        "",
        "| layer | op | shape | neurons | synapses | threshold | vth | spike rate | saturations |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    show = lambda v, fmt="{}": "—" if v is None else fmt.format(v)  # noqa: E731
    for layer in d["layers"]:
        lines.append(
            f"| {layer['name']} | {layer['op']} | {tuple(layer['shape'])} | {layer['neurons']} | "
            f"{show(layer['synapses'])} | {show(layer['threshold'], '{:.4g}')} | {show(layer['vth'])} | "
            f"{show(layer['spike_rate'], '{:.4f}')} | {layer['saturations']} |"
        )
    lines += ["", f"Input: {d['input_encoding']}. Readout: {d['readout']}.", ""]
    return "\n".join(lines)


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def write_report(report: Report, outdir: Path) -> dict[str, Path]:
    json_path = outdir / "report.json"
    md_path = outdir / "report.md"
    json_path.write_text(json.dumps(_clean(report.data), indent=2) + "\n")
    md_path.write_text(_md(report))
    return {"report_json": json_path, "report_md": md_path}
