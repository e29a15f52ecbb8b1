"""Torch frontend: exported models lower to IR graphs that compute what torch computes."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from snncompile.errors import ModelLoadError, SnnCompileError, UnsupportedModelError
from snncompile.frontends.pt2_archive import check_archive
from snncompile.frontends.torch import from_exported, from_module, load_model
from snncompile.sim.ann import forward
from tests.builders import randomize_batchnorm, small_cnn

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def assert_computes_like(graph, model: nn.Module, x: torch.Tensor) -> None:
    """float64 graph vs float32 torch: equal within 1e-5 relative to the output's scale."""
    with torch.no_grad():
        want = model.eval()(x).double()
    got = forward(graph, x)
    assert got.shape == want.shape
    scale = max(1.0, want.abs().max().item())
    assert (got - want).abs().max().item() <= 1e-5 * scale


def kinds(graph) -> list[str]:
    return [kind for _name, kind, _inputs in graph.structure()]


class Residual(nn.Module):
    """A functional forward: F.relu, a residual ``x + y``, torch.flatten."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = F.relu(y + self.conv2(y))
        y = F.avg_pool2d(y, 2)
        return self.fc(torch.flatten(y, 1))


# -- lowering: structure and numbers ---------------------------------------------------------


def test_sequential_cnn_lowers_to_the_same_function():
    model = randomize_batchnorm(small_cnn())
    x = torch.randn(16, 1, 8, 8)

    graph = from_module(model, x[:2])

    assert graph.structure() == [
        ("input", "Input", ()),
        ("conv2d_0", "Conv2d", ("input",)),
        ("batchnorm_1", "BatchNorm", ("conv2d_0",)),
        ("relu_2", "ReLU", ("batchnorm_1",)),
        ("conv2d_3", "Conv2d", ("relu_2",)),
        ("batchnorm_4", "BatchNorm", ("conv2d_3",)),
        ("relu_5", "ReLU", ("batchnorm_4",)),
        ("avgpool2d_6", "AvgPool2d", ("relu_5",)),
        ("flatten_7", "Flatten", ("avgpool2d_6",)),
        ("dense_8", "Dense", ("flatten_7",)),
        ("output", "Output", ("dense_8",)),
    ]
    assert graph.op("conv2d_3").stride == (2, 2)
    assert graph.op("conv2d_3").padding == (1, 1)
    assert graph.metadata == {"source": "Sequential", "frontend": "torch"}
    assert_computes_like(graph, model, x)


def test_functional_forward_with_residual_add():
    model = Residual().eval()
    x = torch.randn(8, 1, 8, 8)

    graph = from_module(model, x[:2])

    assert graph.structure() == [
        ("input", "Input", ()),
        ("conv1", "Conv2d", ("input",)),
        ("relu", "ReLU", ("conv1",)),
        ("conv2", "Conv2d", ("relu",)),
        ("add", "Add", ("relu", "conv2")),
        ("relu_1", "ReLU", ("add",)),
        ("avg_pool2d", "AvgPool2d", ("relu_1",)),
        ("flatten", "Flatten", ("avg_pool2d",)),
        ("fc", "Dense", ("flatten",)),
        ("output", "Output", ("fc",)),
    ]
    assert graph.metadata["source"] == "Residual"
    assert_computes_like(graph, model, x)


def test_mlp_with_batchnorm1d_and_dropout():
    model = nn.Sequential(
        nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10)
    )
    model = randomize_batchnorm(model)
    x = torch.rand(32, 64)

    graph = from_module(model, x[:2])

    assert kinds(graph) == ["Input", "Dense", "BatchNorm", "ReLU", "Dense", "Output"]
    assert graph.shape("input") == (64,)
    assert_computes_like(graph, model, x)


def test_batchnorm1d_over_channels_and_length():
    model = randomize_batchnorm(nn.Sequential(nn.BatchNorm1d(3), nn.ReLU(), nn.Flatten()))
    x = torch.randn(4, 3, 5)

    graph = from_module(model, x[:2])

    assert kinds(graph) == ["Input", "BatchNorm", "ReLU", "Flatten", "Output"]
    assert graph.shape("input") == (3, 5)
    assert_computes_like(graph, model, x)


class ResidualBlock(nn.Module):
    """ResNet style: in-place ReLU module used twice, ``out += x``, global average pooling."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.bn(self.conv(x))
        out += x
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, head: str):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True))
        self.block = ResidualBlock()
        self.pool = nn.AdaptiveAvgPool2d(1) if head == "adaptive" else None
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = self.block(self.stem(x))
        x = x.mean((2, 3)) if self.pool is None else self.pool(x).view(x.size(0), -1)
        return self.fc(x)


@pytest.mark.parametrize("head", ["mean", "adaptive"])
def test_inplace_ops_and_global_average_pooling(head):
    model = randomize_batchnorm(TinyResNet(head))
    x = torch.randn(4, 1, 8, 8)

    graph = from_module(model, x[:2])

    assert kinds(graph) == [
        "Input", "Conv2d", "ReLU", "Conv2d", "BatchNorm", "Add", "ReLU",
        "AvgPool2d", "Flatten", "Dense", "Output",
    ]
    assert graph.inputs("block_add") == ["block_bn", "stem_1"]
    assert graph.inputs("block_relu") == ["block_add"]
    assert_computes_like(graph, model, x)


@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")
def test_decomposed_program_gives_the_same_graph():
    """addmm with a transposed weight, convolution, _native_batch_norm_legit_no_training."""
    model = randomize_batchnorm(small_cnn())
    x = torch.randn(8, 1, 8, 8)
    program = torch.export.export(model, (x[:2],))

    plain = from_exported(program)
    decomposed = from_exported(program.run_decompositions())

    assert kinds(decomposed) == kinds(plain)
    assert_computes_like(decomposed, model, x)


def test_dynamic_batch_export():
    model = randomize_batchnorm(small_cnn())
    x = torch.randn(8, 1, 8, 8)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (x[:2],), dynamic_shapes=({0: batch},))

    graph = from_exported(program, source="dynamic")

    assert graph.metadata["source"] == "dynamic"
    assert_computes_like(graph, model, x)


@settings(max_examples=12, deadline=None)
@given(
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    bias=st.booleans(),
)
def test_conv2d_parameters_carry_over(stride, padding, dilation, groups, bias):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=stride, padding=padding, dilation=dilation,
                  groups=groups, bias=bias),
        nn.Flatten(),
    )
    x = torch.randn(3, 2, 9, 9)

    graph = from_module(model, x[:2])

    conv = graph.op("conv2d_0")
    assert (conv.stride, conv.padding, conv.dilation, conv.groups) == (
        (stride, stride), (padding, padding), (dilation, dilation), groups,
    )
    assert (conv.bias is None) == (not bias)
    assert_computes_like(graph, model, x)


def test_identity_like_ops_are_skipped():
    class Copies(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(x.clone().detach().contiguous()).to(torch.float32)

    model = Copies().eval()
    x = torch.randn(4, 8)

    graph = from_module(model, x[:2])

    assert kinds(graph) == ["Input", "Dense", "Output"]
    assert_computes_like(graph, model, x)


def test_from_module_restores_training_mode():
    model = small_cnn().train()
    model[1].eval()

    from_module(model, torch.randn(2, 1, 8, 8))

    assert model.training and model[0].training and not model[1].training


# -- unsupported models: every problem at once ------------------------------------------------


def test_unsupported_ops_are_all_listed_in_one_error():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveMaxPool2d(4), nn.Sigmoid(), nn.Flatten(),
        nn.Linear(64, 10),
    )

    with pytest.raises(UnsupportedModelError) as info:
        from_module(model, torch.randn(2, 1, 8, 8))

    error = info.value
    assert error.source == "Sequential"
    found = {(p.node, p.op) for p in error.problems}
    assert found == {
        ("adaptive_max_pool2d_1", "aten.adaptive_max_pool2d.default"),
        ("sigmoid_2", "aten.sigmoid.default"),
    }
    hints = {p.op: p.hint for p in error.problems}
    assert "AvgPool2d" in hints["aten.adaptive_max_pool2d.default"]
    assert "ReLU" in hints["aten.sigmoid.default"]
    assert "2 unsupported node(s)" in str(error)
    assert "\n" not in str(error)


class Awkward(nn.Module):
    """Problems found by the lowerings themselves, not by a missing table entry."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=2, ceil_mode=True)
        self.padded = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.bias = nn.Parameter(torch.ones(1))

    def forward(self, x):
        y = self.padded(self.pool(x)) + self.bias
        return y.reshape(y.shape[0], 3, -1)


def test_lowering_problems_are_collected():
    with pytest.raises(UnsupportedModelError) as info:
        from_module(Awkward(), torch.randn(2, 3, 8, 8))

    hints = {p.node: p.hint for p in info.value.problems}
    assert set(hints) == {"pool", "padded", "add", "reshape"}
    assert "ceil_mode" in hints["pool"]
    assert "count_include_pad" in hints["padded"]
    assert "constant" in hints["add"]
    assert "flatten" in hints["reshape"]


def test_harmless_pool_options_are_accepted():
    """ceil_mode where sizes divide evenly, count_include_pad without padding: no change."""
    model = nn.Sequential(nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False), nn.Flatten())
    x = torch.randn(3, 2, 8, 8)

    graph = from_module(model, x[:2])

    assert kinds(graph) == ["Input", "AvgPool2d", "Flatten", "Output"]
    assert_computes_like(graph, model, x)


def test_two_outputs_are_refused():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x), x

    with pytest.raises(UnsupportedModelError, match="return exactly one"):
        from_module(TwoHeads(), torch.randn(2, 4))


# -- files -------------------------------------------------------------------------------------


def test_load_model_reads_an_export_saved_as_model_pt(tmp_path):
    model = randomize_batchnorm(small_cnn())
    x = torch.randn(8, 1, 8, 8)
    path = tmp_path / "model.pt"
    torch.export.save(torch.export.export(model, (x[:2],)), path)

    graph = load_model(path)

    assert graph.metadata == {"source": "model.pt", "frontend": "torch"}
    assert_computes_like(graph, model, x)


@pytest.fixture(scope="module")
def saved_mlp(tmp_path_factory) -> Path:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    path = tmp_path_factory.mktemp("saved") / "mlp.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 4),)), path)
    return path


def test_torch_save_files_and_garbage_are_refused(tmp_path, saved_mlp):
    model = nn.Sequential(nn.Linear(4, 2))
    torch.save(model.state_dict(), tmp_path / "state.pt")
    (tmp_path / "garbage.pt2").write_bytes(b"\x00not a model\xff" * 50)
    (tmp_path / "truncated.pt2").write_bytes(saved_mlp.read_bytes()[:2000])

    for name in ("state.pt", "garbage.pt2", "truncated.pt2", "missing.pt2"):
        with pytest.raises(ModelLoadError) as info:
            load_model(tmp_path / name)
        message = str(info.value)
        assert name in message and "torch.export.save" in message
        assert "\n" not in message
    assert "torch.save file" in _refusal(tmp_path / "state.pt")


def _refusal(path: Path) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    return str(info.value)


class Marker:
    """An arbitrary class: a weights-only unpickler must refuse it."""


def _pickle_a_weight(name: str, data: bytes) -> bytes:
    if not name.endswith("_weights_config.json"):
        return data
    config = json.loads(data)
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    return json.dumps(config).encode()


def _object_as_sample_input(name: str, data: bytes) -> bytes:
    if not name.endswith("sample_inputs/model.pt"):
        return data
    buffer = io.BytesIO()
    torch.save(((Marker(),), {}), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (_pickle_a_weight, "pickled object"),
        (_object_as_sample_input, "other than plain tensors"),
        (None, "does not load: data/aotinductor/model/model.so"),
    ],
)
def test_archives_that_would_unpickle_or_load_code_are_refused(saved_mlp, tmp_path, tamper, reason):
    source = zipfile.ZipFile(saved_mlp)
    buffer = io.BytesIO()
    top = source.namelist()[0].split("/")[0]
    with zipfile.ZipFile(buffer, "w") as out:
        for info in source.infolist():
            data = source.read(info.filename)
            out.writestr(info, tamper(info.filename, data) if tamper else data)
        if tamper is None:
            out.writestr(f"{top}/data/aotinductor/model/model.so", b"\x7fELF")
    path = tmp_path / "tampered.pt2"
    path.write_bytes(buffer.getvalue())

    assert reason in _refusal(path)
    assert check_archive(saved_mlp.read_bytes()) is None


def test_errors_are_snncompile_errors():
    assert issubclass(ModelLoadError, SnnCompileError)
    assert issubclass(UnsupportedModelError, SnnCompileError)


# -- the bundled example ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "file, image, shape",
    [("digits_cnn.pt2", True, (1, 8, 8)), ("digits_mlp.pt2", False, (64,))],
)
def test_bundled_digits_models_are_accurate(file, image, shape, digits_image, digits_flat):
    data = digits_image if image else digits_flat

    graph = load_model(EXAMPLES / file)

    assert graph.shape("input") == shape
    logits = forward(graph, data.test.x)
    accuracy = np.mean(logits.argmax(1).numpy() == data.test.y)
    assert accuracy >= 0.95


class MutatedThroughAView(nn.Module):
    """A view taken before an in-place ReLU sees the mutation in eager mode."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 64, 10)

    def forward(self, x):
        y = self.conv(x)
        flat = y.view(y.shape[0], -1)
        y.relu_()
        return self.fc(flat)


class InplaceChain(nn.Module):
    """out += x, then relu_ on the result, then the mutated tensor read again by name."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 1, 3, padding=1)
        self.b = nn.Conv2d(1, 1, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        out = self.a(x)
        out += x
        out.relu_()
        return self.fc(torch.flatten(self.b(out) + out, 1))


def test_inplace_ops_are_walked_in_order_without_functionalizing(monkeypatch):
    """Elementwise in-place ops on unaliased tensors lower as their out-of-place twins, each
    mutated tensor reading the result afterwards; run_decompositions is not needed (it is slow)."""
    from torch.export import ExportedProgram

    from snncompile.frontends import torch as torch_frontend

    calls = []
    original = ExportedProgram.run_decompositions
    monkeypatch.setattr(ExportedProgram, "run_decompositions",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    for model in (randomize_batchnorm(TinyResNet("adaptive")), InplaceChain()):
        x = torch.randn(4, 1, 8, 8)
        program = torch.export.export(model.eval(), (x[:2],))
        assert torch_frontend._has_inplace_ops(program) and torch_frontend._inplace_in_walk_order(program)
        assert_computes_like(from_exported(program), model, x)
    assert not calls


def test_an_inplace_op_seen_through_a_view_is_functionalized_first():
    from snncompile.frontends import torch as torch_frontend

    model = MutatedThroughAView().eval()
    x = torch.randn(4, 1, 8, 8)
    program = torch.export.export(model, (x[:2],))
    assert torch_frontend._has_inplace_ops(program) and not torch_frontend._inplace_in_walk_order(program)
    assert_computes_like(from_exported(program), model, x)
