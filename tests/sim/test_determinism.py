"""The exact simulator gives the same integers for batch sizes 1, 7 and 64, and on CPU and CUDA."""

import numpy as np
import pytest
import torch

from snncompile.passes import pipeline
from snncompile.sim import fixed
from snncompile.sim.ann import encode_inputs
from tests.builders import make_cnn, make_mlp

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 24
SAMPLES = 64


@pytest.fixture(scope="module")
def cnn(digits_image):
    graph = pipeline.run(make_cnn(seed=11), pipeline.loihi2(digits_image.train.x[:128], steps=STEPS))
    return graph, digits_image.test.x[:SAMPLES]


@pytest.fixture(scope="module")
def mlp(digits_flat):
    graph = pipeline.run(make_mlp(seed=12), pipeline.loihi2(digits_flat.train.x[:128], steps=STEPS))
    return graph, digits_flat.test.x[:SAMPLES]


def in_batches(graph, x, size, record, device="cpu"):
    """One FixedResult's worth of arrays and summed stats, simulated ``size`` samples at a time."""
    parts = [
        fixed.simulate(graph, x[i:i + size], STEPS, device=device, record=record)
        for i in range(0, len(x), size)
    ]
    joined = {
        "outputs": {k: np.concatenate([p.trace.outputs[k] for p in parts]) for k in parts[0].trace.outputs},
        "spikes": {k: np.concatenate([p.trace.spikes[k] for p in parts]) for k in parts[0].trace.spikes},
        "v": {k: np.concatenate([p.trace.v[k] for p in parts]) for k in parts[0].trace.v},
    }
    stats = {}
    for p in parts:
        for layer, s in p.stats.items():
            total = stats.setdefault(layer, dict.fromkeys(s.as_dict(), 0))
            for key, value in s.as_dict().items():
                total[key] += value
    return joined, stats


def assert_same(a, b):
    (arrays_a, stats_a), (arrays_b, stats_b) = a, b
    for what in ("outputs", "spikes", "v"):
        assert arrays_a[what].keys() == arrays_b[what].keys()
        for layer, value in arrays_a[what].items():
            assert value.dtype == arrays_b[what][layer].dtype
            assert np.array_equal(value, arrays_b[what][layer]), (what, layer)
    assert stats_a == stats_b


@pytest.mark.parametrize("net", ["cnn", "mlp"])
@pytest.mark.parametrize("record", [True, False])
def test_batch_sizes_1_7_64_give_identical_results(net, record, request):
    graph, x = request.getfixturevalue(net)
    whole = in_batches(graph, x, 64, record)
    assert sum(s["spikes"] for s in whole[1].values()) > 0
    for size in (1, 7):
        assert_same(in_batches(graph, x, size, record), whole)


def test_recording_does_not_change_outputs_or_stats(cnn):
    graph, x = cnn
    recorded = fixed.simulate(graph, x, STEPS, device="cpu", record=True)
    bare = fixed.simulate(graph, x, STEPS, device="cpu", record=False)
    assert bare.trace.spikes == {} and bare.trace.v == {}
    for out, value in recorded.trace.outputs.items():
        assert np.array_equal(value, bare.trace.outputs[out])
    assert {k: s.as_dict() for k, s in recorded.stats.items()} == {k: s.as_dict() for k, s in bare.stats.items()}


def test_the_cuda_code_path_run_on_the_cpu_gives_the_same_integers(cnn, monkeypatch):
    """Without a GPU here: the path that never reads the device before the end, always counts,
    rounds synaptic sums and records time-major into host buffers, run on the CPU."""
    graph, x = cnn
    host = in_batches(graph, x[:16], 16, True)
    monkeypatch.setattr(fixed, "_on_host", lambda dev: False)
    for size in (1, 7, 16):
        assert_same(in_batches(graph, x[:16], size, True), host)


def test_given_encoding_equals_computed_encoding(mlp):
    graph, x = mlp
    a = fixed.simulate(graph, x, STEPS, device="cpu", encoded=encode_inputs(graph, x))
    b = fixed.simulate(graph, x, STEPS, device="cpu")
    for layer in a.trace.v:
        assert np.array_equal(a.trace.v[layer], b.trace.v[layer])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("net", ["cnn", "mlp"])
def test_cuda_equals_cpu_for_batch_sizes_1_7_64(net, request):
    graph, x = request.getfixturevalue(net)
    cpu = in_batches(graph, x, 64, True)
    for size in (1, 7, 64):
        assert_same(in_batches(graph, x, size, True, device="cuda"), cpu)
    assert_same(in_batches(graph, x, 64, False, device="cuda"), in_batches(graph, x, 64, False))
