"""Latency is part of the contract (passes.latency): depths, T + L steps, biases that wait for input.

- depth and L on a chain and on a residual net (shortest vs longest path);
- on a compiled fixed-point graph: no neuron fires before its input can arrive, and each neuron's v
  equals its uncompensated v_init exactly at the step its input arrives, in the reference simulator
  and in Lava (bit for bit);
- a negative bias that would start v above threshold arrives through synapses from a clock that
  starts at the layer's depth (exact, also on Lava); without that gating it is kept safe and
  counted; leaky neurons get the exact integer preimage;
- a directly trained LIF SNN (snnTorch, 4 synaptic layers with biases): compiled spike trains equal
  the framework's delay-free ones shifted by each layer's depth, exactly in the float simulator and
  within quantization in fixed point.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from snncompile import compiler
from snncompile.ir.ops import IF, LIF, LoihiNeuron
from snncompile.passes import pipeline
from snncompile.passes.latency import CompensateDelay, _forward, _leaky_preimage, arrivals, depths, latency_steps
from snncompile.sim import fixed
from snncompile.sim import snn as float_snn
from tests.builders import make_mlp, make_resnet


def fixed_graph(graph, x, steps=16, target="loihi2"):
    options = compiler.Options(steps=steps, target=target, progress=False)
    snn = compiler.to_snn(graph, x, options)
    fixed_g, _ = compiler.fixed_point(snn, x, options)
    return snn, fixed_g


def test_depth_of_a_chain_is_its_synaptic_layers_after_the_host():
    mlp = make_mlp()  # fc1 (host) relu1, fc2 relu2, fc3 readout
    snn = pipeline.run(mlp, pipeline.convert(np.random.default_rng(0).random((8, 64))))
    d = depths(snn)
    assert sorted(d.values()) == [0, 1, 2] and latency_steps(snn) == 2


def test_a_shortcut_arrives_before_the_long_path(digits_image):
    snn = pipeline.run(make_resnet(), pipeline.convert(digits_image.train.x[:16]))
    times = arrivals(snn)
    (readout,) = [snn.inputs(o)[0] for o in snn.output_names()]
    lo, hi = times[readout]
    assert latency_steps(snn) == hi and hi > lo  # the identity shortcut skips a synaptic layer


def test_biases_wait_for_their_input_in_the_reference(digits_flat):
    x = digits_flat.train.x[:64]
    snn, fixed_g = fixed_graph(make_mlp(), x)
    info = fixed_g.metadata["latency"]
    assert info["steps"] == 2 and info["compensated"] > 0
    uncompensated = pipeline.run(snn, (pipeline.Quantize(data=x, steps=16),))
    run = fixed.simulate(fixed_g, digits_flat.test.x[:32], 16 + info["steps"], record=True)
    inexact = 0
    for name, depth in info["depths"].items():
        if depth == 0:
            continue
        op = fixed_g.op(name)
        v0 = uncompensated.op(name).v_init
        bias = op.bias_mant.astype(np.int64) << op.bias_exp
        exact = op.v_init == v0 - depth * bias
        inexact += int(np.count_nonzero(~exact))
        assert not np.any(run.trace.spikes[name][:, :depth])  # nothing fires before its input
        # where exact, v is where the delay-free neuron starts the step before its input arrives
        before = run.trace.v[name][:, depth - 1]
        assert np.array_equal(before[:, exact], np.broadcast_to(v0, before.shape)[:, exact])
        assert np.all(before[:, ~exact] < np.broadcast_to(v0, before.shape)[:, ~exact])  # negative bias, capped
    assert inexact == info["inexact"] < info["compensated"]


@pytest.mark.lava
def test_compensated_graph_is_bit_exact_on_lava(digits_flat):
    from snncompile.backends.lava import run_lava
    from snncompile.sim.trace import compare

    x = digits_flat.train.x[:64]
    _, fixed_g = fixed_graph(make_mlp(), x)
    steps = 16 + fixed_g.metadata["latency"]["steps"]
    check = digits_flat.test.x[:2]
    result = compare(fixed.simulate(fixed_g, check, steps).trace, run_lava(fixed_g, check, steps))
    assert result.mismatches == 0 and result.steps == steps


def strong_negative_bias(digits_flat, **fields):
    """The MLP quantized, its depth-1 layer given a bias so negative that v_init − depth·bias
    would start above the threshold: bias_mant −4000, bias_exp 6, and any other ``fields`` of the
    LoihiNeuron (scalars, spread over the layer's shape)."""
    x = digits_flat.train.x[:64]
    snn, _ = fixed_graph(make_mlp(), x)
    q = pipeline.run(snn, (pipeline.Quantize(data=x, steps=16),))
    (deep,) = [n for n, op in q.nodes() if isinstance(op, LoihiNeuron) and not op.readout and depths(q)[n] == 1]
    op = q.op(deep)
    builder = q.edit()
    fields = {k: np.full(op.bias_mant.shape, v, dtype=np.int64)
              for k, v in {"bias_mant": -4000, "bias_exp": 6, **fields}.items()}
    builder.replace(deep, dataclasses.replace(op, **fields), q.inputs(deep))
    return builder.build(), deep


def test_a_negative_bias_that_would_fire_early_arrives_through_a_clock(digits_flat):
    """-4000 << 6 per step: the bias moves onto synapses from a clock neuron that fires from step
    depth − 1, so it reaches v from step depth, exactly; v_init stays the uncompensated one."""
    q, deep = strong_negative_bias(digits_flat)
    out = CompensateDelay()(q)
    info = out.metadata["latency"]
    assert info["inexact"] == 0 and info["gated"] == q.op(deep).bias_mant.size and info["clock_neurons"] == 1
    new = out.op(deep)
    assert not np.any(new.bias_mant) and np.array_equal(new.v_init, q.op(deep).v_init)
    kicks = [s for s in out.inputs(deep) if s not in q.inputs(deep)]
    (clock,) = {c for k in kicks for c in out.inputs(k)}
    assert not out.inputs(clock) and depths(out)[deep] == 1 and latency_steps(out) == latency_steps(q)
    # -4000 << 6 per step is -4000 << 0 in a_in: with weight exponents, two or three synapses
    assert len(kicks) <= 3
    total = sum(out.op(k).weight.astype(np.int64) << out.op(k).weight_exp for k in kicks)
    assert np.all(total == -4000)
    run = fixed.simulate(out, digits_flat.test.x[:8], 4, record=True)
    assert np.all(run.trace.spikes[clock] == 1)  # level 0 fires every step
    assert not np.any(run.trace.spikes[deep][:, 0])
    assert np.array_equal(run.trace.v[deep][:, 0], np.broadcast_to(new.v_init, (8, *new.v_init.shape)))
    plain = fixed.simulate(q, digits_flat.test.x[:8], 4, record=True)  # bias from step 0, uncompensated
    u_in = plain.trace.v[deep][:, 1] - plain.trace.v[deep][:, 0]  # not a spike in between: v > vth never
    assert not np.any(plain.trace.spikes[deep][:, :2])
    # from step 1 on, the gated neuron gets exactly the same bias and input as the plain one did
    assert np.array_equal(run.trace.v[deep][:, 1] - run.trace.v[deep][:, 0], u_in)


def test_a_gated_bias_leaves_the_neuron_a_remainder_that_only_lowers_its_start(digits_flat):
    """The clock's synapses carry the bias rounded *down* to a multiple of 128; the neuron keeps
    0 ≤ r < 128, so v_init − depth·r never nears the threshold. Here the bias is −(31·128 + 40) and
    vth is 1 (vth << 6 = 64, v_init 32): rounded to the nearest multiple, r = −40 would need v to
    start at 72 > 64 (MobileNetV2's depthwise layers at T=16 left 322 neurons inexact that way)."""
    q, deep = strong_negative_bias(digits_flat, vth=1, v_init=32, bias_mant=-(31 * 128 + 40), bias_exp=0)
    op = q.op(deep)
    out = CompensateDelay()(q)
    info = out.metadata["latency"]
    assert info["gated"] == op.bias_mant.size and info["inexact"] == 0
    new = out.op(deep)
    residual = new.bias_mant.astype(np.int64) << new.bias_exp
    assert np.all(residual == 88)  # −4008 = −32·128 + 88
    kicks = [s for s in out.inputs(deep) if s not in q.inputs(deep)]
    assert np.all(sum(out.op(k).weight.astype(np.int64) << out.op(k).weight_exp for k in kicks) == -64)
    assert np.all(new.v_init == 32 - 88)
    run = fixed.simulate(out, digits_flat.test.x[:8], 3, record=True)
    assert not np.any(run.trace.spikes[deep][:, 0])
    assert np.all(run.trace.v[deep][:, 0] == 32)  # the uncompensated start, the step before the input


@pytest.mark.lava
def test_a_gated_bias_is_bit_exact_on_lava(digits_flat):
    from snncompile.backends.lava import run_lava
    from snncompile.sim.trace import compare

    q, _ = strong_negative_bias(digits_flat)
    out = CompensateDelay()(q)
    check = digits_flat.test.x[:2]
    result = compare(fixed.simulate(out, check, 6).trace, run_lava(out, check, 6))
    assert result.mismatches == 0 and result.steps == 6


def test_without_gating_a_negative_bias_that_would_fire_early_is_kept_safe_and_counted(digits_flat):
    q, deep = strong_negative_bias(digits_flat)
    op = q.op(deep)
    out = CompensateDelay(gate=False)(q)
    assert out.metadata["latency"]["inexact"] == op.bias_mant.size
    assert np.all(out.op(deep).v_init <= out.op(deep).vth.astype(np.int64) << 6)  # nothing fires early
    run = fixed.simulate(out, digits_flat.test.x[:8], 1, record=True)
    assert not np.any(run.trace.spikes[deep][:, 0])


def test_netx_records_the_latency_without_compensating(digits_flat):
    x = digits_flat.train.x[:64]
    _, fixed_g = fixed_graph(make_mlp(), x, target="netx")
    info = fixed_g.metadata["latency"]
    assert info["compensated"] == 0 and info["steps"] == 2 and info["rule"].startswith("none")


def test_leaky_preimage_is_exact_where_one_exists():
    rng = np.random.default_rng(0)
    start = rng.integers(-2**20, 2**20, 500)
    bias = rng.integers(-3000, 3000, 500)
    for keep, steps in ((4096 - 410, 3), (4096 - 1, 5), (2048, 2)):
        target = _forward(start, bias, keep, steps)
        found = _leaky_preimage(target, bias, keep, steps, 2**23 - 1)
        assert np.array_equal(_forward(found, bias, keep, steps), target)


def trained_snntorch_lif(x, y):
    """snnTorch Leaky (β = 0.9) with 4 Linear layers with biases, trained 30 Adam steps on digits."""
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(0)
    sizes = (64, 48, 32, 24, 10)
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers += [torch.nn.Linear(a, b), snn.Leaky(beta=torch.full((b,), 0.9), threshold=torch.ones(b),
                                                     init_hidden=True, output=i == len(sizes) - 2,
                                                     reset_mechanism="zero")]
    net = torch.nn.Sequential(*layers)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(30):
        for m in net:
            if hasattr(m, "reset_hidden"):
                m.reset_hidden()
        total = 0
        for _ in range(8):
            spk, _ = net(xt)
            total = total + spk
        loss = torch.nn.functional.cross_entropy(total, yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for m in net:
        if hasattr(m, "reset_hidden"):
            m.reset_hidden()
    return net


def test_trained_lif_snn_spike_trains_are_the_delay_free_ones_shifted_by_depth(digits_flat, tmp_path):
    from snntorch.export_nir import export_to_nir

    from tests.interop.conftest import read_back, snntorch_counts

    x, y = digits_flat.train.x[:256].astype(np.float32), digits_flat.train.y[:256]
    net = trained_snntorch_lif(x, y)
    test = digits_flat.test.x[:32].astype(np.float32)
    steps = 16
    theirs = snntorch_counts(net, test, steps).numpy()
    graph = read_back(export_to_nir(net, torch.tensor(test[:1]), ignore_dims=[0]), tmp_path)
    snn, fixed_g = fixed_graph(graph, x[:64], steps)
    layers = [n for n in snn.order() if isinstance(snn.op(n), (IF, LIF))]
    assert len(layers) == 4 and all(np.any(snn.op(s).bias) for s in snn.order() if hasattr(snn.op(s), "bias")
                                    and snn.op(s).bias is not None)
    d = depths(snn)
    total = steps + latency_steps(snn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        free = float_snn.simulate(snn, test.astype(np.float64), steps, delay=0, record=True)
        loihi = float_snn.simulate(snn, test.astype(np.float64), total, delay=1, record=True)
    # the framework's own simulation is the delay-free one
    assert np.array_equal(free.spikes[layers[-1]].sum(1).reshape(theirs.shape), theirs)
    for name in layers:
        assert sorted(set(d.values())) == [0, 1, 2, 3]
        assert np.array_equal(loihi.spikes[name][:, d[name]:d[name] + steps], free.spikes[name]), name
        assert not np.any(loihi.spikes[name][:, :d[name]])
    # fixed point: the same shift, equal within quantization
    run = fixed.simulate(fixed_g, test, total, record=True)
    for name in layers:
        shifted = run.trace.spikes[name][:, d[name]:d[name] + steps]
        assert not np.any(run.trace.spikes[name][:, :d[name]])
        assert np.mean(shifted == free.spikes[name]) > 0.97, name
