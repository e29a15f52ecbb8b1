"""report.html, report.md and plots/: built by a real compile of the bundled MLP, read back as a
person would (every section there, every figure a real, non-blank PNG), and rendered by Chromium."""

import base64
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import snncompile
from snncompile.report import render
from snncompile.data import digits
from snncompile.report.html import FIGURES, comparison_as_verify, verify_html, verify_markdown, write_verify
from snncompile.sim import fixed
from snncompile.sim.trace import Trace, compare

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "examples" / "digits_mlp.pt2"
SECTIONS = ("summary", "bit-exact", "firing-rates", "activations", "accuracy-vs-steps", "quantization", "resources")
SWEEP = (4, 8)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = snncompile.compile(MLP, target="loihi2", data="digits", outdir=out, steps=8, samples=2,
                                calib_samples=128, sweep_steps=SWEEP, device="cpu", progress=False)
    return result, out


class _Page(HTMLParser):
    """Section ids, and per <img>: its id and src."""

    def __init__(self):
        super().__init__()
        self.sections, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        elif tag == "img":
            self.images.append(attrs)


def _page(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def assert_real_png(png: bytes, min_size=(300, 150)):
    """A PNG that decodes, is at least ``min_size`` and is not blank (many colours, ink on it)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(png)) as img:
        img.load()
        rgb = np.asarray(img.convert("RGB"))
    assert rgb.shape[1] >= min_size[0] and rgb.shape[0] >= min_size[1], rgb.shape
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20  # axes, text and data, not a flat fill
    assert (rgb.min(axis=2) < 128).mean() > 0.005  # dark pixels: something is drawn


def test_html_has_every_section_and_inlined_figure(compiled):
    _, out = compiled
    page = _page((out / "report.html").read_text())
    assert page.sections == list(SECTIONS)
    images = {img["id"]: img for img in page.images}
    assert set(images) == {f"img-{stem}" for stem, _, _ in FIGURES}
    for stem, _, _ in FIGURES:
        src = images[f"img-{stem}"]["src"]
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert_real_png(png)
        assert png == (out / "plots" / f"{stem}.png").read_bytes()  # the same figure in both reports
    assert "http://" not in (out / "report.html").read_text()  # self-contained: nothing fetched


def test_report_json_has_sweep_and_activation_error(compiled):
    _, out = compiled
    data = json.loads((out / "report.json").read_text())
    assert [row["steps"] for row in data["sweep"]] == list(SWEEP)
    for row in data["sweep"]:
        assert 0 <= row["snn_accuracy"] <= 1 and 0 <= row["float_snn_accuracy"] <= 1
    # at T = 8 the sweep converts exactly as the main compile did: same fixed-point accuracy
    assert data["sweep"][-1]["snn_accuracy"] == pytest.approx(data["snn_accuracy"])
    for layer in data["layers"]:
        err = layer["activation_error"]
        assert err["samples"] == 64 and 0 <= err["mean_abs"] <= err["rmse"] and math.isfinite(err["rmse"])
    # 8-bit weights: ~1 %; the readout's weights are refitted by advanced calibration where it
    # kept that fit (--calibrate auto runs advanced on this MLP): moved far more, by design
    tuned = data["calibration"]["mode"] == "advanced" and data["calibration"]["readout"]["kept"]
    for layer in data["layers"][1:]:
        if tuned and layer["name"].endswith("_readout"):
            assert 0 < layer["weight_error"] < 1 and math.isfinite(layer["weight_error"])
        else:
            assert 0 < layer["weight_error"] < 0.1, layer


def test_activation_error_matches_a_recorded_run(compiled):
    """relu_1's activation error, recomputed from the rule: spikes per step of evidence · vth · 64
    / v_scale · g_c (per-channel balancing) vs the ANN. relu_1 is fed by the host (depth 0): in
    the T + L run (passes.latency) all T + L steps are its evidence."""
    result, _ = compiled
    from snncompile.ir.timing import depths, latency_steps
    from snncompile.sim.ann import evaluate

    x = digits(image=False).test.x[:64]
    g = result.fixed_graph
    total = 8 + latency_steps(g)
    assert depths(g)["relu_1"] == 0 and total == result.report.data["total_steps"]
    run = fixed.simulate(g, x, total, device="cpu", record=True)
    op = g.op("relu_1")
    gain = np.asarray(g.metadata.get("channel_gains", {}).get("relu_1", 1.0))
    rate = run.trace.spikes["relu_1"].mean(axis=1) * op.vth * 64 / op.v_scale * gain
    ann = evaluate(result.float_graph, x, upto={"relu_1"})["relu_1"].numpy()
    expected = float(np.abs(rate - ann).mean())
    layer = next(layer for layer in result.report.data["layers"] if layer["name"] == "relu_1")
    assert layer["activation_error"]["mean_abs"] == pytest.approx(expected)


def test_markdown_links_every_figure(compiled):
    _, out = compiled
    md = (out / "report.md").read_text()
    for heading in ("## Bit-exactness", "## Layers", "## Resources (Loihi 2)", "## ANN activation vs SNN rate",
                    "## Accuracy vs time steps", "## Figures"):
        assert heading in md
    for stem, _, title in FIGURES:
        assert f"![{title}](plots/{stem}.png)" in md
        assert (out / "plots" / f"{stem}.png").is_file()


def _tampered_traces(result):
    """The reference trace of 2 test samples, and a copy with relu_3's v at sample 1, step 5,
    neuron 7 raised by 3."""
    x = digits(image=False).test.x[:2]
    ref = fixed.simulate(result.fixed_graph, x, 8, device="cpu", record=True).trace
    other = Trace(steps=ref.steps, spikes={k: v.copy() for k, v in ref.spikes.items()},
                  v={k: v.copy() for k, v in ref.v.items()})
    other.v["relu_3"][1, 5, 7] += 3
    return ref, other


def test_compile_time_divergence_section(compiled):
    """report.json's bit_exact from a real comparison that differs in one value: the section says
    where (layer, step, neuron)."""
    result, _ = compiled
    ref, other = _tampered_traces(result)
    comparison = compare(ref, other).as_dict()
    assert comparison["mismatches"] == 1
    section = verify_html(comparison_as_verify(comparison))
    for fragment in ("DIVERGED", "<td>relu_3</td>", "<td>5</td>", "<th>sample</th><td>1</td>", "<td>(7)</td>",
                     "<td>v</td>"):
        assert fragment in section


def test_verify_divergence_section_shows_both_values(compiled):
    """`snncompile verify`'s own comparison (verify.compare_layers) of the same traces: the section
    and its markdown give layer, step, sample, neuron and both values, and a per-step figure."""
    from snncompile.report.verify import compare_layers

    result, _ = compiled
    ref, other = _tampered_traces(result)
    layers = list(ref.v)
    pairs = lambda t: {k: (t.spikes[k], t.v[k]) for k in layers}  # noqa: E731
    verified = compare_layers(pairs(ref), pairs(other), layers, [0, 1], 8)
    verified |= {"identical": False, "summary": "differs in 1 value", "against": "tampered copy",
                 "samples": 2, "steps": 8}
    first = verified["first_divergence"]
    expected, got = int(ref.v["relu_3"][1, 5, 7]), int(other.v["relu_3"][1, 5, 7])
    assert (first["layer"], first["step"], first["expected"], first["got"]) == ("relu_3", 5, expected, got)
    html_text, md = verify_html(verified), verify_markdown(verified)
    for value in (expected, got):
        assert f"<td>{value}</td>" in html_text and f"| {value} |" in md
    assert "<td>relu_3</td>" in html_text and "| sample | 1 |" in md and "layers compared: 3" in md
    assert "| relu_3 | " in md and "| 1 | 5 |" in md  # per-layer row: 1 differing value, first at step 5
    page = _page(html_text)
    assert page.sections == ["verify"] and [img["id"] for img in page.images] == ["img-divergence"]
    assert_real_png(base64.b64decode(page.images[0]["src"].split(",", 1)[1]))


def test_verify_on_the_compiled_bundle_renders_identical(compiled, tmp_path):
    """The real `snncompile verify` on the compile's own outputs (Lava again), rendered."""
    from snncompile.report.verify import verify

    _, out = compiled
    verified = verify(out)
    files = write_verify(verified, tmp_path)
    text = files["verify_html"].read_text()
    assert verified["identical"] and "identical: every spike" in text and "DIVERGED" not in text
    assert "**identical**" in files["verify_md"].read_text()
    assert _page(text).images == []  # no divergence, no figure


def test_compile_time_section_says_identical(compiled):
    _, out = compiled
    text = (out / "report.html").read_text()
    section = text[text.index('<section id="bit-exact">'):]
    section = section[:section.index("</section>")]
    assert "identical" in section and "mismatches: 0" in section and "DIVERGED" not in section


# -- as a person sees it: Chromium --------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(render.chromium() is None,
                                    reason="no Chromium (/usr/bin/chromium): apt-get install -y chromium")


@needs_chromium
def test_chromium_loads_every_figure(compiled, tmp_path):
    """Chromium decodes each inlined image (naturalWidth > 0) and lays out every section."""
    _, out = compiled
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load', () => { document.body.setAttribute('data-widths', "
              "[...document.images].map(i => i.id + ':' + i.naturalWidth + 'x' + i.naturalHeight).join(' '));"
              "document.body.setAttribute('data-sections', [...document.querySelectorAll('section')]"
              ".map(s => s.id + ':' + s.getBoundingClientRect().height).join(' ')); });</script>")
    probe.write_text((out / "report.html").read_text().replace("</body>", script + "</body>"))
    dom = render.dump_dom(probe)
    widths = dict(item.split(":") for item in _attr(dom, "data-widths").split())
    assert set(widths) == {f"img-{stem}" for stem, _, _ in FIGURES}
    for size in widths.values():
        w, h = map(int, size.split("x"))
        assert w >= 300 and h >= 150
    heights = dict(item.split(":") for item in _attr(dom, "data-sections").split())
    assert list(heights) == list(SECTIONS)
    assert all(float(h) > 40 for h in heights.values())


def _attr(dom: str, name: str) -> str:
    start = dom.index(f'{name}="') + len(name) + 2
    return dom[start:dom.index('"', start)]


@needs_chromium
def test_chromium_screenshot_shows_the_report(compiled, tmp_path):
    _, out = compiled
    png = render.screenshot(out / "report.html", tmp_path / "report.png")
    with Image.open(png) as img:
        rgb = np.asarray(img.convert("RGB"))
    height = rgb.shape[0]
    assert rgb.shape[1] == 1200 and 2000 < height < 6000  # cropped to the page: five figures tall
    # ink all the way down: every 10th of the page has drawn pixels (no blank stretch, no cut-off)
    for band in np.array_split(rgb, 10):
        assert (band.min(axis=2) < 128).mean() > 0.001


def test_a_deep_networks_bar_charts_keep_a_readable_height():
    """More than plots.DENSE layers (a torchvision MobileNetV2 has 149): each bar chart row
    shrinks toward plots.MIN_ROW inches instead of 0.45, so 64 layers take about half the height
    they did; 12 layers keep 0.45."""
    from snncompile.report import plots

    def layers(n):
        return [{"name": f"features_{i}_conv_2", "spike_rate": 0.1 + i / (2 * n), "vth": 100,
                 "activation_error": {"rmse": 0.1, "mean_abs": 0.05}, "weight_error": 0.02,
                 "overflow": {"v_clipped_low": i}} for i in range(n)]

    for draw in (plots.firing_rates, plots.quantization):
        deep = Image.open(io.BytesIO(draw(layers(64))))
        shallow = Image.open(io.BytesIO(draw(layers(12))))
        before = (64 * plots.ROW + 1.6) * plots.DPI  # 0.45 in a row and the margins
        assert 64 * plots.MIN_ROW * plots.DPI <= deep.height <= 0.55 * before, (draw.__name__, deep.height)
        assert shallow.height >= 12 * plots.ROW * plots.DPI, (draw.__name__, shallow.height)
