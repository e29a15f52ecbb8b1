"""The bundled directly trained spiking ResNets (examples/train_spiking_resnet.py): Loihi 2 fixed
point (reference simulator) stays within 1 pp of the float SNN on the digits test split."""

from pathlib import Path

import numpy as np
import pytest

from snncompile.api import load_model
from snncompile.backends import reference
from snncompile.passes import pipeline
from snncompile.passes.quantize import Quantize
from snncompile.sim import snn as float_snn

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STEPS = 8  # the trained T


@pytest.mark.parametrize("name", ["membrane_add_lif", "membrane_add_if", "sew_add_lif", "sew_iand_lif",
                                  "dense_add_lif"])
def test_fixed_point_accuracy_within_one_point_of_the_float_snn(digits_image, name):
    path = EXAMPLES / f"spiking_resnet_{name}.pt2"
    snn_graph = pipeline.run(load_model(path), pipeline.spiking())
    x, y = digits_image.test.x, digits_image.test.y
    (float_out,) = float_snn.simulate(snn_graph, x, STEPS, delay=1).outputs.values()
    fixed = pipeline.run(snn_graph, (Quantize(data=digits_image.train.x[:256], steps=STEPS),))
    fixed_out, stats = reference.predict(fixed, x, STEPS, device="cpu", progress=False)
    float_acc = np.mean(float_out.argmax(1) == y)
    fixed_acc = np.mean(fixed_out.argmax(1) == y)
    assert float_acc > 0.9
    assert abs(fixed_acc - float_acc) <= 0.01, (float_acc, fixed_acc)
    assert sum(s.saturations for s in stats.values()) == 0
