"""The report's figures as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot).

Each function takes plain data (report.json's dicts, or diagnostics' arrays) and returns the PNG,
or None when there is nothing to draw. Figures are built on ``matplotlib.figure.Figure`` directly,
so nothing global (pyplot's current figure, the interactive backend) is touched.
"""

from __future__ import annotations

import io
import math

import numpy as np

WIDTH = 7.5  # inches; at DPI 100 a figure is 750 px wide, about the HTML report's column
DPI = 100


def _figure(height: float, cols: int = 1, rows: int = 1, width: float = WIDTH):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


# Bar charts give each layer a row of ROW inches up to DENSE layers; a deeper network's rows shrink
# (to MIN_ROW, its labels to a smaller font): a torchvision MobileNetV2's 149 layers take 27
# inches, not 67 (drawing takes as long: matplotlib's time goes to the text, not the pixels).
ROW, DENSE, MIN_ROW = 0.45, 30, 0.17


def _rows(n: int) -> tuple[float, float]:
    """(inches per row, label font size) for a bar chart of ``n`` rows."""
    if n <= DENSE:
        return ROW, 8.0
    return max(MIN_ROW, ROW * DENSE / n), 6.5


def firing_rates(layers: list[dict]) -> bytes | None:
    """Bar chart: each spiking layer's mean spike rate (spikes per neuron per step)."""
    rows = [(layer["name"], layer["spike_rate"]) for layer in layers
            if layer.get("spike_rate") is not None and layer.get("op") != "readout"]
    if not rows:
        return None
    row, font = _rows(len(rows))
    fig, ((ax,),) = _figure(0.6 + row * len(rows) + 1.0)
    names, rates = [r[0] for r in rows][::-1], [r[1] for r in rows][::-1]
    bars = ax.barh(names, rates, color="#3b75af")
    ax.bar_label(bars, labels=[f"{r:.3f}" for r in rates], padding=3, fontsize=font + 1)
    ax.tick_params(axis="y", labelsize=font + 1)
    if len(rows) > DENSE:
        ax.margins(y=0.5 / len(rows))  # half a row, not 5 % of the axis
    ax.set_xlim(0, max(1e-3, max(rates)) * 1.25)
    ax.set_xlabel("spikes per neuron per step (test split, reference simulator)")
    ax.set_title("Per-layer firing rate")
    return _png(fig)


def activation_scatter(activations: dict) -> bytes | None:
    """One panel per layer: ANN activation (x) against the SNN's rate · θ (y), with y = x."""
    if not activations:
        return None
    names = list(activations)
    cols = min(3 if len(names) <= 12 else 4, len(names))  # deeper networks: smaller panels
    rows = math.ceil(len(names) / cols)
    fig, axes = _figure((2.7 if cols < 4 else 2.0) * rows + 0.4, cols, rows)
    for i, ax in enumerate(axes.ravel()):
        if i >= len(names):
            ax.set_visible(False)
            continue
        act = activations[names[i]]
        ax.scatter(act.ann, act.snn, s=6, alpha=0.5, color="#d1603d", edgecolors="none")
        lo = float(min(act.ann.min(), act.snn.min(), 0.0))
        hi = float(max(act.ann.max(), act.snn.max(), 1e-6))
        ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.8, ls="--")
        ax.set_title(f"{names[i]}  (RMSE {act.rmse:.3g})", fontsize=9 if cols < 4 else 7)
        ax.tick_params(labelsize=8 if cols < 4 else 6.5)
        if i % cols == 0:
            ax.set_ylabel("SNN rate · θ", fontsize=8)
        if i // cols == rows - 1:
            ax.set_xlabel("ANN activation", fontsize=8)
    fig.suptitle(f"ANN activation vs SNN rate ({next(iter(activations.values())).samples} test samples; "
                 "readout: output / T)", fontsize=10)
    return _png(fig)


def accuracy_vs_steps(sweep: list[dict], ann_accuracy: float | None) -> bytes | None:
    """Test accuracy against time steps T: fixed point (reference), float SNN, and the ANN's line."""
    if not sweep:
        return None
    fig, ((ax,),) = _figure(3.6)
    steps = [row["steps"] for row in sweep]
    for key, label, style in (("snn_accuracy", "SNN, Loihi 2 fixed point (reference)", "o-"),
                              ("float_snn_accuracy", "SNN, float", "s--")):
        pts = [(s, 100 * row[key]) for s, row in zip(steps, sweep) if row.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), style, label=label)
    if ann_accuracy is not None:
        ax.axhline(100 * ann_accuracy, color="0.25", lw=1, ls=":", label=f"ANN ({100 * ann_accuracy:.2f} %)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs time steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


# the counters of report.json's layers[].overflow, in this order; any other counter found there
# (not "spikes", not the "saturations" total) is drawn after them
SATURATION_KINDS = ("v_clipped", "v_clipped_low", "u_wrapped", "a_in_overflow", "conv_wrapped",
                    "bias_saturated", "readout_spikes", "weight_saturated", "bias_quantization_saturated")


def quantization(layers: list[dict]) -> bytes | None:
    """Left: per-layer error (activation error against the ANN, weight quantization error);
    right: saturation counts per layer, stacked by kind."""
    if not layers or all(layer.get("vth") is None for layer in layers):
        return None
    names = [layer["name"] for layer in layers]
    row, font = _rows(len(names))
    fig, ((err_ax, sat_ax),) = _figure(0.8 + row * len(names) + 1.2, cols=2, width=WIDTH + 1.5)
    y = np.arange(len(names))
    series = [
        ("activation RMSE", [(layer.get("activation_error") or {}).get("rmse") for layer in layers]),
        ("activation mean |err|", [(layer.get("activation_error") or {}).get("mean_abs") for layer in layers]),
    ]
    series = [(label, vals) for label, vals in series if any(v is not None for v in vals)]
    h = 0.8 / max(1, len(series))
    for k, (label, vals) in enumerate(series):
        vals = [np.nan if v is None else v for v in vals]
        err_ax.barh(y + (k - (len(series) - 1) / 2) * h, vals, height=h, label=label)
    # the weights' relative error is another unit: it goes in the layer's label, not on the axis
    sep = "\n" if len(names) <= DENSE else "  "  # one line per row where rows are short
    labels = [name if layer.get("weight_error") is None else f"{name}{sep}weights {100 * layer['weight_error']:.2g} % RMS"
              for name, layer in zip(names, layers)]
    err_ax.set_yticks(y, labels, fontsize=font)
    if len(names) > DENSE:
        err_ax.margins(y=0.5 / len(names))
        sat_ax.margins(y=0.5 / len(names))
    err_ax.invert_yaxis()
    err_ax.set_title("Conversion + quantization error vs the ANN", fontsize=10)
    err_ax.set_xlabel("SNN rate · θ − ANN activation (ANN units)", fontsize=8)
    if series:
        err_ax.legend(fontsize=7)
    left = np.zeros(len(names))
    total = 0
    kinds = list(SATURATION_KINDS) + sorted({k for layer in layers for k in layer.get("overflow", {})}
                                            - set(SATURATION_KINDS) - {"spikes", "saturations"})
    for kind in kinds:
        counts = np.array([layer.get("overflow", {}).get(kind, 0) or 0 for layer in layers], dtype=float)
        if counts.any():
            sat_ax.barh(y, counts, left=left, label=kind)
            left += counts
            total += int(counts.sum())
    sat_ax.set_yticks(y, names, fontsize=font + 1 if len(names) > DENSE else None)
    sat_ax.invert_yaxis()
    sat_ax.set_title(f"Saturations (total {total})", fontsize=10)
    sat_ax.set_xlabel("count (simulation and quantization)", fontsize=8)
    if total:
        sat_ax.legend(fontsize=7)
    else:
        sat_ax.set_xlim(0, 1)
        for yi in y:
            sat_ax.text(0.02, yi, "0", va="center", fontsize=font + 1)
        sat_ax.text(0.5, 0.5, "no saturation in any layer", ha="center", va="center", fontsize=10,
                    color="#2a7a2a", transform=sat_ax.transAxes)
    return _png(fig)


RESOURCES = (("neurons", "neurons"), ("synapse_bytes", "synaptic memory"),
             ("fan_in", "input axons"), ("fan_out", "output axons"))


def resources(res: dict | None) -> bytes | None:
    """Per-core utilization of each resource, as a fraction of the core's (modelled) limit."""
    if not res or not res.get("cores"):
        return None
    cores, limits = res["cores"], res["core_limits"]
    fig, ((ax,),) = _figure(3.6)
    x = np.arange(len(cores))
    percent = {key: [100 * c[key] / max(1, limits[key]) for c in cores] for key, _ in RESOURCES}
    top = max(max(v) for v in percent.values())
    if len(cores) <= 24:
        w = 0.8 / len(RESOURCES)
        for k, (key, label) in enumerate(RESOURCES):
            bars = ax.bar(x + (k - (len(RESOURCES) - 1) / 2) * w, percent[key], width=w, label=label)
            if len(cores) <= 8:
                ax.bar_label(bars, labels=[f"{v:.1f}%" for v in percent[key]], fontsize=7, padding=2)
        ax.set_xticks(x, [str(c["core"]) for c in cores])
    else:
        for key, label in RESOURCES:
            ax.plot(x, percent[key], lw=1, label=label)
    # a scale that shows small use; the 100 % line (the core's limit) only when use comes near it
    ax.set_ylim(0, max(5.0, 1.3 * top) if top < 80 else 110)
    if top >= 80:
        ax.axhline(100, color="0.3", lw=0.8, ls="--")
    ax.set_xlabel("core")
    ax.set_ylabel("% of the per-core limit")
    ax.set_title(f"Resource use per core ({res['cores_used']} core(s) on {res['chips_used']} chip(s))")
    ax.legend(fontsize=8, ncols=4, loc="upper center")
    return _png(fig)


def divergence(result: dict) -> bytes | None:
    """For a verify result that differs: differing values per step, one line per differing layer."""
    layers = result.get("layers")
    if result.get("identical") or not isinstance(layers, dict):
        return None
    rows = {name: entry.get("per_step") for name, entry in layers.items() if entry.get("differing")}
    rows = {name: per_step for name, per_step in rows.items() if per_step}
    if not rows:
        return None
    fig, ((ax,),) = _figure(3.0)
    for name, per_step in rows.items():
        ax.plot(range(len(per_step)), per_step, marker="o", ms=3, label=name)
    first = result.get("first_divergence") or {}
    if first.get("step") is not None:
        ax.axvline(first["step"], color="#b00020", lw=0.8, ls="--", label=f"first divergence (step {first['step']})")
    ax.set_xlabel("time step")
    ax.set_ylabel("differing values")
    ax.set_title("Where the runs differ")
    ax.legend(fontsize=8)
    return _png(fig)
