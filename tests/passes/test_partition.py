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
    neuron (dense from a vector) or source pixel (conv, or dense from an image) and kernels counted once per core, output axons per
    (neuron, destination core) for dense and per (pixel, destination core) for conv (the neurons of
    one pixel share their population axon entries)."""
    synapses = graph.find((FixedDense, FixedConv2d))
    conn = {s: brute_connectivity(graph, s) for s in synapses}
    is_conv = {s: isinstance(graph.op(s), FixedConv2d) for s in synapses}
    core_of = {}  # (population, neuron) -> core
    for s in placement.slices:
        for j in s.indices():
            core_of[s.layer, int(j)] = s.core

    def pixel(population, j):
        shape = graph.shape(population)
        return j % int(np.prod(shape[1:])) if len(shape) == 3 else j

    def per_pixel(population):  # a dense synapse from an image population uses population axons too
        shape = graph.shape(population)
        return len(shape) == 3 and shape[1] * shape[2] > 1

    usage = []
    for core in range(placement.cores_used):
        here = [s for s in placement.slices if s.core == core]
        neurons = sum(len(s.indices()) for s in here)
        axons_in, stored, kernels = set(), 0, set()
        for s in here:
            for syn in synapses:
                if graph.users(syn)[0] != s.layer:
                    continue
                src = spike_source(graph, syn)
                rows = s.indices()
                for j in np.nonzero(conn[syn][rows].any(axis=0))[0]:
                    axons_in.add((src, is_conv[syn], pixel(src, j) if is_conv[syn] or per_pixel(src) else j))
                op = graph.op(syn)
                if is_conv[syn]:
                    kernels |= {(syn, c) for c in range(s.box.c0, s.box.c1)}
                else:
                    stored += int(np.count_nonzero(op.weight[rows]))
        stored += sum(int(np.count_nonzero(graph.op(syn).weight[c])) for syn, c in kernels)
        axons_out = set()
        for s in here:
            for syn in synapses:
                if spike_source(graph, syn) != s.layer:
                    continue
                consumer = graph.users(syn)[0]
                for j in s.indices():
                    for t in np.nonzero(conn[syn][:, j])[0]:
                        sender = ("pixel", pixel(s.layer, j)) if is_conv[syn] else ("neuron", j)
                        axons_out.add((s.layer, sender, core_of[consumer, t]))
        fan_in = len(axons_in)
        usage.append(Usage(neurons, stored * target.weight_bytes + fan_in * target.axon_bytes, fan_in,
                           len(axons_out)))
    return usage


def check_placement(graph, placement, target, chips):
    cap = capacity(target)
    # every neuron of every population exactly once, in boxes (channels x rows x columns)
    for name in graph.find(LoihiNeuron):
        placed = np.concatenate([s.indices() for s in placement.slices if s.layer == name])
        assert np.array_equal(np.sort(placed), np.arange(int(np.prod(graph.shape(name)))))
        assert all(s.neurons == s.usage.neurons > 0 for s in placement.slices if s.layer == name)
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


def test_conv_box_stores_the_kernels_of_its_channels_once():
    graph = one_conv(channels_in=2, channels_out=4, hw=4)  # 16 neurons per output channel
    kernel = [int(np.count_nonzero(graph.op("w1").weight[c])) for c in range(4)]
    target = limits(neurons=40, axon_bytes=0)
    placement = Partition(target=target)(graph)
    slices = placement.by_layer()["n1"]
    assert len(slices) == 2 and placement.cores_used == 3 == placement.lower_bound  # ceil((32 + 64) / 40)
    # a box stores the kernel of every channel it holds once, however many of its pixels it holds
    for s in slices:
        assert s.usage.synapse_bytes == sum(kernel[c] for c in range(*s.channels))
    # unsplit, the population stores 4 kernels: the lower bound's synaptic memory
    assert placement.layer_totals["n1"].synapse_bytes == sum(kernel)
    check_placement(graph, placement, target, 1)


def test_conv_channel_groups_when_kernels_dominate():
    """Kernels large against the memory limit: cut into channel groups over the whole image
    (each kernel stored once), not into spatial bands (every band would store every kernel)."""
    graph = one_conv(channels_in=2, channels_out=4, hw=4)
    kernel = [int(np.count_nonzero(graph.op("w1").weight[c])) for c in range(4)]
    target = limits(synapse_bytes=kernel[0] + kernel[1] + 2, axon_bytes=0)
    placement = Partition(target=target)(graph)
    slices = placement.by_layer()["n1"]
    assert [(s.channels, s.box.y0, s.box.y1) for s in slices] == [((0, 2), 0, 4), ((2, 4), 0, 4)]
    assert [(s.start, s.stop) for s in slices] == [(0, 32), (32, 64)]
    check_placement(graph, placement, target, 1)


def test_conv_cuts_boxes_that_pack_to_the_lower_bound():
    """Changed on purpose: the old pass cut C-order ranges through channels (24, 24, 16); boxes
    (channels x rows) whose remainders share cores reach the lower bound just as well."""
    graph = one_conv(channels_in=2, channels_out=4, hw=4)
    target = limits(neurons=24, axon_bytes=0)
    placement = Partition(target=target)(graph)
    assert placement.cores_used == 4 == placement.lower_bound  # ceil((32 + 64) / 24)
    check_placement(graph, placement, target, 1)


def test_conv_output_axons_are_per_source_pixel_and_core():
    """The neurons of one pixel share their population axon (nengo-loihi's pop16/pop32 axons):
    2 channels x 16 pixels send 16 output axons to a conv on one core, 32 to a dense layer."""
    graph = one_conv(channels_in=2, channels_out=4, hw=4)
    (s,) = Partition()(graph).by_layer()["n0"]
    assert s.usage.fan_out == 16
    rng = np.random.default_rng(0)
    b = start((2, 4, 4))
    b.add("w1", dense(weights(rng, (3, 32), 1.0)), ["n0"])
    b.add("n1", neuron((3,)), ["w1"])
    (s,) = Partition()(finish(b, "n1")).by_layer()["n0"]
    assert s.usage.fan_out == 32


def resnet_like(seed=0):
    """Two 3x3 convs and a 1x1 shortcut (membrane-add) on 4x8x8, a stride-2 conv, a readout."""
    rng = np.random.default_rng(seed)
    b = start((4, 8, 8))
    b.add("w1", conv(weights(rng, (4, 4, 3, 3), 0.8), padding=1), ["n0"])
    b.add("n1", neuron((4, 8, 8)), ["w1"])
    b.add("w2", conv(weights(rng, (4, 4, 3, 3), 0.8), padding=1), ["n1"])
    b.add("skip", conv(weights(rng, (4, 4, 1, 1), 1.0)), ["n0"])
    b.add("n2", neuron((4, 8, 8)), ["w2", "skip"])
    b.add("w3", conv(weights(rng, (8, 4, 3, 3), 0.8), stride=2, padding=1), ["n2"])
    b.add("n3", neuron((8, 4, 4)), ["w3"])
    b.add("w4", dense(weights(rng, (5, 128), 0.8)), ["n3"])
    b.add("n4", neuron((5,)), ["w4"])
    return finish(b, "n4")


@pytest.mark.parametrize("resource, value", [("neurons", 40), ("synapse_bytes", 1200), ("fan_in", 110),
                                              ("fan_out", 60)])
def test_each_per_core_limit_holds_where_it_binds(resource, value):
    graph = resnet_like()
    target = limits(**{resource: value})
    placement = Partition(target=target, chips=1000)(graph)
    assert placement.cores_used > 1
    assert max(getattr(c, resource) for c in placement.cores) <= value
    check_placement(graph, placement, target, 1000)  # every limit, and real usage <= modelled


def test_lower_bound_takes_the_scarcest_resource():
    graph = mlp([30, 30], seed=5)  # 30 senders, each needs an output axon
    placement = Partition(target=limits(fan_out=10, neurons=1000), chips=10)(graph)
    assert placement.lower_bound_terms()["fan_out"] == 3 == placement.lower_bound
    assert placement.cores_used >= placement.lower_bound


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


# -- the zoo at real size --------------------------------------------------------------------------


def zoo_fixed_graph(model, size):
    """A zoo model through the compiler's own stages (load, convert, quantize) on random data."""
    import torch

    from snncompile import api
    from snncompile.frontends.torch import from_module
    from snncompile.passes import pipeline

    rng = np.random.default_rng(0)
    calib = rng.random((2, 3, size, size)).astype("float32")
    graph = from_module(model, torch.zeros(1, 3, size, size))
    options = Options(maxpool="avg", calib_samples=2, progress=False, chips=1024)
    snn = api.to_snn(api.prepare(graph, options), calib, options)
    return pipeline.run(snn, (pipeline.Quantize(data=calib, steps=32),))


def check_cores(graph, placement, cap):
    for name in graph.find(LoihiNeuron):
        assert sum(s.neurons for s in placement.slices if s.layer == name) == int(np.prod(graph.shape(name)))
    assert all(c.fits(cap) for c in placement.cores)


@pytest.mark.parametrize("name", ["ResNet20", "VGG16"])
def test_zoo_at_32x32_within_a_quarter_of_the_lower_bound(name):
    """Was 509 cores against a lower bound of 25 for ResNet-20 (an axon per target pixel)."""
    from tests.zoo import models

    graph = zoo_fixed_graph(models.randomize_batchnorm(getattr(models, name)().eval()), 32)
    placement = Partition(target=LOIHI2, chips=1024)(graph)
    assert placement.cores_used <= 1.25 * placement.lower_bound, placement.lower_bound_terms()
    check_cores(graph, placement, capacity(LOIHI2))
