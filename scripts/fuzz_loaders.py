"""Coverage-guided fuzzing of the model loaders (atheris / libFuzzer), for a bounded time.

    pip install atheris          # not part of scripts/install.sh: only this script needs it
    .venv/bin/python scripts/fuzz_loaders.py [-max_total_time=120] [CORPUS_DIR ...]

Each input is either raw bytes or, steered by its first bytes, a seed model mutated inside its
container (a member of a zip re-packed with valid checksums; a slice of an HDF5 or protobuf
file), so that mutations reach the loaders behind zipfile's CRC check. It is written to a file
and given to ``snncompile.frontends.detect.load`` (format told by content: torch.export,
TorchScript, torch.save, ONNX, NIR). A SnnCompileError is the expected answer to a bad file; any
other exception is a crash, which libFuzzer reports with the input that caused it (saved as
``crash-*``); so is a dead process (a segmentation fault in native code). Without a corpus
directory the script seeds one with the bundled examples, an ONNX and a NIR model, a TorchScript
archive and a state_dict. Default time: 60 s. Not run by the test suite (tests/test_fuzz.py holds
the fixed corpus).
"""

from __future__ import annotations

import io
import logging
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["snncompile"]):
    from snncompile.errors import SnnCompileError
    from snncompile.frontends.detect import LoadOptions, load

WORK = Path(tempfile.mkdtemp(prefix="snncompile-fuzz-"))
MODEL = WORK / "model.bin"


def seed_corpus(folder: Path) -> None:
    """Seed inputs, one per format."""
    import nir
    import numpy as np
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("digits_mlp.pt2", "digits_cnn.pt2"):
        (folder / name).write_bytes((ROOT / "examples" / name).read_bytes())
    w = np.full((10, 64), 0.01, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "mlp.onnx")
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "fc": nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3)),
             "if": nir.IF(r=np.ones(3), v_threshold=np.ones(3), v_reset=np.zeros(3)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    nir.write(folder / "mlp.nir", nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "if"), ("if", "output")]))
    model = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, torch.zeros(1, 64)), folder / "mlp.ts")
    torch.save(model.state_dict(), folder / "mlp_state.pt")


SEEDS: list[bytes] = []  # filled in main(): the seed models, for the structured mutations


def structured(data: bytes) -> bytes:
    """Raw bytes (mode 0), or a seed model mutated past its container: a zip archive re-packed
    with one member replaced, truncated or overwritten (valid CRCs, so the loaders see the
    damage, not zipfile), or an HDF5 / protobuf seed with a slice overwritten."""
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0 or not SEEDS:
        return fdp.ConsumeBytes(fdp.remaining_bytes())
    seed = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)]
    if mode == 1 and zipfile.is_zipfile(io.BytesIO(seed)):
        with zipfile.ZipFile(io.BytesIO(seed)) as archive:
            members = [(info.filename, archive.read(info)) for info in archive.infolist()]
        index = fdp.ConsumeIntInRange(0, len(members) - 1)
        name, content = members[index]
        members[index] = (name, _mutate(content, fdp))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for name, content in members:
                archive.writestr(name, content)
        return out.getvalue()
    return _mutate(seed, fdp)


def _mutate(content: bytes, fdp) -> bytes:
    how = fdp.ConsumeIntInRange(0, 2)
    pos = fdp.ConsumeIntInRange(0, len(content))
    if how == 0:
        return fdp.ConsumeBytes(fdp.remaining_bytes())
    if how == 1:
        return content[:pos]
    patch = fdp.ConsumeBytes(fdp.remaining_bytes())
    return content[:pos] + patch + content[pos + len(patch):]


def test_one_input(data: bytes) -> None:
    MODEL.write_bytes(structured(data))
    try:
        load(MODEL, LoadOptions())
    except SnnCompileError:
        pass  # the expected answer to a bad file


def main() -> None:
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    args = list(sys.argv)
    if not any(a.startswith("-max_total_time") for a in args):
        args.append("-max_total_time=60")
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = WORK / "corpus"
        seed_corpus(corpus)
        args.append(str(corpus))
    seeds = WORK / "seeds"
    seed_corpus(seeds)
    SEEDS.extend(p.read_bytes() for p in sorted(seeds.iterdir()))
    args.append("-rss_limit_mb=8192")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
