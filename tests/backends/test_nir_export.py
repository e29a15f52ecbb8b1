"""NIR export: the file reads back with nir.read, with the node kinds and parameters we wrote."""

import nir
import numpy as np
import pytest

from snncompile.backends import nir as nir_backend
from snncompile.errors import UnsupportedModelError
from snncompile.passes import pipeline
from tests.builders import make_cnn


@pytest.fixture(scope="module")
def snn(digits_image):
    return pipeline.run(make_cnn(seed=8), pipeline.convert(digits_image.train.x[:64]))


def test_nir_file_reads_back_with_expected_kinds(snn, tmp_path):
    path = nir_backend.write(snn, tmp_path / "model.nir", flavor="snncompile")
    graph = nir.read(path)
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    assert kinds == {
        "input": "Input", "conv1": "Conv2d", "relu1": "IF", "conv2": "Conv2d", "relu2": "IF",
        "fc_flatten": "Flatten", "fc": "Affine", "fc_readout": "I", "output": "Output",
    }
    assert sorted(graph.edges) == sorted([
        ("input", "conv1"), ("conv1", "relu1"), ("relu1", "conv2"), ("conv2", "relu2"),
        ("relu2", "fc_flatten"), ("fc_flatten", "fc"), ("fc", "fc_readout"), ("fc_readout", "output"),
    ])
    assert np.allclose(graph.nodes["conv2"].weight, snn.op("conv2").weight)
    assert np.allclose(graph.nodes["relu2"].v_threshold, snn.op("relu2").threshold)
    assert [int(s) for s in np.atleast_1d(graph.nodes["conv2"].stride)] == [2, 2]
    assert graph.metadata["dt"] == 1.0 and graph.metadata["reset"] == "subtract"
    assert graph.nodes["relu1"].metadata["reset"] == "subtract"


def test_fixed_point_graph_is_refused_and_nothing_written(snn, digits_image, tmp_path):
    from snncompile.passes.quantize import Quantize

    fixed = pipeline.run(snn, (Quantize(data=digits_image.train.x[:64], steps=16),))
    with pytest.raises(UnsupportedModelError, match="LoihiNeuron"):
        nir_backend.write(fixed, tmp_path / "model.nir")
    assert list(tmp_path.iterdir()) == []
