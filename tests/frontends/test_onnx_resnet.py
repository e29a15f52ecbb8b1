"""The bundled ResNet through ONNX (both torch exporters) compiles to the same fixed-point network
and accuracy as the same model straight from torch."""

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch

from snncompile.api import load_model
from snncompile.backends import reference
from snncompile.passes import pipeline

ROOT = Path(__file__).resolve().parents[2]
STEPS = 32


def bundled_resnet() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("train_digits_cnn", ROOT / "examples" / "train_digits_cnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.ResNet()
    model.load_state_dict(torch.export.load(ROOT / "examples" / "digits_resnet.pt2").state_dict)
    return model.eval()


def fixed_point_accuracy(path, digits_image):
    graph = pipeline.run(load_model(path), pipeline.loihi2(digits_image.train.x[:256], STEPS))
    logits, _ = reference.predict(graph, digits_image.test.x, STEPS, device="cpu", progress=False)
    vth = [q["vth"] for q in graph.metadata["quantization"].values()]
    return float(np.mean(logits.argmax(1) == digits_image.test.y)), vth


def test_resnet_via_both_onnx_exporters_matches_torch(digits_image, tmp_path):
    model = bundled_resnet()
    x = torch.tensor(digits_image.test.x[:2])
    legacy, dynamo = tmp_path / "legacy.onnx", tmp_path / "dynamo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), legacy, dynamo=False, opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
        torch.onnx.export(model, (x,), dynamo, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    expected = fixed_point_accuracy(ROOT / "examples" / "digits_resnet.pt2", digits_image)
    assert expected[0] > 0.9
    for path in (legacy, dynamo):
        assert fixed_point_accuracy(path, digits_image) == expected, path.name
