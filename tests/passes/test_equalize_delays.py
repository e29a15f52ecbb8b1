"""passes.equalize_delays: relay layers make every path into a neuron equally deep.

- after the pass every neuron's inputs arrive at one step (shortest = longest path) and L is
  unchanged;
- the float SNN run with Loihi's one-step delays is the delay-free SNN shifted by each layer's
  depth, spike for spike (the point of the pass), on a residual net and on the CIFAR ResNet-20;
- the relay budget: beyond ``max_extra`` nothing is inserted and the metadata says why;
- the relays quantize to exact integer relays, bit-exact on Lava.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from snncompile import compiler
from snncompile.ir.ops import Reset
from snncompile.ir.timing import arrivals, latency_steps
from snncompile.passes import pipeline
from snncompile.passes.equalize_delays import EqualizeDelays
from snncompile.sim import fixed
from snncompile.sim import snn as float_snn
from tests.builders import make_resnet

ROOT = Path(__file__).resolve().parents[2]


def converted(x, equalize, reset=Reset.SUBTRACT):
    return pipeline.run(make_resnet(), pipeline.convert(x, steps=16, equalize=equalize, reset=reset))


def test_every_path_into_a_neuron_is_equally_deep(digits_image):
    x = digits_image.train.x[:32]
    plain, snn = converted(x, False), converted(x, True)
    before, after = arrivals(plain), arrivals(snn)
    assert any(lo != hi for n, (lo, hi) in before.items() if plain.op(n).neuron)  # the shortcut
    assert all(lo == hi for n, (lo, hi) in after.items() if snn.op(n).neuron)
    assert latency_steps(snn) == latency_steps(plain)
    info = snn.metadata["delays"]
    assert info["equalized"] and info["relay_neurons"] > 0 and info["inserted_on"] == 1


@pytest.mark.parametrize("reset", [Reset.SUBTRACT, Reset.SIGNED])
def test_delayed_run_is_the_delay_free_run_shifted_by_depth(digits_image, reset):
    x = digits_image.train.x[:32]
    snn = converted(x, True, reset)
    T, L = 12, latency_steps(snn)
    free = float_snn.simulate(snn, digits_image.test.x[:16], T, delay=0, record=True)
    late = float_snn.simulate(snn, digits_image.test.x[:16], T + L, delay=1, record=True)
    times = arrivals(snn)
    for name, spikes in free.spikes.items():
        d = times[name][0]
        assert np.array_equal(late.spikes[name][:, d:d + T], spikes), name
        assert not np.any(late.spikes[name][:, :d])


def test_signed_relays_copy_signed_trains_in_fixed_point():
    """A relay of a Reset.SIGNED source is itself signed (threshold = weight, v_init = θ/2):
    after quantization it sends its source's −1 / 0 / +1 spikes one step later, exactly."""
    from snncompile.api import load_model
    from tests.zoo.models import digits32

    # the CIFAR ResNet-20 (examples/): its shortcuts relay layers whose input has both signs
    # (the small ResNets here relay only the host-fed first layer, which never sends −1)
    xtr, _, xte, _ = digits32()
    options = compiler.Options(steps=4, progress=False, equalize_delays=True, spikes="signed")
    snn = compiler.to_snn(load_model(ROOT / "examples" / "digits32_resnet20.pt2"), xtr[:64], options)
    fixed_g, _ = compiler.fixed_point(snn, xtr[:64], options)
    relays = [n for n in fixed_g.order() if "_relay_" in n and fixed_g.op(n).neuron]
    assert relays and all(fixed_g.op(r).reset is Reset.SIGNED for r in relays)
    run = fixed.simulate(fixed_g, xte[:4], 4 + latency_steps(fixed_g), record=True)
    negative = 0
    for r in relays:
        (syn,) = fixed_g.inputs(r)
        (src,) = fixed_g.inputs(syn)
        assert np.array_equal(run.trace.spikes[r][:, 1:], run.trace.spikes[src][:, :-1]), r
        negative += int(np.sum(run.trace.spikes[r] < 0))
    assert negative > 0


def test_relays_beyond_the_budget_are_not_inserted(digits_image):
    plain = converted(digits_image.train.x[:32], False)
    out = EqualizeDelays(max_extra=0.01)(plain)
    info = out.metadata["delays"]
    assert not info["equalized"] and "paths of different depth keep their delays" in info["why"]
    assert len(out) == len(plain)


@pytest.mark.lava
def test_relays_are_bit_exact_on_lava(digits_image):
    from snncompile.backends.lava import run_lava
    from snncompile.sim.trace import compare

    x = digits_image.train.x[:32]
    options = compiler.Options(steps=8, progress=False, equalize_delays=True)
    snn = compiler.to_snn(make_resnet(), x, options)
    fixed_g, _ = compiler.fixed_point(snn, x, options)
    relays = [n for n in fixed_g.find(type(fixed_g.op(next(iter(fixed_g.metadata["latency"]["depths"])))))
              if "_relay_" in n]
    assert relays
    steps = 8 + latency_steps(fixed_g)
    check = digits_image.test.x[:1]
    run = fixed.simulate(fixed_g, check, steps, record=True)
    for r in relays:  # an integer relay: its source's spikes one step later
        (syn,) = fixed_g.inputs(r)
        (src,) = fixed_g.inputs(syn)
        assert np.array_equal(run.trace.spikes[r][:, 1:], run.trace.spikes[src][:, :-1])
    result = compare(run.trace, run_lava(fixed_g, check, steps))
    assert result.mismatches == 0


def test_auto_keeps_the_float_snn_closer_to_the_ann(digits_image):
    """--equalize-delays auto (the default), where T <= L, converts once, relays the copy, runs both
    float SNNs on the calibration data and keeps the one that agrees more with the ANN (then the
    smaller output error); report.json's delays say what was measured. On/off and True/False skip
    the runs."""
    from snncompile.sim import ann as ann_sim

    ann = make_resnet()
    x = digits_image.train.x[:64]
    for steps in (2, 4):  # T <= L = 4: measured
        snn = compiler.to_snn(ann, x, compiler.Options(steps=steps, progress=False))
        info = snn.metadata["delays"]
        assert info["mode"] == "auto" and info["samples"] == 64 and info["relay_neurons"] > 0
        agree, mse = info["agreement"], info["output_mse"]
        relayed = info["kept"] == "relayed"
        assert info["equalized"] == relayed and bool([n for n in snn.order() if "_relay_" in n]) == relayed
        # the kept one agrees best, or within 2 % of the best with a smaller output error
        other = "delays kept" if relayed else "relayed"
        kept = info["kept"]
        assert agree[kept] >= agree[other] - 0.02 and (agree[kept] >= agree[other] or mse[kept] < mse[other])
        # what was measured is the float SNN against the ANN on those samples
        target = ann_sim.forward(ann, x).numpy()
        out = float_snn.predict(snn, x, steps + latency_steps(snn)) / steps
        assert np.mean(out.argmax(1) == target.argmax(1)) == pytest.approx(agree[kept])
    # T > L: the shorter paths' head start is kept without running the relayed network; the float
    # SNN's agreement with the ANN is measured for --calibrate auto
    snn = compiler.to_snn(ann, x, compiler.Options(steps=16, progress=False))
    info = snn.metadata["delays"]
    assert not info["equalized"] and "T=16 > L=4" in info["why"] and info["kept"] == "delays kept"
    out = float_snn.predict(snn, x, 16 + latency_steps(snn)) / 16
    target = ann_sim.forward(ann, x).numpy()
    assert info["agreement"] == {"delays kept": pytest.approx(np.mean(out.argmax(1) == target.argmax(1)))}
    for value, relays in ((True, True), ("on", True), (False, False), ("off", False)):
        snn = compiler.to_snn(ann, x, compiler.Options(steps=8, progress=False, equalize_delays=value))
        assert bool([n for n in snn.order() if "_relay_" in n]) == relays
        assert snn.metadata.get("delays", {}).get("mode") != "auto"
    with pytest.raises(compiler.SnnCompileError, match="--equalize-delays must be one of auto, on, off"):
        compiler.to_snn(ann, x, compiler.Options(equalize_delays="sometimes"))
