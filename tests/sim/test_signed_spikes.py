"""Reset.SIGNED in the float SNN: a plain per-step loop gives the same −1 / 0 / +1 spikes and v
(the fixed-point twin is pinned by tests/sim/test_fixed_oracle.py); a signed neuron's spikes so
far never sum below 0 and follow its charge so far, where a binary one keeps its running maximum."""

import numpy as np
import pytest

from snncompile import compiler
from snncompile.errors import SnnCompileError
from snncompile.ir import IF, Dense, GraphBuilder, Input, Integrator, Output, Reset
from snncompile.sim import snn as float_snn


def signed_mlp(reset=Reset.SIGNED):
    """8 -> 6 IF -> 4 IF (mixed-sign weights: early excitation, later inhibition) -> readout."""
    rng = np.random.default_rng(3)
    b = GraphBuilder()
    b.add("input", Input(shape=(8,)))
    b.add("fc1", Dense(weight=rng.uniform(-0.1, 0.4, (6, 8))), ["input"])
    b.add("if1", IF(threshold=1.0, reset=reset, v_init=0.5), ["fc1"])
    b.add("fc2", Dense(weight=rng.normal(0.0, 1.2, (4, 6)), bias=rng.uniform(0, 0.3, 4)), ["if1"])
    b.add("if2", IF(threshold=1.0, reset=reset, v_init=0.5), ["fc2"])
    b.add("fc3", Dense(weight=rng.normal(0, 1, (3, 4))), ["if2"])
    b.add("readout", Integrator(), ["fc3"])
    b.add("output", Output(), ["readout"])
    return b.build(), rng.uniform(0, 1, (16, 8))


def loop(graph, x, steps):
    """The float semantics of ir.IF written out, one step and one neuron layer at a time, with
    Loihi's one-step synaptic delay (a synapse's bias starts with its input)."""
    w = {k: graph.op(k).weight for k in ("fc1", "fc2", "fc3")}
    b = {k: graph.op(k).bias if graph.op(k).bias is not None else 0.0 for k in ("fc1", "fc2", "fc3")}
    v = {"if1": np.full((len(x), 6), 0.5), "if2": np.full((len(x), 4), 0.5)}
    sent = {k: np.zeros_like(a) for k, a in v.items()}
    s = {k: np.zeros_like(a) for k, a in v.items()}
    out, rec = np.zeros((len(x), 3)), {"if1": [], "if2": []}
    for t in range(steps):
        current = {"if1": x @ w["fc1"].T + b["fc1"],
                   "if2": s["if1"] @ w["fc2"].T + (b["fc2"] if t >= 1 else 0)}
        readout_in = s["if2"] @ w["fc3"].T + (b["fc3"] if t >= 2 else 0)
        for k in ("if1", "if2"):
            v[k] = v[k] + current[k]
            spikes = np.where(v[k] > 1.0, 1.0, np.where((v[k] <= 0) & (sent[k] > 0), -1.0, 0.0))
            v[k] = v[k] - spikes
            sent[k] = sent[k] + spikes
            s[k] = spikes
            rec[k].append(spikes)
        out = out + readout_in
    return out, {k: np.stack(r, 1) for k, r in rec.items()}


def test_float_snn_equals_a_plain_loop_and_takes_spikes_back():
    graph, x = signed_mlp()
    run = float_snn.simulate(graph, x, 12, delay=1, record=True)
    out, spikes = loop(graph, x, 12)
    for k in spikes:
        assert np.array_equal(run.spikes[k], spikes[k].astype(np.int8)), k
    assert np.allclose(run.outputs["output"], out)
    assert np.any(spikes["if2"] < 0)  # early spikes were taken back
    assert np.all(np.cumsum(spikes["if2"], axis=1) >= 0)
    # the binary neuron sends the same +1s up to the first −1, and never takes one back
    binary = float_snn.simulate(signed_mlp(Reset.SUBTRACT)[0], x, 12, delay=1, record=True)
    assert binary.spikes["if2"].min() == 0
    assert binary.spikes["if2"].sum() > run.spikes["if2"].sum()


def test_spike_mode_resolves_per_target():
    mode = compiler.spike_mode
    assert mode(compiler.Options()) == "signed"
    assert mode(compiler.Options(target="nir")) == "binary"
    assert mode(compiler.Options(target="netx")) == "netx"
    assert mode(compiler.Options(nir_flavor="rockpool")) == "binary"
    assert mode(compiler.Options(spikes="binary")) == "binary"
    assert mode(compiler.Options(target="nir", spikes="signed")) == "signed"
    with pytest.raises(SnnCompileError, match="netx's CUBA neuron sends binary spikes"):
        mode(compiler.Options(target="netx", spikes="signed"))
    with pytest.raises(SnnCompileError, match="--spikes must be one of"):
        mode(compiler.Options(spikes="ternary"))


def test_report_says_which_spikes_ran(tmp_path):
    """report.json ``spikes``, the summary and report.md: signed by default on loihi2 (with the
    −1 spikes counted), binary on request, and a binary compile sends no −1."""
    import json
    from pathlib import Path

    from snncompile.api import load_model

    mlp = load_model(Path(__file__).resolve().parents[2] / "examples" / "digits_mlp.pt2")
    reports = {}
    for spikes in ("auto", "binary"):
        out = tmp_path / spikes
        compiled = compiler.compile_model(mlp, out, compiler.Options(steps=8, samples=1, progress=False,
                                                                     calibrate="none", spikes=spikes))
        reports[spikes] = json.loads((out / "report.json").read_text())["spikes"]
        summary, md = compiled.report.summary(), (out / "report.md").read_text()
        if spikes == "auto":
            assert "spikes: signed (-1 takes back an early spike)" in summary
            assert "- Spikes: signed (--spikes auto)" in md
        else:
            assert "spikes: signed" not in summary and "- Spikes: binary (--spikes binary)" in md
        assert compiled.report.data["bit_exact"]["mismatches"] == 0
    assert reports["auto"]["mode"] == "signed" and 0 < reports["auto"]["negative_spikes"] < reports["auto"]["spikes_sent"]
    assert reports["binary"]["mode"] == "binary" and reports["binary"]["negative_spikes"] == 0
