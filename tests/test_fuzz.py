"""Fuzzed inputs through the command line: damaged, foreign and hostile model files, bad models,
absurd flag values and bad paths. Every case must end with one line on stderr starting
``snncompile: error:``, no traceback, a non-zero exit code, and an output folder that is either
absent or complete. (Randomly bit-flipped files may still be valid models; those alone may
succeed, and then the output must be complete.)

The CLI runs in-process (snncompile.cli.main with stdout and stderr captured) for speed, on a
4-sample data file, ``--steps 2``, ``--target nir`` (no Lava), so that the cases that get past
loading fail or finish fast; a few run as subprocesses to see the real process's stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from snncompile.cli import main

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "examples" / "digits_mlp.pt2"
CNN = ROOT / "examples" / "digits_cnn.pt2"
FAST = ["--target", "nir", "--steps", "2", "--calib-samples", "4"]


@dataclass
class Case:
    name: str
    args: list
    fragment: str = ""  # must appear in the error line
    may_succeed: bool = False  # only for random bit flips and renamed valid models
    must_succeed: bool = False
    outdir: Path | None = None
    extra: dict = field(default_factory=dict)


# --- seed models ---------------------------------------------------------------------------------


def _onnx_mlp(w1=None, w2=None, op="Relu") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.1, (16, 64)).astype(np.float32) if w1 is None else w1
    w2 = rng.normal(0, 0.1, (10, 16)).astype(np.float32) if w2 is None else w2
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(w1.shape[0], np.float32), "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.zeros(w2.shape[0], np.float32), "b2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
             helper.make_node(op, ["h"], ["r"], name="act"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1, name="fc2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w2.shape[0]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _nir_mlp(w1=None) -> nir.NIRGraph:
    rng = np.random.default_rng(1)
    w1 = rng.normal(0, 0.1, (16, 64)) if w1 is None else w1
    nodes = {
        "input": nir.Input(input_type={"input": np.array([64])}),
        "fc1": nir.Affine(weight=w1, bias=np.zeros(w1.shape[0])),
        "if1": nir.IF(r=np.ones(16), v_threshold=np.ones(16), v_reset=np.zeros(16)),
        "fc2": nir.Affine(weight=rng.normal(0, 0.1, (10, 16)), bias=np.zeros(10)),
        "out": nir.I(r=np.ones(10)),
        "output": nir.Output(output_type={"output": np.array([10])}),
    }
    edges = [("input", "fc1"), ("fc1", "if1"), ("if1", "fc2"), ("fc2", "out"), ("out", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0}, type_check=False)


def _export(model: nn.Module, path: Path, shape=(1, 64)) -> Path:
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(shape),)), path)
    return path


def _mlp(hidden=16, value=None) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    if value is not None:
        with torch.no_grad():
            model[0].weight[0, 0] = value
    return model


# --- the corpus ----------------------------------------------------------------------------------


def build_corpus(tmp: Path) -> list[Case]:
    seeds_dir = tmp / "seeds"
    seeds_dir.mkdir()
    data = tmp / "data.npz"
    from snncompile.data import digits

    ds = digits(image=True)
    np.savez(data, x=ds.test.x[:4], y=ds.test.y[:4], x_train=ds.train.x[:4], y_train=ds.train.y[:4])
    onnx_path = seeds_dir / "mlp.onnx"
    onnx.save(_onnx_mlp(), onnx_path)
    nir_path = seeds_dir / "mlp.nir"
    nir.write(nir_path, _nir_mlp())
    seeds = {"mlp.pt2": MLP.read_bytes(), "cnn.pt2": CNN.read_bytes(),
             "mlp.onnx": onnx_path.read_bytes(), "mlp.nir": nir_path.read_bytes()}
    base = ["--data", str(data), *FAST]
    cases: list[Case] = []
    counter = iter(range(10**6))

    def model_case(name, content: bytes | None = None, path: Path | None = None, extra_args=(), **kw):
        if path is None:
            path = tmp / f"m{next(counter)}_{name.split('/')[0]}"
            path.write_bytes(content)
        cases.append(Case(name, [str(path), *base, *extra_args], **kw))

    # truncations at several offsets, and seeded single-byte flips, of every seed
    rng = random.Random(8)
    for seed, raw in seeds.items():
        for frac in (0.0, 0.05, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.95):
            model_case(f"truncate/{seed}@{frac}", raw[: int(len(raw) * frac)])
        model_case(f"truncate/{seed}@-1", raw[:-1])
        model_case(f"truncate/{seed}@-22", raw[:-22])  # a zip's end-of-directory record
        for i in range(8):
            pos = rng.randrange(len(raw)) if i else 0
            flipped = bytearray(raw)
            flipped[pos] ^= 1 << rng.randrange(8)
            model_case(f"bitflip/{seed}@{pos}", bytes(flipped), may_succeed=True)
        # renamed: the content decides, so a valid model under a wrong name still compiles
        model_case(f"renamed/{seed}", raw, must_succeed=True)
    # wrong-type files
    npz = tmp / "some.npz"
    np.savez(npz, x=np.zeros((2, 64)))
    wrong = {
        "empty": b"", "text": b"hello world\n", "json": json.dumps({"model": 1}).encode(),
        "png": b"\x89PNG\r\n\x1a\n" + bytes(64), "random": bytes(random.Random(3).randrange(256) for _ in range(4096)),
        "zip-of-text": _zip({"a.txt": b"x"}), "npz": npz.read_bytes(), "hdf5-not-nir": _hdf5(tmp),
        "pickle-int": b"\x80\x04K\x05.", "protobuf-garbage": b"\x08\x07\x12\x03abc\x3a\x02\x0a\x00",
        "elf": b"\x7fELF" + bytes(60),
    }
    for name, content in wrong.items():
        model_case(f"wrongtype/{name}", content)
    # models that load but are bad
    model_case("model/nan-weight", path=_export(_mlp(value=float("nan")), tmp / "nan.pt2"), fragment="non-finite")
    model_case("model/inf-weight", path=_export(_mlp(value=float("inf")), tmp / "inf.pt2"), fragment="non-finite")
    model_case("model/zero-size", path=_export(_mlp(hidden=0), tmp / "zero.pt2"))
    model_case("model/unsupported-ops", path=_export(
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.Sigmoid(), nn.Flatten(), nn.Linear(36, 10)),
        tmp / "unsup.pt2", (1, 1, 8, 8)), fragment="unsupported")
    model_case("model/shape-vs-data", path=_export(nn.Sequential(nn.Linear(30, 10)), tmp / "in30.pt2", (1, 30)),
               fragment="(30,)")
    sd = tmp / "state.pt"
    torch.save(_mlp().state_dict(), sd)
    model_case("model/state-dict-no-arch", path=sd, fragment="--arch")
    model_case("model/state-dict-wrong-arch", path=sd, extra_args=["--arch", "tests.test_fuzz:_cnn_arch"],
               fragment="does not fit")
    model_case("model/state-dict-bad-arch", path=sd, extra_args=["--arch", "no_such_pkg_q:f"], fragment="cannot import")
    pickled = tmp / "pickled.pt"
    torch.save(_mlp(), pickled)
    model_case("model/pickled-module", path=pickled, fragment="--trust-code")
    ts = tmp / "sigmoid.ts"
    torch.jit.save(torch.jit.trace(nn.Sequential(nn.Linear(64, 10), nn.Sigmoid()), torch.zeros(1, 64)), ts)
    model_case("model/torchscript-untrusted", path=ts, fragment="--trust-code")
    model_case("model/torchscript-unsupported", path=ts, extra_args=["--trust-code"], fragment="sigmoid")
    for name, proto in {
        "onnx-nan": _onnx_mlp(w1=np.full((16, 64), np.nan, np.float32)),
        "onnx-mismatch": _onnx_mlp(w2=np.ones((10, 12), np.float32)),
        "onnx-sigmoid": _onnx_mlp(op="Sigmoid"),
        "onnx-zero": _onnx_mlp(w1=np.ones((0, 64), np.float32), w2=np.ones((10, 0), np.float32)),
    }.items():
        path = tmp / f"{name}.onnx"
        onnx.save(proto, path)
        model_case(f"model/{name}", path=path)
    for name, w1 in {"nir-mismatch": np.ones((16, 60)), "nir-nan": np.full((16, 64), np.nan),
                     "nir-zero": np.ones((0, 64))}.items():
        path = tmp / f"{name}.nir"
        nir.write(path, _nir_mlp(w1=w1))
        model_case(f"model/{name}", path=path)
    # flag values
    flags = [
        ["--steps", "0"], ["--steps", "-1"], ["--steps", str(10**9)], ["--steps", "abc"], ["--steps", "1e3"],
        ["--samples", "-1"], ["--samples", "0"], ["--samples", str(10**9)], ["--calib-samples", "0"],
        ["--chips", "0"], ["--chips", str(10**9)], ["--target", "gpu"], ["--threshold", "min"],
        ["--calibrate", "heavy"], ["--percentile", "nan"], ["--percentile", "-5"], ["--input-shape", "0,8"],
        ["--input-shape", "a,b"], ["--arch", "nocolon"], ["--bogus-flag"], ["--data", str(tmp / "none.npz")],
        ["--data", str(tmp / "seeds")], ["--device", "tpu"],
    ]
    for extra in flags:
        args = [str(CNN), "--data", str(data), *FAST]
        if extra[0] in ("--steps", "--data", "--target"):
            args = [a for i, a in enumerate(args) if a != extra[0] and (i == 0 or args[i - 1] != extra[0])]
        cases.append(Case(f"flag/{' '.join(extra)[:40]}", args + extra))
    cases.append(Case("flag/no-model", ["-o", str(tmp / "x")]))
    # paths
    afile = tmp / "a_file"
    afile.write_text("x")
    cases.append(Case("path/missing-model", [str(tmp / "nope.pt2"), *base], fragment="not found"))
    cases.append(Case("path/model-is-dir", [str(seeds_dir), *base], fragment="not a regular file"))
    cases.append(Case("path/model-under-file", [str(afile / "m.pt2"), *base]))
    cases.append(Case("path/outdir-is-file", [str(MLP), *base], outdir=afile, fragment="existing file"))
    cases.append(Case("path/outdir-under-file", [str(MLP), *base], outdir=afile / "out", fragment="cannot write"))
    cases.append(Case("path/outdir-in-proc", [str(MLP), *base], outdir=Path("/proc/snncompile_out"),
                      fragment="cannot write"))
    return cases


def _cnn_arch():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))


def _zip(members: dict) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    return buf.getvalue()


def _hdf5(tmp: Path) -> bytes:
    import h5py

    path = tmp / "plain.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(4)
    return path.read_bytes()


# --- running and judging -------------------------------------------------------------------------


def run_case(case: Case, tmp: Path, index: int) -> tuple[int, str, str, Path]:
    outdir = case.outdir or tmp / "outs" / f"o{index}"
    args = list(case.args)
    if "-o" not in args:
        args += ["-o", str(outdir)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue(), outdir


def judge(case: Case, code: int, err: str, outdir: Path, fresh: bool) -> str | None:
    """Why the case failed the oracle, or None."""
    lines = err.strip().splitlines()
    if "Traceback" in err:
        return "traceback on stderr"
    complete = outdir.is_dir() and {"model.nir", "report.json", "report.md"} <= {p.name for p in outdir.iterdir()}
    leftovers = list(outdir.parent.glob(".snncompile-*")) if outdir.parent.is_dir() else []
    if leftovers:
        return f"staging folder left behind: {leftovers}"
    if code == 0:
        if not (case.may_succeed or case.must_succeed):
            return "exit code 0"
        return None if complete else "exit 0 without complete outputs"
    if case.must_succeed:
        return f"exit {code}: {err.strip()}"
    if len(lines) != 1 or not lines[0].startswith("snncompile: error: "):
        return f"stderr is not one error line: {err!r}"
    if case.fragment and case.fragment not in lines[0]:
        return f"'{case.fragment}' not in {lines[0]!r}"
    if fresh and outdir.exists() and not complete:
        return "partial output folder"
    return None


def test_fuzz_corpus(tmp_path):
    cases = build_corpus(tmp_path)
    assert len(cases) >= 100
    (tmp_path / "outs").mkdir()
    failures, outcomes = [], {"error": 0, "ok": 0}
    for index, case in enumerate(cases):
        fresh = case.outdir is None
        try:
            code, _out, err, outdir = run_case(case, tmp_path, index)
        except Exception as exc:  # an unexpected exception is a bug: list it with the others
            failures.append(f"{case.name}: raised {type(exc).__name__}: {exc}"[:400])
            continue
        outcomes["ok" if code == 0 else "error"] += 1
        why = judge(case, code, err, outdir, fresh)
        if why:
            failures.append(f"{case.name}: {why}")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)
    assert outcomes["error"] >= 100, outcomes


@pytest.mark.parametrize("args, fragment", [
    (["{tmp}/trunc.pt2"], "torch.export"),
    (["{cnn}", "--steps", str(10**9)], "at most 10000"),
    (["{cnn}", "--json", "--samples", "-1"], "positive integer"),
])
def test_fuzz_cases_in_a_real_process(tmp_path, args, fragment):
    (tmp_path / "trunc.pt2").write_bytes(CNN.read_bytes()[:5000])
    args = [a.format(tmp=tmp_path, cnn=CNN) for a in args]
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "snncompile.cli", *args, "-o", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snncompile: error: ") and fragment in lines[0], proc.stderr
    assert not out.exists()
    if "--json" in args:
        assert json.loads(proc.stdout) == {"error": lines[0][len("snncompile: error: "):], "exit_code": 2}
