"""Overflow accounting: every clip or wrap, at quantization and in simulation, is counted per
layer (report.json's layers[].overflow), and ``--strict`` turns any into an error (exit 4)."""

import numpy as np
import pytest

from snncompile.api import Options, compile_model
from snncompile.cli import EXIT_STRICT, main
from snncompile.errors import OverflowLimitError
from snncompile.ir import BiasEncoder, Dense, FixedDense, GraphBuilder, Input, LoihiNeuron, Output, Reset, chain
from snncompile.ir.ops import IF, Integrator
from snncompile.passes.quantize import Quantize
from snncompile.report.build import overflow_counts
from snncompile.sim import fixed
from snncompile.targets.loihi2 import LOIHI2

V_MAX = 2**23 - 1


def clipping_snn(v_init=1e9):
    """n1 is fed by the host; n2's weights (1000) force a scale of 254/1000, at which its threshold
    (0.001) rounds to 0 and is clipped to 1, and its v_init (1e9) saturates the 24-bit state."""
    return chain((2,), [
        ("fc1", Dense(weight=np.full((3, 2), 0.5), bias=np.zeros(3))),
        ("n1", IF(threshold=1.0, reset=Reset.SUBTRACT)),
        ("fc2", Dense(weight=np.full((4, 3), 1000.0))),
        ("n2", IF(threshold=0.001, reset=Reset.SUBTRACT, v_init=v_init)),
        ("fc3", Dense(weight=np.ones((2, 4)))),
        ("out", Integrator()),
    ])


def test_quantization_counts_clipped_thresholds_and_initial_potentials_exactly():
    data = np.ones((4, 2))
    q = Quantize(data=data, steps=8)(clipping_snn()).metadata["quantization"]
    assert q["n2"]["scale"] == pytest.approx(254 / 1000)
    assert q["n2"]["vth"] == 1
    assert {k: q["n2"][k] for k in ("weight_saturated", "bias_saturated", "threshold_clipped",
                                    "v_init_saturated")} == {"weight_saturated": 0, "bias_saturated": 0,
                                                             "threshold_clipped": 4, "v_init_saturated": 4}
    assert q["n1"]["threshold_clipped"] == 0 and q["n1"]["v_init_saturated"] == 0
    # a representable v_init is not counted
    assert Quantize(data=data, steps=8)(clipping_snn(v_init=1.0)).metadata["quantization"]["n2"]["v_init_saturated"] == 0


def ramp_graph(weight=254):
    """n1 fires every step (bias far above vth); the readout n2 integrates weight·64 per step
    from step 1 on (one step of synaptic delay) and clips at 2**23 − 1."""
    b = GraphBuilder()
    b.add("input", Input(shape=(1,)))
    b.add("enc", BiasEncoder(scale=1.0, bias_format=LOIHI2.bias), ["input"])
    b.add("n1", LoihiNeuron(vth=np.array([1]), bias_mant=np.zeros(1), bias_exp=np.zeros(1), reset=Reset.ZERO,
                            vth_format=LOIHI2.vth, bias_format=LOIHI2.bias, decay_format=LOIHI2.decay), ["enc"])
    b.add("syn", FixedDense(weight=np.array([[weight]]), weight_format=LOIHI2.weight), ["n1"])
    b.add("n2", LoihiNeuron(vth=np.array([LOIHI2.vth.max]), bias_mant=np.zeros(1), bias_exp=np.zeros(1),
                            reset=Reset.ZERO, readout=True, vth_format=LOIHI2.vth, bias_format=LOIHI2.bias,
                            decay_format=LOIHI2.decay), ["syn"])
    b.add("output", Output(), ["n2"])
    return b.build()


def expected_ramp(weight, steps):
    """The same neuron by hand: (v clipped high, readout spikes)."""
    v, clipped, fired = 0, 0, 0
    for t in range(steps):
        v += (weight << 6) if t >= 1 else 0
        if v > V_MAX:
            v, clipped = V_MAX, clipped + 1
        if v > LOIHI2.vth.max << 6:
            v, fired = 0, fired + 1
    return clipped, fired


@pytest.mark.parametrize("weight, steps", [(254, 520), (254, 1200), (-256, 600)])
def test_simulation_counts_clips_exactly_and_they_reach_the_report_counts(weight, steps):
    graph = ramp_graph(weight)
    x = np.full((3, 1), 4000.0)  # three samples, each n1 fires every step
    result = fixed.simulate(graph, x, steps, device="cpu", record=False)
    clipped, fired = expected_ramp(weight, steps) if weight > 0 else (0, 0)
    stats = result.stats["n2"]
    assert stats.v_clipped == 3 * clipped and stats.readout_spikes == 3 * fired
    if weight < 0:  # v falls by 256·64 per step from step 1: clipped low from then on
        first = next(t for t in range(steps) if 256 * 64 * t > V_MAX)
        assert stats.v_clipped_low == 3 * (steps - first)
    counts = overflow_counts(graph, result.stats)
    assert counts["n2"]["v_clipped"] == stats.v_clipped
    assert counts["n2"]["readout_spikes"] == stats.readout_spikes
    assert sum(counts["n1"].values()) == 0


def test_strict_refuses_clipped_values_and_writes_nothing(tmp_path):
    data = tmp_path / "data.npz"
    np.savez(data, x=np.ones((4, 2), dtype=np.float32), y=np.zeros(4, dtype=np.int64))
    out = tmp_path / "out"
    options = Options(data=str(data), steps=4, samples=1, calib_samples=4, progress=False, strict=True,
                      device="cpu")
    with pytest.raises(OverflowLimitError) as info:
        compile_model(clipping_snn(), out, options)
    message = str(info.value)
    assert "n2: " in message and "4 threshold_clipped" in message and "4 v_init_saturated" in message
    assert info.value.exit_code == EXIT_STRICT == 4
    assert not out.exists()


def test_strict_on_the_command_line_exits_4(tmp_path, capsys):
    from snncompile.backends import nir as nir_backend

    path = nir_backend.write(clipping_snn(), tmp_path / "snn.nir")  # a NIR file keeps its neurons
    data = tmp_path / "data.npz"
    np.savez(data, x=np.ones((4, 2), dtype=np.float32))
    out = tmp_path / "out"
    code = main([str(path), "-o", str(out), "--data", str(data), "--steps", "4", "--samples", "1",
                 "--calib-samples", "4", "--strict", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4, err
    assert len(err) == 1 and err[0].startswith("snncompile: error: --strict:"), err
    assert "n2: " in err[0] and "4 threshold_clipped" in err[0]
    assert not out.exists()
