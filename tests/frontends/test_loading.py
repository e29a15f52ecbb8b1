"""Model loading by content (frontends.detect, frontends.torch_files): TorchScript, state_dict with
--arch, pickled modules only with --trust-pickle, and the malicious-pickle refusal."""

import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from snncompile.errors import ModelLoadError, UnsafeModelError
from snncompile.frontends.detect import Format, LoadOptions, load, sniff
from snncompile.sim import ann

ROOT = Path(__file__).resolve().parents[2]
CNN = ROOT / "examples" / "digits_cnn.pt2"


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 10)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = y + torch.relu(self.conv2(y))
        y = nn.functional.avg_pool2d(y, 2)
        return self.fc(y.flatten(1))


def residual():
    torch.manual_seed(0)
    model = Residual()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


class Marker:
    """A pickle payload that creates a file when unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_torchscript_gives_the_original_outputs(tmp_path, kind):
    model = residual()
    x = torch.rand(5, 1, 8, 8)
    module = torch.jit.script(model) if kind == "script" else torch.jit.trace(model, (x,))
    path = tmp_path / "model.bin"  # any name: the content decides
    torch.jit.save(module, path)
    assert sniff(path) is Format.TORCHSCRIPT
    with pytest.raises(UnsafeModelError, match="--trust-code"):
        load(path)  # TorchScript runs its own code when loaded
    graph = load(path, LoadOptions(trust_code=True))
    assert graph.shape(graph.input_names()[0]) == (1, 8, 8)
    kinds = [op.kind.value for _, op in graph.nodes()]
    assert kinds.count("Conv2d") == 2 and "Add" in kinds and "BatchNorm" in kinds
    expected = model(x).double()
    got = ann.forward(graph, x.numpy())
    assert torch.allclose(got, expected, atol=1e-5)


def test_state_dict_with_arch_from_a_file(tmp_path):
    model = residual()
    path = tmp_path / "weights.onnx"  # a misleading suffix
    torch.save(model.state_dict(), path)
    arch = tmp_path / "arch.py"
    arch.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_loading import Residual\n"
        "def build():\n    return Residual()\n"
    )
    assert sniff(path) is Format.TORCH_SAVE
    with pytest.raises(ModelLoadError, match="--arch"):
        load(path)
    graph = load(path, LoadOptions(arch=f"{arch}:build"))
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(ann.forward(graph, x.numpy()), model(x).double(), atol=1e-5)


def test_state_dict_with_arch_from_a_module_and_key_errors(tmp_path):
    path = tmp_path / "weights.pt"
    state = mlp().state_dict()
    torch.save({"state_dict": state}, path)  # the common checkpoint nesting
    graph = load(path, LoadOptions(arch="tests.frontends.test_loading:mlp"))
    assert graph.shape(graph.input_names()[0]) == (64,)
    bad = dict(state)
    bad["extra.weight"] = bad.pop("2.weight")
    torch.save(bad, path)
    with pytest.raises(ModelLoadError) as info:
        load(path, LoadOptions(arch="tests.frontends.test_loading:mlp"))
    message = str(info.value)
    assert "missing keys: 2.weight" in message and "unexpected keys: extra.weight" in message
    torch.save(residual().state_dict(), path)
    with pytest.raises(ModelLoadError, match="does not fit"):
        load(path, LoadOptions(arch="tests.frontends.test_loading:mlp"))
    for spec, fragment in (("nocolon", "expected package.module:factory"),
                           ("no_such_module_xyz:f", "cannot import"),
                           ("tests.frontends.test_loading:nothing", "no callable 'nothing'")):
        with pytest.raises(ModelLoadError, match=fragment):
            load(path, LoadOptions(arch=spec))


def test_pickled_module_needs_trust_pickle(tmp_path):
    model = mlp()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    with pytest.raises(UnsafeModelError, match="execute arbitrary code"):
        load(path)
    graph = load(path, LoadOptions(trust_pickle=True))
    x = torch.rand(4, 64)
    assert torch.allclose(ann.forward(graph, x.numpy()), model(x).double(), atol=1e-5)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_does_not_run_without_the_flag(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt2"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(Marker(marker), protocol=4))
    else:
        torch.save({"payload": Marker(marker)}, path)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "snncompile.cli", str(path), "-o", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snncompile: error: ")
    assert "execute arbitrary code" in lines[0] and "--trust-code" in lines[0]
    assert not marker.exists() and not out.exists()
    # with the flag the pickle really runs (which is why it needs one): the marker appears
    with pytest.raises(ModelLoadError):
        load(path, LoadOptions(trust_pickle=True))
    assert marker.exists()


def test_formats_sniffed_by_content(tmp_path):
    assert sniff(CNN) is Format.TORCH_EXPORT
    npz = tmp_path / "model.pt"
    with npz.open("wb") as f:
        np.savez(f, x=np.zeros((2, 3)))
    assert sniff(npz) is Format.NPZ
    with pytest.raises(ModelLoadError, match="holds data, not a model"):
        load(npz)
    text = tmp_path / "model.onnx.txt"
    text.write_text("hello")
    with pytest.raises(ModelLoadError, match="unrecognised format; expected a torch.export archive"):
        load(text)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty file"):
        load(empty)
    with pytest.raises(ModelLoadError, match="not a regular file"):
        load(tmp_path)


def _repack(raw: bytes, member_suffix: str, content: bytes) -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, content if info.filename.endswith(member_suffix) else src.read(info))
    return out.getvalue()


def test_torchscript_with_a_short_tensor_is_refused_not_a_crash(tmp_path):
    """Found by scripts/fuzz_loaders.py: torch.jit.load dies with SIGSEGV on a TorchScript archive
    whose tensor member is shorter than its pickle says. Run in a child process: a regression
    would kill the interpreter, not raise."""
    model = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10)).eval()
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 64)), buf)
    path = tmp_path / "short.pt"
    path.write_bytes(_repack(buf.getvalue(), "/data/0", b""))
    proc = subprocess.run([sys.executable, "-m", "snncompile.cli", str(path), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr[-500:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged TorchScript archive" in lines[0] and "/data/0 holds 0 bytes" in lines[0]
