"""A network whose last layer spikes is read by its spike counts (snnTorch's, SpikingJelly's and
sinabs' convention), in the float SNN, on the reference simulator and in report.json."""

import json

import numpy as np

from snncompile.backends import reference
from snncompile.ir import IF, Dense, GraphBuilder, Input, Integrator, Output, Reset
from snncompile.passes.quantize import Quantize
from snncompile.sim import fixed
from snncompile.sim import snn as float_snn


def spiking_mlp(readout: bool = False):
    """64 -> 16 IF -> 10 IF (or an Integrator readout)."""
    rng = np.random.default_rng(0)
    b = GraphBuilder()
    b.add("input", Input(shape=(64,)))
    b.add("fc1", Dense(weight=rng.uniform(-0.05, 0.2, (16, 64))), ["input"])
    b.add("if1", IF(threshold=1.0, reset=Reset.SUBTRACT), ["fc1"])
    b.add("fc2", Dense(weight=rng.normal(0.2, 0.5, (10, 16))), ["if1"])
    b.add("out_neurons", Integrator() if readout else IF(threshold=1.0, reset=Reset.SUBTRACT), ["fc2"])
    b.add("output", Output(), ["out_neurons"])
    return b.build()


def test_spiking_output_layer_scores_by_spike_counts(digits_flat):
    g, x, steps = spiking_mlp(), digits_flat.test.x[:32], 16
    assert float_snn.readout_kind(g) == "spike_count" and float_snn.readout_kind(spiking_mlp(True)) == "membrane"
    run = float_snn.simulate(g, x, steps, delay=1, record=True)
    counts = run.scores()["output"]
    assert np.array_equal(counts, run.spikes["out_neurons"].sum(axis=1)) and counts.max() > 1
    assert not np.array_equal(counts, run.outputs["output"])  # the membrane is not what is scored
    q = Quantize(data=digits_flat.train.x[:64], steps=steps)(g)
    logits, _ = reference.predict(q, x, steps, device="cpu", progress=False)
    traced = fixed.simulate(q, x, steps, device="cpu").trace.spikes["out_neurons"].sum(axis=1)
    assert np.array_equal(logits, traced)
    # a readout integrator keeps the membrane
    assert np.array_equal(float_snn.simulate(spiking_mlp(True), x, steps).scores()["output"],
                          float_snn.simulate(spiking_mlp(True), x, steps).outputs["output"])


def test_report_says_which_readout(tmp_path):
    from snncompile.compiler import Options, compile_model

    compiled = compile_model(spiking_mlp(), tmp_path / "out", Options(target="nir", steps=16, progress=False,
                                                                      allow_silent=True))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["readout"] == "spike_count" and "spike count" in report["readout_description"]
    assert compiled.report.data["float_snn_accuracy"] is not None
