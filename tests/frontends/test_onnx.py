"""ONNX frontend: exported and hand-built models lower to IR graphs that compute what
onnxruntime computes, and every unsupported or unreadable model is refused with one error."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from snncompile.errors import ModelLoadError, UnsupportedModelError
from snncompile.frontends.onnx import from_onnx, load_model
from snncompile.frontends.onnx_rules import _window_count
from snncompile.sim.ann import forward
from tests.builders import randomize_batchnorm, small_cnn

RTOL = 1e-5


# -- helpers --------------------------------------------------------------------------------------


def export(model: nn.Module, x: torch.Tensor, path: Path, exporter: str, **kw) -> Path:
    """Export with the TorchScript exporter ("legacy-<opset>") or the dynamo exporter ("dynamo"
    at torch's default opset, "dynamo-<opset>", or "dynamo-raw" without its ONNX optimizer);
    the batch dim stays symbolic."""
    kind, _, option = exporter.partition("-")
    names = {"input_names": ["x"], "output_names": ["y"]}
    if option == "raw":
        kw["optimize"] = False
    elif option:
        kw["opset_version"] = int(option)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice, mainly
        if kind == "legacy":
            torch.onnx.export(model.eval(), (x,), path, dynamo=False,
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, **names, **kw)
        else:
            batch = torch.export.Dim("batch")
            torch.onnx.export(model.eval(), (x,), path, dynamo=True,
                              dynamic_shapes=({0: batch},), **names, **kw)
    return path


def run_onnxruntime(path_or_model, x: np.ndarray) -> np.ndarray:
    """The model's output from onnxruntime; a file keeps its external data next to it."""
    if isinstance(path_or_model, onnx.ModelProto):
        source = path_or_model.SerializeToString()
    else:
        source = str(path_or_model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return session.run(None, {name: np.asarray(x, dtype=np.float32)})[0]


def assert_matches_onnxruntime(graph, path_or_model, x) -> None:
    """float64 graph vs float32 onnxruntime: max abs difference ≤ 1e-5 · max abs value."""
    x = np.asarray(x, dtype=np.float32)
    want = run_onnxruntime(path_or_model, x).astype(np.float64)
    got = forward(graph, x).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= RTOL * np.abs(want).max()


def kinds(graph) -> list[str]:
    return [kind for _name, kind, _inputs in graph.structure()]


def onnx_ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]


def tensor(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def make_model(nodes, input_shape, output_shape, initializers=(), opset=13) -> onnx.ModelProto:
    """A checked single-input model; batch dim symbolic."""
    graph = helper.make_graph(
        nodes, "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *output_shape])],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # readable by every onnxruntime this project supports
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


# -- models -------------------------------------------------------------------------------------


class ResBlockNet(nn.Module):
    """Stem, a residual block ``relu(bn(conv(relu(bn(conv(x))))) + x)``, global pooling, Linear."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        out = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + x)
        return self.fc(torch.flatten(self.pool(out), 1))


def mlp_bn() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10),
    )


MODELS = {
    # name: (factory, input shape, IR kinds once BatchNorm is left out: exporters may fold it)
    "cnn": (small_cnn, (1, 8, 8),
            ["Input", "Conv2d", "ReLU", "Conv2d", "ReLU", "AvgPool2d", "Flatten", "Dense",
             "Output"]),
    "resblock": (ResBlockNet, (1, 8, 8),
                 ["Input", "Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d", "Add", "ReLU", "AvgPool2d",
                  "Flatten", "Dense", "Output"]),
    "mlp": (mlp_bn, (64,), ["Input", "Dense", "ReLU", "Dense", "ReLU", "Dense", "Output"]),
}


# -- exported models: numbers, structure, opsets --------------------------------------------------


EXPORTS = [(name, exporter) for name in sorted(MODELS)
           for exporter in ("legacy-13", "legacy-17", "dynamo")]
EXPORTS += [("resblock", "dynamo-raw")]  # BatchNorm unfolded, Shape and CastLike chains


@pytest.mark.parametrize(("name", "exporter"), EXPORTS)
def test_exported_model_computes_like_onnxruntime(tmp_path, name, exporter):
    factory, shape, want_kinds = MODELS[name]
    torch.manual_seed(0)
    model = randomize_batchnorm(factory())
    x = torch.randn(16, *shape)
    path = export(model, x[:2], tmp_path / f"{name}.onnx", exporter)

    graph = load_model(path)

    assert [k for k in kinds(graph) if k != "BatchNorm"] == want_kinds
    assert graph.metadata == {"source": f"{name}.onnx", "frontend": "onnx"}
    header = onnx.load(str(path), load_external_data=False)
    opset = {o.domain: o.version for o in header.opset_import}[""]
    requested = exporter.rpartition("-")[2]
    if requested.isdigit():
        assert opset == int(requested)
    else:
        assert opset >= 18  # torch 2.13's dynamo exporter defaults to opset 20
    assert_matches_onnxruntime(graph, path, x)


def test_unfolded_batchnorm_and_names_from_the_legacy_exporter(tmp_path):
    model = randomize_batchnorm(small_cnn())
    x = torch.randn(8, 1, 8, 8)
    path = export(model, x[:2], tmp_path / "cnn.onnx", "legacy-13", do_constant_folding=False)
    assert "BatchNormalization" in onnx_ops(path)

    graph = load_model(path)

    assert graph.structure() == [
        ("input", "Input", ()),
        ("0_Conv", "Conv2d", ("input",)),
        ("1_BatchNormalization", "BatchNorm", ("0_Conv",)),
        ("2_Relu", "ReLU", ("1_BatchNormalization",)),
        ("3_Conv", "Conv2d", ("2_Relu",)),
        ("4_BatchNormalization", "BatchNorm", ("3_Conv",)),
        ("5_Relu", "ReLU", ("4_BatchNormalization",)),
        ("6_AveragePool", "AvgPool2d", ("5_Relu",)),
        ("7_Flatten", "Flatten", ("6_AveragePool",)),
        ("8_Gemm", "Dense", ("7_Flatten",)),
        ("output", "Output", ("8_Gemm",)),
    ]
    assert graph.op("3_Conv").stride == (2, 2) and graph.op("3_Conv").padding == (1, 1)
    assert graph.op("1_BatchNormalization").eps == pytest.approx(1e-5)
    assert_matches_onnxruntime(graph, path, x)


class Viewed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(y.size(0), -1)) + 1.0


def test_view_by_the_run_time_batch_size_is_a_flatten(tmp_path):
    """The legacy exporter writes x.view(x.size(0), -1) as Shape, Gather, Unsqueeze, Concat."""
    x = torch.randn(4, 1, 8, 8)
    path = export(Viewed(), x[:2], tmp_path / "viewed.onnx", "legacy-13")
    assert {"Shape", "Gather", "Concat", "Reshape"} <= set(onnx_ops(path))

    graph = load_model(path)

    assert kinds(graph) == ["Input", "Conv2d", "Flatten", "Dense", "Output"]
    assert_matches_onnxruntime(graph, path, x)


def test_a_fixed_batch_size_is_accepted(tmp_path):
    x = torch.randn(2, 1, 8, 8)
    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Viewed().eval(), (x,), path, dynamo=False, opset_version=13)

    graph = load_model(path)

    assert graph.shape("input") == (1, 8, 8)
    assert kinds(graph) == ["Input", "Conv2d", "Flatten", "Dense", "Output"]
    assert_matches_onnxruntime(graph, path, x)


# -- unsupported models --------------------------------------------------------------------------


def test_every_unsupported_node_is_listed_in_one_error(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Sigmoid(), nn.Flatten(),
                          nn.Linear(144, 2))
    path = export(model, torch.randn(2, 1, 8, 8), tmp_path / "maxpool.onnx", "legacy-13")

    with pytest.raises(UnsupportedModelError) as info:
        load_model(path)

    problems = {p.node: p for p in info.value.problems}
    assert set(problems) == {"/1/Tanh", "/2/Sigmoid"}
    assert problems["/1/Tanh"].op == "Tanh" and "Relu" in problems["/1/Tanh"].hint
    assert "Relu" in problems["/2/Sigmoid"].hint
    assert info.value.source == "maxpool.onnx"
    assert "\n" not in str(info.value)


def test_unsupported_configurations_are_listed_together():
    rng = np.random.default_rng(0)
    w = tensor("w", rng.normal(size=(4, 1, 3, 3)))
    fc = tensor("fc", rng.normal(size=(9, 3)))  # Flatten(axis=2) gives (4N, 9)
    nodes = [
        # 5x5 out, where symmetric (0, 0) pads give 4x4
        helper.make_node("Conv", ["x", "w"], ["c"], name="asym", pads=[0, 0, 1, 1]),
        helper.make_node("AveragePool", ["c"], ["p"], name="nocount", kernel_shape=[2, 2],
                         strides=[2, 2], pads=[1, 1, 1, 1]),  # count_include_pad=0 by default
        helper.make_node("Relu", ["p"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "half"], ["a"], name="addconst"),
        helper.make_node("Flatten", ["a"], ["f"], name="flat", axis=2),
        helper.make_node("Gemm", ["f", "fc"], ["y"], name="gemm"),
    ]
    model = make_model(nodes, (1, 6, 6), (3,), [w, fc, tensor("half", 0.5)])

    with pytest.raises(UnsupportedModelError) as info:
        from_onnx(model, source="hand.onnx")

    hints = {p.node: p.hint for p in info.value.problems}
    assert set(hints) == {"asym", "nocount", "addconst", "flat"}
    assert "asymmetric pads" in hints["asym"]
    assert "count_include_pad" in hints["nocount"]
    assert "bias" in hints["addconst"]
    assert "axis=1" in hints["flat"]


def test_graph_level_problems():
    two_inputs = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    with pytest.raises(UnsupportedModelError, match="2 inputs"):
        from_onnx(helper.make_model(two_inputs, opset_imports=[helper.make_opsetid("", 13)]))

    old = make_model([helper.make_node("Relu", ["x"], ["y"])], (3,), (3,), opset=11)
    with pytest.raises(UnsupportedModelError, match="opset 11; re-export with opset_version>=13"):
        from_onnx(old)


def test_a_reshape_that_moves_samples_across_the_batch_is_refused():
    shape = numpy_helper.from_array(np.array([-1, 3], dtype=np.int64), "shape")
    model = make_model([helper.make_node("Reshape", ["x", "shape"], ["y"], name="mix")], (6,), (3,),
                       [shape])
    with pytest.raises(UnsupportedModelError, match=r"mix \(Reshape\): the reshape does not keep"):
        from_onnx(model)


# -- hand-built models: Gemm, MatMul + Add, constant folding, opset differences ------------------


@pytest.mark.parametrize("opset", [13, 18])
def test_matmul_add_fuses_into_one_dense_and_gemm_options(opset):
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Transpose", ["w1t"], ["w1"], perm=[1, 0]),  # folded ahead of time
        helper.make_node("MatMul", ["x", "w1"], ["m"], name="fc1/MatMul"),
        helper.make_node("Add", ["b1", "m"], ["h"], name="fc1/Add"),
        helper.make_node("Relu", ["h"], ["r"], name="fc1/Relu"),
        helper.make_node("Dropout", ["r"], ["d"], name="drop"),
        helper.make_node("Gemm", ["d", "w2", "c2"], ["g"], name="fc2", alpha=0.5, beta=2.0),
        helper.make_node("Sub", ["g", "shift"], ["y"], name="fc2/Sub"),
    ]
    inits = [tensor("w1t", rng.normal(size=(5, 6))), tensor("b1", rng.normal(size=5)),
             tensor("w2", rng.normal(size=(5, 3))), tensor("c2", rng.normal(size=(1, 3))),
             tensor("shift", rng.normal(size=3))]
    model = make_model(nodes, (6,), (3,), inits, opset=opset)

    graph = from_onnx(model)

    assert graph.structure() == [
        ("input", "Input", ()),
        ("fc1_MatMul", "Dense", ("input",)),
        ("fc1_Relu", "ReLU", ("fc1_MatMul",)),
        ("fc2", "Dense", ("fc1_Relu",)),
        ("output", "Output", ("fc2",)),
    ]
    assert graph.op("fc1_MatMul").bias is not None
    assert_matches_onnxruntime(graph, model, rng.normal(size=(8, 6)))


@pytest.mark.parametrize("opset", [13, 18])
def test_reduce_mean_axes_as_attribute_or_input_and_conv_bias_folding(opset):
    rng = np.random.default_rng(2)
    axes = [-1, -2]
    mean = (helper.make_node("ReduceMean", ["r"], ["p"], axes=axes, keepdims=0) if opset < 18
            else helper.make_node("ReduceMean", ["r", "axes"], ["p"], keepdims=0))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Constant", [], ["cb"], value=tensor("v", rng.normal(size=(1, 4, 1, 1)))),
        helper.make_node("Add", ["c", "cb"], ["cc"]),
        helper.make_node("BatchNormalization", ["cc", "g", "b", "mu", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["r"]),
        mean,
        helper.make_node("Gemm", ["p", "fc"], ["y"], transB=1),
    ]
    inits = [tensor("w", rng.normal(size=(4, 2, 3, 3))), tensor("g", rng.uniform(0.5, 1.5, 4)),
             tensor("b", rng.normal(size=4)), tensor("mu", rng.normal(size=4)),
             tensor("var", rng.uniform(0.5, 1.5, 4)), tensor("fc", rng.normal(size=(3, 4))),
             numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes")]
    model = make_model(nodes, (2, 7, 7), (3,), inits, opset=opset)

    graph = from_onnx(model)

    assert graph.structure() == [
        ("input", "Input", ()),
        ("Conv_0", "Conv2d", ("input",)),
        ("BatchNormalization_3", "BatchNorm", ("Conv_0",)),
        ("Relu_4", "ReLU", ("BatchNormalization_3",)),
        ("ReduceMean_5", "AvgPool2d", ("Relu_4",)),
        ("ReduceMean_5_flatten", "Flatten", ("ReduceMean_5",)),
        ("Gemm_6", "Dense", ("ReduceMean_5_flatten",)),
        ("output", "Output", ("Gemm_6",)),
    ]
    assert graph.op("Conv_0").bias is not None
    assert graph.op("ReduceMean_5").kernel == (4, 4)
    assert_matches_onnxruntime(graph, model, rng.normal(size=(5, 2, 7, 7)))


# -- property: Conv and AveragePool lower exactly, or are refused only when they must be -----------


@st.composite
def window_configs(draw):
    size = draw(st.integers(4, 9))
    kernel = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 2]))
    begin = draw(st.integers(0, kernel - 1))
    end = draw(st.integers(0, kernel - 1))
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]))
    if auto_pad.startswith("SAME") and (dilation > 1 or kernel < stride):
        # onnxruntime 1.x, the oracle, refuses dilated SAME convs and computes negative SAME
        # pads for pools when kernel < stride (the ONNX spec clamps them to 0)
        auto_pad = "NOTSET"
    pool = draw(st.booleans())
    return dict(size=size, kernel=kernel, stride=stride, dilation=dilation, groups=groups,
                begin=begin, end=end, auto_pad=auto_pad, pool=pool)


def window_model(c):
    attrs = dict(kernel_shape=[c["kernel"]] * 2, strides=[c["stride"]] * 2, auto_pad=c["auto_pad"])
    if c["auto_pad"] == "NOTSET":
        attrs["pads"] = [c["begin"], c["begin"], c["end"], c["end"]]
    rng = np.random.default_rng(0)
    if c["pool"]:
        node = helper.make_node("AveragePool", ["x"], ["y"], name="op", count_include_pad=1,
                                **attrs)
        inits = []
    else:
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="op", group=c["groups"],
                                dilations=[c["dilation"]] * 2, **attrs)
        inits = [tensor("w", rng.normal(size=(4, 2 // c["groups"], c["kernel"], c["kernel"]))),
                 tensor("b", rng.normal(size=4))]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, c["size"], c["size"]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "window", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def effective_pads(c, dilation) -> tuple[int, int]:
    """(begin, end) pads of one spatial axis under the config's auto_pad (the ONNX spec's rule)."""
    if c["auto_pad"] == "VALID":
        return 0, 0
    if c["auto_pad"] == "NOTSET":
        return c["begin"], c["end"]
    out = -(-c["size"] // c["stride"])
    total = max(0, (out - 1) * c["stride"] + dilation * (c["kernel"] - 1) + 1 - c["size"])
    small, large = total // 2, total - total // 2
    return (small, large) if c["auto_pad"] == "SAME_UPPER" else (large, small)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window_configs())
def test_windows_lower_exactly_or_are_refused_only_for_uneven_padding(c):
    model = window_model(c)
    dilation = 1 if c["pool"] else c["dilation"]
    begin, end = effective_pads(c, dilation)
    if c["size"] + begin + end < dilation * (c["kernel"] - 1) + 1:
        return  # an empty output: not a model
    x = np.random.default_rng(1).normal(size=(3, 2, c["size"], c["size"]))
    try:
        graph = from_onnx(model)
    except UnsupportedModelError as exc:
        (problem,) = exc.problems
        if c["pool"] and "exceed half the kernel" in problem.hint:
            assert begin > c["kernel"] // 2
            return
        assert "asymmetric pads" in problem.hint
        # refused only where (begin, begin) padding would give another number of windows
        axis = (c["kernel"], c["stride"], dilation)
        uneven = _window_count(c["size"], begin, end, *axis)
        assert uneven != _window_count(c["size"], begin, begin, *axis)
        return
    assert_matches_onnxruntime(graph, model, x)


# -- files: loading, external data, broken files --------------------------------------------------


def test_missing_corrupt_and_invalid_files_are_one_line_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "absent.onnx")

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07\x12\xff\xff\xff garbage")
    with pytest.raises(ModelLoadError) as info:
        load_model(corrupt)
    assert str(corrupt) in str(info.value) and "\n" not in str(info.value)

    invalid = make_model([helper.make_node("Relu", ["x"], ["y"])], (3,), (3,))
    invalid.graph.node[0].op_type = "NoSuchOp"  # the checker knows no such op
    path = save(invalid, tmp_path / "invalid.onnx")
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "onnx.checker" in message and "NoSuchOp" in message
    assert "\n" not in message


def test_external_data_is_read_only_from_the_model_folder(tmp_path):
    rng = np.random.default_rng(3)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], (64,), (32,),
                       [tensor("w", rng.normal(size=(64, 32)))])
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="m.data", size_threshold=0)

    graph = load_model(path)  # data next to the model: fine
    assert_matches_onnxruntime(graph, path, rng.normal(size=(4, 64)))

    outside = onnx.load(str(path), load_external_data=False)
    (entry,) = [e for e in outside.graph.initializer[0].external_data if e.key == "location"]
    (tmp_path / "m.data").write_bytes((folder / "m.data").read_bytes())
    entry.value = "../m.data"
    save(outside, folder / "escape.onnx")
    with pytest.raises(ModelLoadError, match="outside the model's folder") as info:
        load_model(folder / "escape.onnx")
    assert "\n" not in str(info.value)

    (folder / "m.data").unlink()
    (folder / "m.data").symlink_to(tmp_path / "m.data")  # a link out of the folder is no better
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_model(path)

    with pytest.raises(ModelLoadError, match="external data"):
        from_onnx(onnx.load(str(path), load_external_data=False))
