"""Tiny files that declare huge work are refused from what they declare, in under 10 s and under
1 GB of memory, each in a real process: an ONNX constant Loop of 10**12 iterations, a .npz that
inflates to 1.5 GiB, a .pt2 whose empty weight record declares 4 TB; and flags asking for the
same (--input-shape, --sweep-steps)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.security.helpers import MLP, ROOT, assert_refused, rewrite_pt2

PEAK_KB = 1 << 20  # 1 GiB


def _measured(args: list) -> tuple[int, float, int, str]:
    """(exit code, seconds, peak resident kB, stderr) of the CLI on ``args`` in its own process."""
    # the peak is the process's own VmHWM: ru_maxrss keeps the high-water mark of the forking
    # parent across exec (a pytest process holding 1.2 GB made every child report 1.2 GB)
    script = ("import sys, time\nfrom snncompile.cli import main\nt0 = time.perf_counter()\n"
              f"code = main({[str(a) for a in args]!r})\n"
              "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
              "print(code, time.perf_counter() - t0, hwm)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    code, seconds, peak = proc.stdout.split()[-3:]
    return int(code), float(seconds), int(peak), proc.stderr


def _loop_bomb(path, trips=10**12):
    body = helper.make_graph(
        [helper.make_node("Add", ["v_in", "one"], ["v_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    nodes = [
        helper.make_node("Constant", [], ["trips"], value=helper.make_tensor("t", TensorProto.INT64, [], [trips])),
        helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
        helper.make_node("Constant", [], ["v0"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("Loop", ["trips", "cond", "v0"], ["v_final"], body=body),
        helper.make_node("Add", ["x", "v_final"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _npz_bomb(path):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<f4", "fortran_order": False, "shape": (1536, 1, 512, 512)})
            chunk = bytes(1 << 24)
            for _ in range(96):
                member.write(chunk)
    return path


def _pt2_bomb(path):
    def huge(config):
        name = next(iter(config["config"]))
        config["config"][name]["tensor_meta"]["sizes"] = [{"as_int": 1 << 20}, {"as_int": 1 << 20}]
        return config
    return rewrite_pt2(MLP, path, edit_weights=huge, replace={"weights/weight_0": b""})


@pytest.mark.parametrize("kind", ["onnx-loop", "npz", "pt2-zeros", "input-shape", "sweep-steps"])
def test_bombs_are_refused_fast_and_small(tmp_path, kind):
    out = tmp_path / "out"
    base = ["--target", "nir", "-o", out]
    if kind == "onnx-loop":
        model = _loop_bomb(tmp_path / "loop.onnx")
        assert model.stat().st_size < 2_000
        args, fragment = ["inspect", model], "10000000000"
    elif kind == "npz":
        data = _npz_bomb(tmp_path / "bomb.npz")
        assert data.stat().st_size < 2_000_000
        args, fragment = [MLP, "--data", data, *base], "GiB"
    elif kind == "pt2-zeros":
        args, fragment = ["inspect", _pt2_bomb(tmp_path / "zeros.pt2")], "MiB"
    elif kind == "input-shape":
        args, fragment = ["inspect", MLP, "--input-shape", "1048576,1048576"], "values per sample"
    else:
        args, fragment = [MLP, "--sweep-steps", f"4,{10**12}", *base], "at most"
    code, seconds, peak_kb, err = _measured(args)
    assert_refused(code, err, None, fragment)
    assert seconds < 10 and peak_kb < PEAK_KB, (seconds, peak_kb)
    assert not out.exists()
    print(f"{kind}: refused in {seconds:.2f} s, peak {peak_kb / 1024:.0f} MiB")


def test_a_small_constant_loop_still_reaches_the_frontend(tmp_path):
    """The bound is on what is declared, not on the op: 3 iterations pass the check (and the
    frontend then reports the Loop as unsupported control flow)."""
    from snncompile.frontends.onnx_limits import check_limits

    check_limits(onnx.load(_loop_bomb(tmp_path / "small.onnx", trips=3)), "small.onnx")
