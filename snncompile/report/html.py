"""The report for people: report.html (self-contained, figures inlined) and the figures under plots/.

Sections, each an HTML ``<section id=...>`` (the tests and a reader's browser find them by id):
summary, bit-exact (Lava vs the reference at compile time), firing-rates, activations,
accuracy-vs-steps, quantization, resources. ``verify_html`` / ``verify_markdown`` render the
result of ``snncompile verify`` (a dict: identical, layers, first_divergence {layer, step, neuron,
expected, got, quantity}, summary) as the same section; ``comparison_as_verify`` turns report.json's
``bit_exact`` into that shape, so both comparisons read alike.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from snncompile.report import plots
from snncompile.report.labels import accuracy_labels

FIGURES = (  # (file stem, section id, title)
    ("firing_rates", "firing-rates", "Per-layer firing rates"),
    ("activations", "activations", "ANN activation vs SNN rate"),
    ("accuracy_vs_steps", "accuracy-vs-steps", "Accuracy vs time steps"),
    ("quantization", "quantization", "Quantization error and saturations"),
    ("resources", "resources", "Resource use per core"),
)


def figures(report) -> dict[str, bytes]:
    """The report's PNG figures by file stem; a figure with nothing to show is left out."""
    d = report.data
    drawn = {
        "firing_rates": plots.firing_rates(d["layers"]),
        "activations": plots.activation_scatter(getattr(report, "activations", None) or {}),
        "accuracy_vs_steps": plots.accuracy_vs_steps(d.get("sweep") or [], d.get("ann_accuracy")),
        "quantization": plots.quantization(d["layers"]),
        "resources": plots.resources(d.get("resources")),
    }
    return {k: v for k, v in drawn.items() if v}


def write_figures(pngs: dict[str, bytes], outdir: Path) -> dict[str, Path]:
    folder = outdir / "plots"
    folder.mkdir(exist_ok=True)
    paths = {}
    for stem, png in pngs.items():
        paths[stem] = folder / f"{stem}.png"
        paths[stem].write_bytes(png)
    return paths


# -- the comparison section (compile time and `snncompile verify`) ---------------------------------


def comparison_as_verify(bit_exact: dict) -> dict:
    """report.json's ``bit_exact`` (samples, layers, steps, mismatches, first_mismatch) in the
    shape ``snncompile verify`` returns."""
    first = bit_exact.get("first_mismatch")
    divergence = None
    if first is not None:
        divergence = {"layer": first["layer"], "step": first["step"]}
        if "index" in first:  # trace.compare's index is (sample, *neuron)
            divergence |= {"sample": first["index"][0], "neuron": list(first["index"][1:])}
        else:
            divergence |= {"sample": first.get("sample"), "neuron": first.get("neuron")}
        divergence |= {"expected": first.get("expected"), "got": first.get("got"),
                       "quantity": first.get("quantity", first.get("what"))}
    mismatches = bit_exact["mismatches"]
    return {
        "identical": mismatches == 0,
        "layers": bit_exact["layers"],
        "first_divergence": divergence,
        "summary": f"Lava fixed_pt vs reference: {bit_exact['samples']} samples x {bit_exact['layers']} "
                   f"layers x {bit_exact['steps']} steps, mismatches: {mismatches}",
    }


def _layer_count(result: dict) -> str:
    layers = result.get("layers")
    return str(len(layers)) if isinstance(layers, (list, tuple, dict)) else str(layers)


def _divergence_rows(div: dict) -> list[tuple[str, str]]:
    rows = [("layer", str(div.get("layer"))), ("step", str(div.get("step")))]
    if "sample" in div:
        rows.append(("sample", str(div["sample"])))
    neuron = div.get("neuron")
    neuron = ", ".join(map(str, neuron)) if isinstance(neuron, (list, tuple)) else str(neuron)
    return rows + [("neuron", f"({neuron})"), ("quantity", str(div.get("quantity"))),
                   ("expected (reference)", _value(div.get("expected"))), ("got", _value(div.get("got")))]


def _value(v) -> str:
    return "not recorded" if v is None else str(v)


def _context(result: dict) -> str:
    """'reference vs lava (Loihi2SimCfg fixed_pt), 4 sample(s) x 32 steps' from what the result holds."""
    parts = []
    if result.get("against"):
        parts.append(f"reference simulator vs {result['against']}"
                     + (f" ({result['run_config']})" if result.get("run_config") else ""))
    if result.get("samples") is not None and result.get("steps") is not None:
        parts.append(f"{result['samples']} sample(s) x {result['steps']} steps")
    return ", ".join(parts)


def _layer_rows(result: dict) -> list[list[str]]:
    """Per layer (when the result has a per-layer breakdown): values, differing, first differing step."""
    layers = result.get("layers")
    if not isinstance(layers, dict):
        return []
    rows = []
    for name, entry in layers.items():
        steps = [t for t, count in enumerate(entry.get("per_step") or []) if count]
        rows.append([name, str(entry.get("compared", "")), str(entry.get("differing", "")),
                     str(steps[0]) if steps else "—"])
    return rows


LAYER_HEAD = ["layer", "values compared", "differing", "first differing step"]


def verify_html(result: dict, title: str = "Bit-exact verification") -> str:
    """An HTML ``<section id="verify">`` for a verify result (or ``comparison_as_verify``'s)."""
    ok = bool(result.get("identical"))
    verdict = ("<p class=ok>identical: every spike and membrane value agrees</p>" if ok else
               "<p class=bad>DIVERGED</p>")
    context = _context(result)
    parts = [f'<section id="verify"><h2>{html.escape(title)}</h2>', verdict,
             f"<p>{html.escape(str(result.get('summary', '')))} (layers compared: "
             f"{html.escape(_layer_count(result))}{'; ' + html.escape(context) if context else ''})</p>"]
    div = result.get("first_divergence")
    if div:
        parts.append("<h3>First divergence</h3><table class=kv>")
        parts += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _divergence_rows(div)]
        parts.append("</table>")
    rows = _layer_rows(result)
    if rows:
        parts.append(_table(LAYER_HEAD, rows, {1, 2, 3}))
    png = plots.divergence(result)
    if png:
        parts.append(_img("divergence", png, "differing values per step"))
    parts.append("</section>")
    return "\n".join(parts)


def verify_markdown(result: dict, title: str = "Bit-exact verification") -> str:
    """The same section as markdown (without the figure)."""
    ok = bool(result.get("identical"))
    context = _context(result)
    lines = [f"## {title}", "",
             "**identical**: every spike and membrane value agrees." if ok else "**DIVERGED**.", "",
             f"{result.get('summary', '')} (layers compared: {_layer_count(result)}"
             f"{'; ' + context if context else ''})", ""]
    div = result.get("first_divergence")
    if div:
        lines += ["First divergence:", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in _divergence_rows(div)]
        lines.append("")
    rows = _layer_rows(result)
    if rows:
        lines += ["| " + " | ".join(LAYER_HEAD) + " |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


# -- the page ----------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 1.5em auto; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.ok { color: #176317; font-weight: bold; } .bad { color: #b00020; font-weight: bold; }
.note { color: #555; font-size: 0.9em; }
"""


def _pct(a) -> str:
    return "n/a" if a is None else f"{100 * a:.2f} %"


def _num(v, fmt="{:.4g}") -> str:
    return "—" if v is None else fmt.format(v)


def _img(stem: str, png: bytes | None, title: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img id="img-{stem}" alt="{html.escape(title)}" src="data:image/png;base64,{data}">'


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        cells = "".join(f"<td class=num>{html.escape(c)}</td>" if i in numeric else f"<td>{html.escape(c)}</td>"
                        for i, c in enumerate(row))
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _data_text(d: dict) -> str:
    """What the model was calibrated and evaluated on: report.json's ``data`` is a spec string or
    a dict with ``calibration`` and ``evaluation`` sources."""
    data = d.get("data")
    if isinstance(data, dict):
        parts = [f"{role}: {data[role]['source']}" for role in ("calibration", "evaluation")
                 if isinstance(data.get(role), dict) and "source" in data[role]]
        if parts:
            return "; ".join(parts)
    return f"data {data}, {d.get('calib_samples')} calibration samples, {d.get('test_samples')} test samples"


def render_html(report, pngs: dict[str, bytes]) -> str:
    """The whole report as one HTML page, figures inlined as data: URIs."""
    d = report.data
    titles = {stem: title for stem, _, title in FIGURES}
    body = [f"<h1>snncompile report</h1><p class=note>target <b>{html.escape(str(d['target']))}</b>, "
            f"{d['steps']} steps; {html.escape(_data_text(d))}</p>"]
    acc = _table(["model", "test accuracy"], [[name, _pct(d.get(key))] for key, name in accuracy_labels(d)], {1})
    body.append(_section("summary", "Summary", f"{acc}\n<pre>{html.escape(report.summary())}</pre>"))
    if d.get("bit_exact") is not None:
        body.append(verify_html(comparison_as_verify(d["bit_exact"]),
                                "Lava fixed_pt vs reference simulator (at compile time)")
                    .replace('<section id="verify">', '<section id="bit-exact">', 1))
    body.append(_section("firing-rates", titles["firing_rates"],
                         _img("firing_rates", pngs.get("firing_rates"), titles["firing_rates"])
                         or "<p class=note>no fixed-point run: no spike rates</p>"))
    act_rows = [[layer["name"], _num((layer.get("activation_error") or {}).get("mean_abs")),
                 _num((layer.get("activation_error") or {}).get("rmse"))]
                for layer in d["layers"] if layer.get("activation_error")]
    body.append(_section("activations", titles["activations"],
                         _img("activations", pngs.get("activations"), titles["activations"])
                         + ("<p class=note>Points: a fixed-seed subsample of neurons × test samples; the "
                            "dashed line is y = x (a perfect conversion).</p>"
                            + _table(["layer", "mean |SNN − ANN|", "RMSE"], act_rows, {1, 2}) if act_rows else
                            "<p class=note>no ANN to compare with (the model was already spiking, or the "
                            "target is nir)</p>")))
    sweep = d.get("sweep")
    if sweep:
        sweep_body = _img("accuracy_vs_steps", pngs.get("accuracy_vs_steps"), titles["accuracy_vs_steps"]) + _table(
            ["steps T", "SNN (fixed point)", "SNN (float)"],
            [[str(r["steps"]), _pct(r.get("snn_accuracy")), _pct(r.get("float_snn_accuracy"))] for r in sweep],
            {0, 1, 2})
    else:
        sweep_body = "<p class=note>not measured: compile with <code>--sweep-steps 4,8,16,32</code></p>"
    body.append(_section("accuracy-vs-steps", titles["accuracy_vs_steps"], sweep_body))
    layer_rows = [[layer["name"], layer["op"], "x".join(map(str, layer["shape"])), str(layer["neurons"]),
                   _num(layer.get("synapses"), "{}"), _num(layer.get("threshold")), _num(layer.get("vth"), "{}"),
                   _num(layer.get("spike_rate")), _num(layer.get("weight_error")), str(layer["saturations"])]
                  for layer in d["layers"]]
    body.append(_section("quantization", titles["quantization"],
                         _img("quantization", pngs.get("quantization"), titles["quantization"]) + _table(
                             ["layer", "op", "shape", "neurons", "synapses", "threshold", "vth", "spike rate",
                              "weight rel. error", "saturations"], layer_rows, {3, 4, 5, 6, 7, 8, 9})))
    res = d.get("resources")
    if res is not None:
        util = res["utilization"]
        res_body = (_img("resources", pngs.get("resources"), titles["resources"])
                    + f"<p>{res['cores_used']} core(s) on {res['chips_used']} of {res['chips']} chip(s); lower "
                    f"bound {res['lower_bound']} core(s), ratio {res['cores_over_lower_bound']:.2f}. Per-core "
                    f"limits: {html.escape(res['limits_note'])}.</p>"
                    + _table(["resource", "total", "per-core limit", "utilization min / mean / max"],
                             [[label, str(res["totals"][k]), str(res["core_limits"][k]),
                               f"{util[k]['min']:.1%} / {util[k]['mean']:.1%} / {util[k]['max']:.1%}"]
                              for k, label in plots.RESOURCES], {1, 2}))
    else:
        res_body = "<p class=note>no mapping: the nir target is not placed on cores</p>"
    body.append(_section("resources", titles["resources"], res_body))
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>snncompile report</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def markdown(report, paths: dict[str, Path]) -> str:
    """What report.md adds to its text sections: activation error, the sweep, and the figures
    (linked as plots/NAME.png, relative to report.md)."""
    d = report.data
    lines = []
    act = [layer for layer in d["layers"] if layer.get("activation_error")]
    if act:
        lines += ["## ANN activation vs SNN rate", "",
                  f"On {act[0]['activation_error']['samples']} test samples; rate · θ in ANN units.", "",
                  "| layer | mean abs error | RMSE |", "|---|---|---|"]
        lines += [f"| {layer['name']} | {layer['activation_error']['mean_abs']:.4g} | "
                  f"{layer['activation_error']['rmse']:.4g} |" for layer in act]
        lines.append("")
    if d.get("sweep"):
        lines += ["## Accuracy vs time steps", "", "| steps T | SNN (fixed point) | SNN (float) |", "|---|---|---|"]
        lines += [f"| {r['steps']} | {_pct(r.get('snn_accuracy'))} | {_pct(r.get('float_snn_accuracy'))} |"
                  for r in d["sweep"]]
        lines.append("")
    if paths:
        lines += ["## Figures", ""]
        for stem, _, title in FIGURES:
            if stem in paths:
                lines += [f"### {title}", "", f"![{title}](plots/{paths[stem].name})", ""]
    return "\n".join(lines)


def write(report, outdir: Path) -> tuple[dict[str, Path], str]:
    """Write plots/*.png and report.html into ``outdir``. Returns the written paths ('report_html',
    and 'plots', the folder, when any figure was drawn) and the text report.md appends."""
    pngs = figures(report)
    paths = write_figures(pngs, outdir) if pngs else {}
    html_path = outdir / "report.html"
    html_path.write_text(render_html(report, pngs))
    out = {"report_html": html_path}
    if paths:
        out["plots"] = outdir / "plots"
    return out, markdown(report, paths)


def write_verify(result: dict, outdir: Path) -> dict[str, Path]:
    """``snncompile verify``'s result as OUTDIR/verify.html (a page of its own) and verify.md."""
    outdir = Path(outdir)
    html_path, md_path = outdir / "verify.html", outdir / "verify.md"
    html_path.write_text("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>snncompile verify"
                         f"</title><style>{CSS}</style></head><body>\n{verify_html(result)}\n</body></html>\n")
    md_path.write_text(verify_markdown(result))
    return {"verify_html": html_path, "verify_md": md_path}
