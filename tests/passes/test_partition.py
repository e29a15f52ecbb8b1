"""Partition: every neuron placed once, every per-core limit kept (checked against a brute-force
oracle of the connectivity), conv slices cut at channels where that pays, one-line errors, and
the bundled examples within 1.25x of the lower bound on cores."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from snncompile.api import Options, inspect_model
from snncompile.errors import ResourceError
from snncompile.ir import BiasEncoder, FixedConv2d, FixedDense, GraphBuilder, Input, LoihiNeuron, Output
from snncompile.ir.ops import conv_output_hw
from snncompile.passes.partition import Partition, Usage, capacity, connections, coverage, spike_source
from snncompile.targets.loihi2 import LOIHI2

ROOT = Path(__file__).resolve().parents[2]


# -- fixed-point graphs built directly ------------------------------------------------------------


def neuron(shape, readout=False):
    zeros = np.zeros(shape)
    return LoihiNeuron(vth=np.full(shape, 100), bias_mant=zeros, bias_exp=zeros, readout=readout,
                       vth_format=LOIHI2.vth, bias_format=LOIHI2.bias, decay_format=LOIHI2.decay)


def weights(rng, shape, density):
    """Even nonzero integers in [-254, 254], each kept with probability ``density``."""
    magnitude = rng.integers(1, 128, shape) * 2 * rng.choice([-1, 1], shape)
    return magnitude * (rng.random(shape) < density)


def dense(w):
    return FixedDense(weight=w, weight_format=LOIHI2.weight)


def conv(w, stride=1, padding=0, dilation=1, groups=1):
    return FixedConv2d(weight=w, weight_format=LOIHI2.weight, output_format=LOIHI2.conv_out,
                       stride=stride, padding=padding, dilation=dilation, groups=groups)


def start(shape) -> GraphBuilder:
    """Input -> BiasEncoder -> population n0 of ``shape``."""
    b = GraphBuilder()
    b.add("input", Input(shape=shape))
    b.add("enc", BiasEncoder(scale=1.0, bias_format=LOIHI2.bias), ["input"])
    b.add("n0", neuron(shape), ["enc"])
    return b


def finish(b: GraphBuilder, last: str):
    b.add("output", Output(), [last])
    return b.build()


def mlp(sizes, density=1.0, seed=0):
    rng = np.random.default_rng(seed)
    b = start((sizes[0],))
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), 1):
        b.add(f"w{i}", dense(weights(rng, (n_out, n_in), density)), [f"n{i - 1}"])
        b.add(f"n{i}", neuron((n_out,)), [f"w{i}"])
    return finish(b, f"n{len(sizes) - 1}")


def one_conv(channels_in=2, channels_out=4, hw=4, seed=0):
    rng = np.random.default_rng(seed)
    b = start((channels_in, hw, hw))
    b.add("w1", conv(weights(rng, (channels_out, channels_in, 3, 3), 1.0), padding=1), ["n0"])
    b.add("n1", neuron((channels_out, hw, hw)), ["w1"])
    return finish(b, "n1")


def limits(**kw):
    """LOIHI2 with per-core limits replaced (names as in Usage, plus the target's own fields)."""
    names = {"neurons": "neurons_per_core", "synapse_bytes": "synapse_bytes_per_core",
             "fan_in": "fan_in_per_core", "fan_out": "fan_out_per_core"}
    return replace(LOIHI2, **{names.get(k, k): v for k, v in kw.items()})


# -- the oracle: connectivity by brute force, exact per-core usage -------------------------------


def brute_connectivity(graph, synapse) -> np.ndarray:
    """(targets, sources) boolean matrix, written out loop by loop from the op's definition."""
    op = graph.op(synapse)
    if isinstance(op, FixedDense):
        return op.weight != 0
    c_in, h, w = graph.shape(spike_source(graph, synapse))
    c_out, h_out, w_out = graph.shape(synapse)
    cin_g, cout_g = c_in // op.groups, c_out // op.groups
    conn = np.zeros((c_out * h_out * w_out, c_in * h * w), dtype=bool)
    (sh, sw), (ph, pw), (dh, dw) = op.stride, op.padding, op.dilation
    for o in range(c_out):
        group = o // cout_g
        for i, kh, kw in zip(*np.nonzero(op.weight[o])):
            for y in range(h_out):
                for x in range(w_out):
                    iy, ix = y * sh - ph + kh * dh, x * sw - pw + kw * dw
                    if 0 <= iy < h and 0 <= ix < w:
                        conn[(o * h_out + y) * w_out + x, ((group * cin_g + i) * h + iy) * w + ix] = True
    return conn


def exact_core_usage(graph, placement, target) -> list[Usage]:
    """What each core really holds, written from the model's definitions: input axons per source
    neuron (dense) or source pixel (conv) and kernels counted once per core, output axons per
    (neuron, destination core) for dense and per (pixel, destination core) for conv."""
    synapses = graph.find((FixedDense, FixedConv2d))
    conn = {s: brute_connectivity(graph, s) for s in synapses}
    is_conv = {s: isinstance(graph.op(s), FixedConv2d) for s in synapses}
    core_of = {}  # (population, neuron) -> core
    for s in placement.slices:
        for j in range(s.start, s.stop):
            core_of[s.layer, j] = s.core

    def pixel(population, j):
        shape = graph.shape(population)
        return j % int(np.prod(shape[1:])) if len(shape) == 3 else j

    usage = []
    for core in range(placement.cores_used):
        here = [s for s in placement.slices if s.core == core]
        neurons = sum(s.stop - s.start for s in here)
        axons_in, stored, kernels = set(), 0, set()
        for s in here:
            for syn in synapses:
                if graph.users(syn)[0] != s.layer:
                    continue
                src = spike_source(graph, syn)
                for j in np.nonzero(conn[syn][s.start:s.stop].any(axis=0))[0]:
                    axons_in.add((src, is_conv[syn], pixel(src, j) if is_conv[syn] else j))
                op = graph.op(syn)
                if is_conv[syn]:
                    per_channel = int(np.prod(graph.shape(syn)[1:]))
                    kernels |= {(syn, c) for c in range(s.start // per_channel, (s.stop - 1) // per_channel + 1)}
                else:
                    stored += int(np.count_nonzero(op.weight[s.start:s.stop]))
        stored += sum(int(np.count_nonzero(graph.op(syn).weight[c])) for syn, c in kernels)
        axons_out = set()
        for s in here:
            for syn in synapses:
                if spike_source(graph, syn) != s.layer:
                    continue
                consumer = graph.users(syn)[0]
                for j in range(s.start, s.stop):
                    for t in np.nonzero(conn[syn][:, j])[0]:
                        sender = ("pixel", pixel(s.layer, j)) if is_conv[syn] else ("neuron", j)
                        axons_out.add((s.layer, sender, core_of[consumer, t]))
        fan_in = len(axons_in)
        usage.append(Usage(neurons, stored * target.weight_bytes + fan_in * target.axon_bytes, fan_in,
                           len(axons_out)))
    return usage


def check_placement(graph, placement, target, chips):
    cap = capacity(target)
    # every neuron of every population exactly once, in contiguous ranges
    for name in graph.find(LoihiNeuron):
        ranges = sorted((s.start, s.stop) for s in placement.slices if s.layer == name)
        size = int(np.prod(graph.shape(name)))
        assert ranges[0][0] == 0 and ranges[-1][1] == size
        assert all(a < b for a, b in ranges) and all(b == c for (_, b), (c, _) in zip(ranges, ranges[1:]))
    # modelled usage adds up, stays within every limit, and is never below the real usage
    for core, modelled in enumerate(placement.cores):
        total = Usage()
        for s in placement.slices:
            if s.core == core:
                total = total + s.usage
                assert s.chip == core // target.cores_per_chip
        assert total == modelled
        assert modelled.fits(cap), modelled.exceeded(cap)
    for modelled, real in zip(placement.cores, exact_core_usage(graph, placement, target)):
        assert real.fits(modelled), (real, modelled)
    assert placement.cores_used <= chips * target.cores_per_chip
    assert placement.lower_bound <= placement.cores_used


# -- generated graphs -----------------------------------------------------------------------------


@st.composite
def fixed_graphs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        shape = (draw(st.integers(1, 4)), draw(st.integers(2, 6)), draw(st.integers(2, 6)))
    else:
        shape = (draw(st.integers(1, 40)),)
    b = start(shape)
    populations = [("n0", shape)]
    for layer in range(1, draw(st.integers(1, 3)) + 1):
        prev, prev_shape = populations[-1]
        density = draw(st.sampled_from([0.0, 0.2, 0.7, 1.0]))
        out_shape = None
        if len(prev_shape) == 3 and draw(st.booleans()):
            c_in = prev_shape[0]
            groups = draw(st.sampled_from([g for g in (1, 2) if c_in % g == 0]))
            c_out = groups * draw(st.integers(1, 3))
            k, s, p, d = (draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 1)),
                          draw(st.integers(1, 2)))
            h, w = conv_output_hw(prev_shape[1:], (k, k), (s, s), (p, p), (d, d))
            if h > 0 and w > 0:
                op = conv(weights(rng, (c_out, c_in // groups, k, k), density), s, p, d, groups)
                out_shape = (c_out, h, w)
        if out_shape is None:
            out_shape = (draw(st.integers(1, 30)),)
            op = dense(weights(rng, (out_shape[0], int(np.prod(prev_shape))), density))
        b.add(f"w{layer}", op, [prev])
        inputs = [f"w{layer}"]
        if len(out_shape) == 1 and len(populations) > 1 and draw(st.booleans()):
            # a second synaptic input from an earlier population (membrane-add)
            src, src_shape = populations[draw(st.integers(0, len(populations) - 2))]
            b.add(f"skip{layer}", dense(weights(rng, (out_shape[0], int(np.prod(src_shape))), density)), [src])
            inputs.append(f"skip{layer}")
        b.add(f"n{layer}", neuron(out_shape), inputs)
        populations.append((f"n{layer}", out_shape))
    return finish(b, populations[-1][0])


@st.composite
def targets(draw):
    return limits(neurons=draw(st.integers(1, 60)), synapse_bytes=draw(st.integers(0, 4000)),
                  fan_in=draw(st.integers(1, 300)), fan_out=draw(st.integers(1, 300)),
                  weight_bytes=draw(st.integers(1, 2)), axon_bytes=draw(st.integers(0, 8)),
                  cores_per_chip=draw(st.integers(1, 16)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fixed_graphs(), targets(), st.integers(1, 4))
def test_partition_keeps_every_limit_and_places_every_neuron_once(graph, target, chips):
    try:
        placement = Partition(target=target, chips=chips)(graph)
    except ResourceError as exc:
        message = str(exc)
        assert "\n" not in message
        if "alone needs" in message:  # a neuron exceeds a core: no number of chips helps
            event("a neuron exceeds a core")
            with pytest.raises(ResourceError, match="alone needs"):
                Partition(target=target, chips=10**6)(graph)
        else:  # too few chips: with enough of them it fits, and needs more cores than it had
            assert "short" in message
            event("too few chips")
            placement = Partition(target=target, chips=10**6)(graph)
            assert placement.cores_used > chips * target.cores_per_chip
            check_placement(graph, placement, target, 10**6)
        return
    event("fits on several cores" if placement.cores_used > 1 else "fits on one core")
    check_placement(graph, placement, target, chips)


@settings(max_examples=60, deadline=None)
@given(fixed_graphs(), st.data())
def test_coverage_and_connections_match_brute_force(graph, data):
    for syn in graph.find((FixedDense, FixedConv2d)):
        conn = brute_connectivity(graph, syn)
        assert connections(graph, syn) == int(conn.sum())
        n = conn.shape[0]
        a = data.draw(st.integers(0, n - 1))
        b = data.draw(st.integers(a + 1, n))
        assert np.array_equal(coverage(graph, syn, a, b), conn[a:b].any(axis=0))


# -- behaviour on known cases ---------------------------------------------------------------------


def test_large_layer_splits_into_contiguous_slices():
    graph = mlp([25, 12], seed=1)
    target = limits(neurons=10)
    placement = Partition(target=target)(graph)
    by_layer = placement.by_layer()
    assert [(s.start, s.stop) for s in by_layer["n0"]] == [(0, 10), (10, 20), (20, 25)]
    assert [(s.start, s.stop) for s in by_layer["n1"]] == [(0, 10), (10, 12)]
    # n1's 2 slices mean every n0 neuron sends 2 output axons; n1 reads all 25 n0 neurons per slice
    assert [s.usage.fan_out for s in by_layer["n0"]] == [20, 20, 10]
    assert [s.usage.fan_in for s in by_layer["n1"]] == [25, 25]
    # first fit: the remainders share cores with earlier slices where they fit
    assert placement.cores_used == 4 == placement.lower_bound  # ceil(37 / 10)
    check_placement(graph, placement, target, 1)


def test_dense_synapse_memory_counts_nonzero_weights_and_axons():
    graph = mlp([8, 3], density=0.5, seed=2)
    target = limits(weight_bytes=1, axon_bytes=8)
    (s,) = Partition(target=target)(graph).by_layer()["n1"]
    w = graph.op("w1").weight
    fan_in = int((w != 0).any(axis=0).sum())
    assert s.usage == Usage(3, int(np.count_nonzero(w)) + 8 * fan_in, fan_in, 0)


def test_conv_stores_each_kernel_once_and_cuts_at_channels():
    graph = one_conv(channels_in=2, channels_out=4, hw=4)  # 16 neurons per output channel
    kernel = [int(np.count_nonzero(graph.op("w1").weight[c])) for c in range(4)]
    # 40 neurons fit a core: cut at 32 (two whole channels) rather than at 40
    target = limits(neurons=40, axon_bytes=0)
    slices = Partition(target=target)(graph).by_layer()["n1"]
    assert [(s.start, s.stop, s.channels) for s in slices] == [(0, 32, (0, 2)), (32, 64, (2, 4))]
    assert [s.usage.synapse_bytes for s in slices] == [kernel[0] + kernel[1], kernel[2] + kernel[3]]
    # unsplit, the population stores 4 kernels: the lower bound's synaptic memory
    assert Partition(target=target)(graph).layer_totals["n1"].synapse_bytes == sum(kernel)


def test_conv_cuts_through_channels_when_that_needs_fewer_cores():
    graph = one_conv(channels_in=2, channels_out=4, hw=4)
    target = limits(neurons=24, axon_bytes=0)  # aligned: 4 slices of 16; anywhere: 24, 24, 16
    placement = Partition(target=target)(graph)
    slices = placement.by_layer()["n1"]
    assert [(s.start, s.stop) for s in slices] == [(0, 24), (24, 48), (48, 64)]
    # the channel cut at neuron 24 stores channel 1's kernel on two cores
    assert slices[0].channels == (0, 2) and slices[1].channels == (1, 3)
    check_placement(graph, placement, target, 1)


def test_too_few_chips_names_the_layers_and_the_shortfall():
    graph = mlp([30, 20, 5], seed=3)
    target = limits(neurons=4, cores_per_chip=4)
    with pytest.raises(ResourceError) as info:
        Partition(target=target, chips=1)(graph)
    message = str(info.value)
    assert "\n" not in message
    assert "needs 14 cores, 4 available on 1 Loihi 2 chip(s), 10 short (fits on 4 chips)" in message
    assert "n0 (8 cores)" in message and "n1 (5 cores)" in message and "n2 (2 cores)" in message
    placement = Partition(target=target, chips=4)(graph)
    assert placement.cores_used == 14 and placement.chips_used == 4
    check_placement(graph, placement, target, 4)


def test_a_neuron_larger_than_a_core_is_reported_with_its_layer():
    graph = mlp([50, 3], seed=4)
    with pytest.raises(ResourceError, match=r"n1 \(neuron 0 alone needs fan_in 50 > 40\)"):
        Partition(target=limits(fan_in=40), chips=100)(graph)


def test_placement_as_dict_is_complete():
    graph = mlp([25, 12], seed=1)
    d = Partition(target=limits(neurons=10))(graph).as_dict()
    assert d["cores_used"] == 4 and d["lower_bound"] == 4 and d["cores_over_lower_bound"] == 1.0
    assert [layer["name"] for layer in d["layers"]] == ["n0", "n1"]
    assert d["layers"][0]["core_range"] == "0-2" and d["layers"][1]["cores"] == 2
    assert set(d["utilization"]) == {"neurons", "synapse_bytes", "fan_in", "fan_out"}
    assert d["utilization"]["neurons"]["max"] == 1.0


@pytest.mark.parametrize("example", ["digits_cnn", "digits_mlp", "digits_resnet"])
def test_bundled_examples_within_a_quarter_of_the_lower_bound(example):
    result = inspect_model(ROOT / "examples" / f"{example}.pt2", Options(calib_samples=64, progress=False))
    placement = result.placement
    assert placement.cores_used <= 1.25 * placement.lower_bound
    check_placement(result.fixed_graph, placement, LOIHI2, 1)
