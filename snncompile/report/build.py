"""The compilation report: report.json (machine-readable) and report.md (for people)."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from snncompile.ir.graph import Graph
from snncompile.ir.ops import IF, FixedConv2d, FixedDense, Flatten, LoihiNeuron, Output
from snncompile.passes.partition import Placement, connections, incoming, spike_source
from snncompile.report.labels import accuracy_labels
from snncompile.sim.fixed import sum_dtypes
from snncompile.sim.snn import readout_kind
from snncompile.runtime.version import __version__
from snncompile.targets.loihi2 import LOIHI2


@dataclass
class Report:
    data: dict
    # per layer: diagnostics.LayerActivation (ANN activation vs SNN rate), for report.html's scatter
    activations: dict = field(default_factory=dict)

    def summary(self) -> str:
        d = self.data
        be = d["bit_exact"]
        ratio = d["fidelity"]["snn_over_ann"]
        mode = (d.get("calibration") or {}).get("mode", "none")
        calibrated = mode != "none"
        lines = [
            f"target: {d['target']}   steps: {d['steps']} + {d.get('latency_steps') or 0} latency   "
            f"test samples: {d['test_samples']}",
            f"ANN accuracy: {_pct(d['ann_accuracy'])} "
            + ("(float ANN)" if d["ann_accuracy"] is not None else "(no ANN: the model is already spiking)"),
            f"float SNN accuracy: {_pct(d['float_snn_accuracy'])} (float SNN, not quantized"
            + (", before calibration)" if calibrated else ")"),
        ]
        if d["snn_accuracy"] is not None:
            lines.append(f"SNN accuracy: {_pct(d['snn_accuracy'])} (Loihi 2 fixed point"
                         + (f" after {mode} calibration on {d['calib_samples']} samples{_mixups(d)}"
                            if calibrated else "")
                         + ", reference simulator)"
                         + ("" if ratio is None else f"   SNN/ANN: {ratio:.3f}"))
            drop = d["fidelity"].get("accuracy_drop")
            if drop:
                lines.append(f"accuracy drop from the ANN: {drop_text(drop)}")
        spikes = d.get("spikes") or {}
        if spikes.get("mode") == "signed" and spikes.get("spikes_sent"):
            lines.append(f"spikes: signed (-1 takes back an early spike): {spikes['negative_spikes']:,} of "
                         f"{spikes['spikes_sent']:,} sent on the evaluation data were -1")
        if be is not None:
            lines.append(f"Lava fixed_pt vs reference: {be['samples']} samples x {be['layers']} layers x "
                         f"{be['steps']} steps, mismatches: {be['mismatches']}")
            lines.append(f"saturations: {sum(layer['saturations'] for layer in d['layers'])}"
                         + _breakdown(d["layers"]))
        res = d.get("resources")
        if res is not None:
            lines.append(_placement_line(res))
        lines += [f"flag: {flag['message']}" for flag in d.get("flags", [])]
        if d.get("timings_s"):
            lines.append(times_line(d["timings_s"]))
        return "\n".join(lines)


def paired_difference(pred_a, pred_b, labels) -> tuple[float, float]:
    """Mean and standard error of the per-sample difference in correctness, a − b (+1, 0 or −1
    per sample), of two classifiers' predicted classes on the same labelled samples: a paired
    comparison, so its error comes from the samples where the two disagree, not from each
    accuracy's own binomial spread (NaN standard error below two samples)."""
    labels = np.asarray(labels)
    d = (np.asarray(pred_a) == labels).astype(np.float64) - (np.asarray(pred_b) == labels).astype(np.float64)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se


def paired_interval(pred_a, pred_b, labels) -> tuple[float, float, float, float]:
    """(mean, standard error, low, high) of ``paired_difference``: the 95 % interval mean ± 1.96
    standard errors, or, where no sample tells a and b apart (a spread of 0, which bounds
    nothing), ±3/n, the rule of three's 95 % bound on the share of samples that would."""
    mean, se = paired_difference(pred_a, pred_b, labels)
    n = len(labels)
    if n > 1 and se == 0 and mean == 0:  # every per-sample difference is 0
        half = 3 / n
    else:
        half = 1.96 * se
    return mean, se, mean - half, mean + half


def accuracy_drop(ann_logits, snn_logits, labels) -> dict:
    """report.json ``fidelity.accuracy_drop``: the ANN's accuracy less the SNN's in percentage
    points, with its standard error and 95 % interval from the paired per-sample differences. On
    the 360 digits test samples one sample is 0.28 pp, and MobileNetV2 at T=16 (2.22 pp, which
    the 413 train samples no calibration saw put at 2.18 ± 0.72) has an interval of ±2.3 pp:
    how far a drop measured on this many samples can be from the drop on new ones."""
    n = len(labels)
    pred = [np.asarray(x).reshape(n, -1).argmax(1) for x in (ann_logits, snn_logits)]
    mean, se, low, high = paired_interval(pred[0], pred[1], labels)
    how = ("per evaluation sample, ANN correct (1 or 0) less SNN correct; mean, and mean ± 1.96 standard errors "
           "of it (where no sample differs, ±3/n: the rule of three's 95 % bound on the share that would)")
    return {"pp": 100 * mean, "standard_error_pp": 100 * se, "interval_95_pp": [100 * low, 100 * high],
            "samples": n, "how": how}


def drop_text(drop: dict) -> str:
    """'2.22 pp (95 % interval -0.07 … 4.51 pp, 360 samples, paired)'."""
    low, high = drop["interval_95_pp"]
    return f"{drop['pp']:.2f} pp (95 % interval {low:.2f} … {high:.2f} pp, {drop['samples']} samples, paired)"


CHANCE_MARGIN = 0.05  # an accuracy at most 1/classes + 5 points is flagged as chance
TIME_LABELS = {"ann_s": "ANN", "float_snn_s": "float SNN", "lava_s": "Lava"}


def times_line(timings: dict) -> str:
    """'times: load 3.3 s, convert 0.5 s, ... (total 61.2 s)': each phase's seconds."""
    from snncompile.runtime.progress import duration

    parts = [f"{TIME_LABELS.get(k, k.removesuffix('_s').replace('_', ' '))} {duration(v)}" for k, v in timings.items()]
    return f"times: {', '.join(parts)} (total {duration(sum(timings.values()))})"


def accuracy_meanings(calibration: str | None) -> dict[str, str]:
    """report.json's ``accuracy_of``: which network each accuracy belongs to."""
    after = f" after {calibration} calibration" if calibration not in (None, "none") else ""
    before = f", before {calibration} calibration (which tunes the fixed-point SNN only)" if after else ""
    return {
        "ann_accuracy": "the float ANN as given (null for a model that is already spiking)",
        "float_snn_accuracy": "the float SNN: IF neurons in float64, one step of delay per synaptic layer, "
                              f"not quantized{before}",
        "snn_accuracy": f"the Loihi 2 fixed-point SNN{after} on the exact reference simulator (the chip's bits)",
    }


def flags(data: dict, classes: int | None) -> list[dict]:
    """report.json's ``flags``: an accuracy within CHANCE_MARGIN of chance (1/classes), and every
    spiking layer that never fired on the evaluation data."""
    found = []
    names = {"ann_accuracy": "ANN", "float_snn_accuracy": "float SNN", "snn_accuracy": "SNN (fixed point)"}
    for key, name in names.items():
        acc = data.get(key)
        if acc is not None and classes and classes > 1 and acc <= 1 / classes + CHANCE_MARGIN:
            found.append({"kind": "chance_accuracy", "accuracy": key, "value": acc, "chance": 1 / classes,
                          "message": f"{name} accuracy {_pct(acc)} is at chance level (1/{classes} classes "
                                     f"= {_pct(1 / classes)}, within {100 * CHANCE_MARGIN:.0f} points)"})
    for layer in data["layers"]:
        if layer["op"] != "readout" and layer.get("spike_rate") == 0:
            found.append({"kind": "silent_layer", "layer": layer["name"],
                          "message": f"layer {layer['name']} never fired on the evaluation data "
                                     f"({data['test_samples']} samples x {data['steps']} steps)"})
    return found


def _placement_line(res: dict) -> str:
    return (f"Loihi 2: {res['cores_used']} core(s) on {res['chips_used']} of {res['chips']} chip(s); "
            f"lower bound {res['lower_bound']} core(s), ratio {res['cores_over_lower_bound']:.2f}")


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


READOUTS = {
    "membrane": "non-spiking neuron (vth at maximum), membrane read after the last step",
    "spike_count": "the last layer spikes: each class scores its spike count over the run",
}


def build_report(*, options, float_graph, snn_graph, fixed_graph, ann_accuracy, float_snn_accuracy,
                 snn_accuracy, ann_logits, snn_logits, stats, comparison, test_samples, calib_samples,
                 timings, placement: Placement | None = None, activations: dict | None = None,
                 weight_errors: dict | None = None, sweep: list[dict] | None = None,
                 data_info: dict | None = None, latency: dict | None = None,
                 run_steps: int | None = None, labels=None) -> Report:
    """report.json's content. ``data_info``: where the calibration and evaluation samples came
    from (``snncompile.data.Dataset.describe``), else the data spec as given. ``latency``: the
    record of passes.latency; ``run_steps``: the steps each inference ran (T + L); ``labels``: the
    evaluation samples' classes (for ``fidelity.accuracy_drop``)."""
    run_steps = run_steps or options.steps
    layers = _fixed_layers(fixed_graph, snn_graph, stats, test_samples, run_steps) if fixed_graph else [
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
        if labels is not None and len(labels):
            fidelity["accuracy_drop"] = accuracy_drop(ann_logits, snn_logits, labels)
    data = {
        "target": options.target,
        "steps": options.steps,
        # T steps of evidence at the readout after L steps of synaptic delay (passes.latency)
        "latency_steps": (latency or {}).get("steps", run_steps - options.steps),
        "total_steps": run_steps,
        "latency": None if latency is None else {k: v for k, v in latency.items() if k != "depths"},
        "data": options.data if data_info is None else data_info,
        "test_samples": test_samples,
        "calib_samples": calib_samples,
        "calibration": None if fixed_graph is None else fixed_graph.metadata.get("calibration"),
        "ann_accuracy": ann_accuracy,
        "float_snn_accuracy": float_snn_accuracy,
        "snn_accuracy": snn_accuracy,
        "fidelity": fidelity,
        "bit_exact": None if comparison is None else comparison.as_dict(),
        "layers": layers,
        "input_encoding": "first layer computed on the host, fed as neuron bias (13-bit mantissa, "
                          "3-bit exponent) every step",
        # what accuracy reads a class from: a spiking last layer's spike counts, else the membrane
        "readout": readout_kind(snn_graph),
        "readout_description": READOUTS[readout_kind(snn_graph)],
        # residual connections of a directly trained SNN: lowering and cost each (passes.residual)
        "residual": (fixed_graph if fixed_graph is not None else snn_graph).metadata.get("residual"),
        "resources": None if placement is None or fixed_graph is None else
        _resources(placement, fixed_graph, stats, test_samples, run_steps),
        "sweep": sweep,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "environment": {
            "snncompile": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "device": options.device or ("cuda" if torch.cuda.is_available() else "cpu"),
            # the CPU kernels torch ran (AVX2, AVX512, ...): calibration's float32 sums follow
            # them, and so may the integer weights it rounds to (benchmarks/results/fidelity.md,
            # "Readout kept by held-out agreement": MobileNetV2 at T=16, 92.50 vs 94.44 %)
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
    }
    for layer in layers:
        if layer["name"] in (activations or {}):
            layer["activation_error"] = activations[layer["name"]].error()
        if layer["name"] in (weight_errors or {}):
            layer["weight_error"] = weight_errors[layer["name"]]
    data["accuracy_of"] = accuracy_meanings((data["calibration"] or {}).get("mode"))
    outputs = snn_graph.output_names()
    data["flags"] = flags(data, int(np.prod(snn_graph.shape(outputs[0]))) if len(outputs) == 1 else None)
    return Report(data, activations or {})


def outgoing_synapses(graph: Graph, population: str) -> int:
    """Synapses leaving a population: the sum of the connections of the synaptic ops it feeds."""
    return sum(connections(graph, s) for s in graph.find((FixedDense, FixedConv2d))
               if spike_source(graph, s) == population)


def _resources(placement: Placement, fixed_graph: Graph, stats: dict, test_samples: int, steps: int) -> dict:
    """report.json's ``resources``: the placement and an activity and energy estimate."""
    res = placement.as_dict()
    res["limits_note"] = ("conservative defaults, not published Loihi 2 figures "
                          "(derivations in snncompile/targets/loihi2.py)")
    res["lower_bound_rule"] = ("max(ceil(neurons / neurons per core), ceil(synapse bytes / bytes per core)); "
                               "synapse bytes as if no layer were split: each conv kernel stored once, one "
                               "input axon per source neuron (dense) or pixel (conv)")
    res["activity"] = _activity(fixed_graph, stats, test_samples, steps) if stats else None
    return res


def _activity(graph: Graph, stats: dict, test_samples: int, steps: int, target=LOIHI2) -> dict:
    """Spikes, synaptic operations and neuron updates per inference, and an energy estimate."""
    layers, spikes, synops, updates = [], 0.0, 0.0, 0
    for name in graph.find(LoihiNeuron):
        neurons = int(np.prod(graph.shape(name)))
        out = outgoing_synapses(graph, name)
        layer_spikes = stats[name].spikes / max(1, test_samples) if name in stats else 0.0
        # LayerStats holds one spike count per layer, so every spike is charged the layer's
        # mean fan-out (synapses leaving the layer / its neurons)
        layer_synops = layer_spikes * out / neurons
        layers.append({"name": name, "spikes": layer_spikes, "outgoing_synapses": out,
                       "synaptic_ops": layer_synops, "neuron_updates": neurons * steps})
        spikes, synops, updates = spikes + layer_spikes, synops + layer_synops, updates + neurons * steps
    pj = 1e-6  # pJ -> µJ
    return {
        "per_inference": {"spikes": spikes, "synaptic_ops": synops, "neuron_updates": updates, "steps": steps},
        "layers": layers,
        "energy_estimate_uJ": {
            "low": (synops * target.synop_energy_pj + updates * target.neuron_update_energy_pj) * pj,
            "high": (synops * target.synop_energy_pj + updates * target.active_neuron_update_energy_pj) * pj,
            "pJ_per_synaptic_op": target.synop_energy_pj,
            "pJ_per_neuron_update": [target.neuron_update_energy_pj, target.active_neuron_update_energy_pj],
            "source": "Davies et al., Loihi: A Neuromorphic Manycore Processor with On-Chip Learning, "
                      "IEEE Micro 38(1), 2018, Table 2: LOIHI 1 figures (no Loihi 2 figures are published)",
            "note": "an estimate, not a measurement: Loihi 1 energies per operation times the reference "
                    "simulator's mean counts per test sample; low/high charge every neuron update as inactive "
                    "(52 pJ) / active (81 pJ); spike routing, host I/O and static power are not included",
        },
    }


# clips counted when quantizing (passes.quantize), beside the simulator's LayerStats counters
QUANTIZATION_OVERFLOWS = ("weight_saturated", "bias_saturated", "threshold_clipped", "v_init_saturated")


def overflow_counts(fixed_graph: Graph, stats: dict) -> dict[str, dict[str, int]]:
    """Per neuron layer, every overflow counter: the simulator's (LayerStats, summed over the
    samples and steps it ran) and those of quantization (graph metadata), plus their sum."""
    quant = fixed_graph.metadata.get("quantization", {})
    counts = {}
    for name in fixed_graph.find(LoihiNeuron):
        s = stats[name].as_dict() if name in stats else {}
        q = quant.get(name, {})
        layer = {k: v for k, v in s.items() if k not in ("spikes", "saturations")}
        layer |= {"weight_saturated": q.get("weight_saturated", 0),
                  "bias_quantization_saturated": q.get("bias_saturated", 0),
                  "threshold_clipped": q.get("threshold_clipped", 0),
                  "v_init_saturated": q.get("v_init_saturated", 0)}
        counts[name] = layer
    return counts


def overflow_summary(counts: dict[str, dict[str, int]]) -> list[str]:
    """'layer: 3 v_clipped, 1 weight_saturated' for every layer with a clipped or wrapped value."""
    found = []
    for name, layer in counts.items():
        parts = [f"{n} {kind}" for kind, n in layer.items() if n]
        if parts:
            found.append(f"{name}: {', '.join(parts)}")
    return found


def _fixed_layers(fixed_graph, snn_graph, stats, test_samples, steps) -> list[dict]:
    quant = fixed_graph.metadata.get("quantization", {})
    dtypes = sum_dtypes(fixed_graph)
    layers = []
    for name in fixed_graph.find(LoihiNeuron):
        op = fixed_graph.op(name)
        float_op = snn_graph.op(name) if name in snn_graph else None  # None: a bias clock (passes.latency)
        s = stats[name]
        q = quant.get(name, {})
        neurons = int(np.prod(fixed_graph.shape(name)))
        layers.append({
            "name": name,
            "op": "readout" if op.readout else "bias clock" if float_op is None else f"IF ({op.reset.value} reset)",
            "shape": list(fixed_graph.shape(name)),
            "neurons": neurons,
            "synapses": _synapses(fixed_graph, name),
            # per synapse feeding it, the float type the reference's exact sum runs in (sim.fixed)
            "synapse_dtype": {s: dtypes[s] for s in fixed_graph.inputs(name) if s in dtypes},
            "threshold": float(np.max(float_op.threshold)) if isinstance(float_op, IF) else None,
            "vth": int(np.max(op.vth)),
            "scale": q.get("scale"),
            "spike_rate": s.spikes / max(1, neurons * test_samples * steps),
            "negative_spikes": s.negative_spikes,  # of overflow.spikes, the −1 ones (Reset.SIGNED)
            "saturations": s.saturations + sum(q.get(key, 0) for key in QUANTIZATION_OVERFLOWS),
            "overflow": s.as_dict() | {
                "weight_saturated": q.get("weight_saturated", 0),
                "bias_quantization_saturated": q.get("bias_saturated", 0),
                "threshold_clipped": q.get("threshold_clipped", 0),
                "v_init_saturated": q.get("v_init_saturated", 0),
            },
        })
    return layers


def data_lines(d: dict) -> list[str]:
    """Where the calibration and evaluation samples came from, the calibration done, the gate."""
    data = d.get("data")
    if not isinstance(data, dict):
        return [f"Data `{data}` ({d['calib_samples']} calibration samples, {d['test_samples']} test samples)."]
    ev, cal = data["evaluation"], data["calibration"]
    lines = [f"- Accuracies below: evaluation data {ev['source']}, {ev['samples']} samples"
             + ("" if ev.get("labels", True) else " (no labels 'y': accuracy not available)") + ".",
             f"- Calibration data (never evaluated on): {cal['source']}, {cal['samples']} samples used."]
    cal_info = d.get("calibration")
    if cal_info:
        lines.append(f"- Calibration: {cal_info['mode']}" + (
            f", {cal_info['seconds']:.1f} s, measured in Loihi 2 fixed point" if cal_info["mode"] != "none" else "")
            + ".")
    choice = d.get("calib_samples_choice") or {}
    if choice.get("why"):
        lines.append(f"- Calibration samples: {choice['samples']}{_mixups(d)} ({choice['why']}).")
    spikes = d.get("spikes") or {}
    if spikes.get("mode"):
        lines.append(f"- Spikes: {spikes['mode']} (--spikes {spikes['option']}): {spikes['why']}"
                     + (f"; {spikes['negative_spikes']:,} of {spikes['spikes_sent']:,} spikes sent on the evaluation "
                        "data were -1" if spikes.get("spikes_sent") and spikes["mode"] == "signed" else "") + ".")
    gate = d.get("fidelity_gate")
    if gate:
        lines.append("- Fidelity gate: " + ("passed" if gate["passed"] else "FAILED: " + "; ".join(gate["failures"]))
                     + ".")
    return lines


def _mixups(d: dict) -> str:
    """" + N mixups" where compiler.convert added blends of calibration samples, else ""."""
    mixups = (d.get("calib_samples_choice") or {}).get("mixups")
    return f" + {mixups} mixups" if mixups else ""


def _md(report: Report) -> str:
    d = report.data
    be = d["bit_exact"]
    fid = d["fidelity"]
    lines = [
        "# snncompile report",
        "",
        f"Target **{d['target']}**, {d['steps']} steps of evidence after {d.get('latency_steps', 0)} steps of "
        f"latency ({d.get('total_steps', d['steps'])} steps per inference).",
        "",
        *data_lines(d),
        "",
        "| | accuracy |",
        "|---|---|",
        *(f"| {name} | {_pct(d[key])} |" for key, name in accuracy_labels(d)),
        "",
        *(f"**Flag:** {flag['message']}.  " for flag in d.get("flags", [])),
        "",
    ]
    if fid.get("snn_over_ann") is not None:
        lines += [f"SNN/ANN accuracy ratio: {fid['snn_over_ann']:.4f}; prediction agreement with the ANN: "
                  f"{_pct(fid.get('agreement_with_ann'))}; mean |ANN − SNN| output error: "
                  f"{fid.get('output_mean_abs_error', float('nan')):.4f}.", ""]
        if fid.get("accuracy_drop"):
            lines += [f"Accuracy drop from the ANN: {drop_text(fid['accuracy_drop'])}: the per-sample "
                      "differences' 95 % interval, how far the drop on new samples may lie.", ""]
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
    lines += ["", f"Input: {d['input_encoding']}. Readout: {d['readout_description']}.", ""]
    if d.get("resources") is not None:
        lines += _md_resources(d["resources"])
    return "\n".join(lines)


def _md_resources(res: dict) -> list[str]:
    limits, totals, util = res["core_limits"], res["totals"], res["utilization"]
    terms = res["lower_bound_terms"]
    lines = [
        "## Resources (Loihi 2)",
        "",
        f"**{res['cores_used']} core(s)** on {res['chips_used']} of {res['chips']} chip(s) "
        f"({res['cores_available']} cores available). Lower bound: {res['lower_bound']} core(s) = "
        f"max(⌈neurons / per core⌉ = {terms['neurons']}, "
        f"⌈synapse bytes / per core⌉ = {terms['synapse_bytes']}); "
        f"cores used / lower bound = {res['cores_over_lower_bound']:.2f}.",
        "",
        f"Per-core limits: {res['limits_note']}.",
        "",
        "| resource | total | per-core limit | utilization min / mean / max |",
        "|---|---|---|---|",
    ]
    for key, label in (("neurons", "neurons"), ("synapse_bytes", "synaptic memory (bytes)"),
                       ("fan_in", "input axons"), ("fan_out", "output axons")):
        u = util[key]
        lines.append(f"| {label} | {totals[key]} | {limits[key]} | "
                     f"{u['min']:.1%} / {u['mean']:.1%} / {u['max']:.1%} |")
    lines += ["", "| layer | cores | core range |", "|---|---|---|"]
    lines += [f"| {layer['name']} | {layer['cores']} | {layer['core_range']} |" for layer in res["layers"]]
    act = res.get("activity")
    if act is not None:
        per, energy = act["per_inference"], act["energy_estimate_uJ"]
        lines += [
            "",
            "### Activity and energy per inference (estimate)",
            "",
            f"From the reference simulator, mean over the test samples ({per['steps']} steps): "
            f"{per['spikes']:.0f} spikes, {per['synaptic_ops']:.0f} synaptic operations, "
            f"{per['neuron_updates']} neuron updates.",
            "",
            f"**Estimated energy: {energy['low']:.3g}–{energy['high']:.3g} µJ per inference**, using "
            f"{energy['pJ_per_synaptic_op']} pJ per synaptic operation and "
            f"{energy['pJ_per_neuron_update'][0]:g}–{energy['pJ_per_neuron_update'][1]:g} pJ per neuron update: "
            f"{energy['source']}. This is {energy['note']}.",
            "",
        ]
    return lines


def ir_table(graph: Graph, placement: Placement | None = None) -> str:
    """The fixed-point IR as a text table: name, op, shape, neurons, synapses, cores.

    Synapses are (source, target) pairs joined by a nonzero weight; a synaptic op sits on the
    cores of the neurons it ends on; nodes computed once per sample on the host say 'host'.
    """
    chip_ops = (LoihiNeuron, FixedDense, FixedConv2d)
    rows = [("name", "op", "shape", "neurons", "synapses", "cores")]
    for name, op in graph.nodes():
        neurons = synapses = "—"
        cores = "host"
        kind = op.kind.value
        if isinstance(op, LoihiNeuron):
            kind += " (readout)" if op.readout else ""
            neurons = str(int(np.prod(graph.shape(name))))
            synapses = str(sum(connections(graph, s) for s in incoming(graph, name)))
            cores = placement.core_range(name) if placement else "—"
        elif isinstance(op, (FixedDense, FixedConv2d)):
            synapses = str(connections(graph, name))
            users = [u for u in graph.users(name) if isinstance(graph.op(u), LoihiNeuron)]
            cores = ",".join(placement.core_range(u) for u in users) if placement else "—"
        elif isinstance(op, Output) or (isinstance(op, Flatten) and
                                        isinstance(graph.op(graph.inputs(name)[0]), chip_ops)):
            cores = "—"  # the readout's membrane is read out; a Flatten of spikes is a view
        rows.append((name, kind, "x".join(map(str, graph.shape(name))), neurons, synapses, cores))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if placement is not None:
        lines += ["", _placement_line(placement.as_dict())]
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
    from snncompile.report import html as report_html  # matplotlib loads only when a report is written

    json_path = outdir / "report.json"
    md_path = outdir / "report.md"
    json_path.write_text(json.dumps(_clean(report.data), indent=2) + "\n")
    rich, md_extra = report_html.write(report, outdir)
    md_path.write_text(_md(report) + md_extra)
    return {"report_json": json_path, "report_md": md_path} | rich
